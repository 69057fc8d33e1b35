"""An HF `tokenizer.json` read by camelid gives the ids `transformers.AutoTokenizer` gives."""

import json
import random

import pytest

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from camelid.tokenizer.wrappers import HFTokenizer  # noqa: E402


@pytest.fixture(scope="module")
def hf_tokenizer_dir(corpus, tmp_path_factory):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1500,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train([str(corpus)], trainer)
    out = tmp_path_factory.mktemp("hftok")
    tok.save(str(out / "tokenizer.json"))
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>",
        "add_bos_token": False,
        "model_max_length": 2048,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(cfg))
    return out


def test_ids_equal_auto_tokenizer(hf_tokenizer_dir, corpus):
    ours = HFTokenizer(hf_tokenizer_dir / "tokenizer.json")
    theirs = transformers.AutoTokenizer.from_pretrained(str(hf_tokenizer_dir))
    text = corpus.read_text(encoding="utf-8")
    rng = random.Random(0)
    spans = [text[i : i + rng.randrange(1, 300)] for i in (rng.randrange(len(text)) for _ in range(500))]
    spans += ["<|im_start|>user\nHi 🦙 <|im_end|>", "東京 2024", "  spaces  \n\n"]
    for s in spans:
        assert ours.encode(s) == theirs.encode(s, add_special_tokens=True), s
        assert ours.decode(ours.encode(s)) == theirs.decode(theirs.encode(s), skip_special_tokens=True)
    assert ours.bos_id == theirs.bos_token_id and ours.eos_id == theirs.eos_token_id


def test_byte_level_tokenizer_json_becomes_camelids_own(hf_tokenizer_dir, corpus):
    """A byte-level BPE tokenizer.json is read into camelid's own tokenizer (which GGUF can store), same ids."""
    from camelid.tokenizer.bpe import ByteLevelBPETokenizer
    from camelid.tokenizer.files import read_dir

    ours = read_dir(hf_tokenizer_dir)
    assert isinstance(ours, ByteLevelBPETokenizer) and ours.pre == "gpt2"
    theirs = transformers.AutoTokenizer.from_pretrained(str(hf_tokenizer_dir))
    text = corpus.read_text(encoding="utf-8")
    rng = random.Random(1)
    spans = [text[i : i + rng.randrange(1, 300)] for i in (rng.randrange(len(text)) for _ in range(300))]
    for s in spans + ["<|im_start|>user\nHi 🦙 <|im_end|>"]:
        assert ours.encode(s) == theirs.encode(s, add_special_tokens=True), s
    assert ours.bos_id == theirs.bos_token_id and ours.eos_id == theirs.eos_token_id
