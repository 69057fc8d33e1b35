import base64

import pytest

from camelid.tokenizer.wrappers import Llama3Tokenizer, is_tiktoken_file


@pytest.fixture
def tiktoken_file(tmp_path):
    """A small tiktoken-style BPE file in Llama 3's layout: base64 token, space, rank."""
    tokens = [bytes([b]) for b in range(256)] + [b"th", b"the", b" the", b"in", b"ing", b" l", b"ll", b"ama"]
    path = tmp_path / "tokenizer.model"
    path.write_text("".join(f"{base64.b64encode(t).decode()} {i}\n" for i, t in enumerate(tokens)))
    return path


def test_llama3_tokenizer_layout(tiktoken_file):
    assert is_tiktoken_file(tiktoken_file)
    tok = Llama3Tokenizer(tiktoken_file)
    n = 264
    assert tok.vocab_size == n + 256 and tok.bos_id == n and tok.eos_id == n + 1
    ids = tok.encode("the thing llama")
    assert ids[0] == tok.bos_id and tok.decode(ids) == "the thing llama"
    assert 257 in ids  # "the" merged
    chat = "<|start_header_id|>user<|end_header_id|>hi<|eot_id|>"
    ids = tok.encode(chat, bos=False)
    assert ids[0] == n + 6 and ids[-1] == n + 9 and tok.stop_ids >= {n + 1, n + 9}


def test_sentencepiece_file_is_not_tiktoken(tokenizer_path):
    assert not is_tiktoken_file(tokenizer_path)
