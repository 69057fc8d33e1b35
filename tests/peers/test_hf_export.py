"""transformers on camelid's Hugging Face exports treats them as the same model: AutoTokenizer gives camelid's
ids, `pipeline("text-generation")` camelid's greedy text, `apply_chat_template(tokenize=True)` camelid's chat
ids (ChatML, Llama 2 and Llama 3 templates)."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from camelid.formats import read, write  # noqa: E402
from camelid.formats.release import Release  # noqa: E402
from camelid.generate import SamplingParams, generate  # noqa: E402
from camelid.generate.chat import chat_ids  # noqa: E402
from camelid.model import ModelArgs, build_model  # noqa: E402
from tests.peers.texts import mixed_texts  # noqa: E402

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, in 2023,"]
CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "You answer in one word."},
        {"role": "user", "content": "Capital of Italy? 🇮🇹"},
        {"role": "assistant", "content": "Rome."},
        {"role": "user", "content": "And of Japan (日本)?"},
    ],
]
# Llama 2 chat's template as its tokenizer_config.json ships it (system prompt folded into the first turn)
LLAMA2_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)


def their_chat_ids(tok, messages):
    ids = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def check_export(release: Release, hf_dir, texts, prompts=PROMPTS):
    theirs_tok = transformers.AutoTokenizer.from_pretrained(str(hf_dir))
    same = sum(release.tokenizer.encode(t, special=True) == theirs_tok(t)["input_ids"] for t in texts)
    for t in texts:
        assert release.tokenizer.encode(t, special=True) == theirs_tok(t)["input_ids"], repr(t[:80])
    model = transformers.AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32).eval()
    pipe = transformers.pipeline("text-generation", model=model, tokenizer=theirs_tok)
    ours = release.build_model()
    for p in prompts:
        results, _ = generate(ours, release.tokenizer, [p], max_new_tokens=16, params=SamplingParams(temperature=0))
        (mine,) = results
        theirs_ids = pipe(p, max_new_tokens=16, do_sample=False, return_tensors=True)[0]["generated_token_ids"]
        assert list(theirs_ids) == mine.prompt_ids + mine.ids
        assert theirs_tok.decode(theirs_ids, skip_special_tokens=True) == p + mine.text
        theirs = pipe(p, max_new_tokens=16, do_sample=False)[0]["generated_text"]
        if not hasattr(release.tokenizer, "model"):  # byte-level BPE: the pipeline's text is camelid's text
            assert theirs == p + mine.text, (theirs, mine.text)
        else:  # transformers 5 decodes the new tokens alone, and a SentencePiece decoder drops their first space
            assert theirs == p + mine.text.removeprefix(" "), (theirs, mine.text)
    for messages in CONVERSATIONS:
        if release.chat_template:
            assert their_chat_ids(theirs_tok, messages) == chat_ids(release.tokenizer, release.chat_template, messages)
    return same


def test_embedded_model(tmp_path):
    release = read("smollm2-135m")
    hf = write(release, tmp_path / "hf", "hf")
    texts = mixed_texts()
    same = check_export(release, hf, texts)
    print(f"SmolLM2 HF export: AutoTokenizer ids equal camelid's on {same}/{len(texts)} texts; pipeline greedy text "
          f"equal on {len(PROMPTS)} prompts; ChatML chat ids equal on {len(CONVERSATIONS)} conversations")  # fmt: skip


def test_sentencepiece_model_with_llama2_template(tokenizer_path, tmp_path):
    """A SentencePiece BPE trained the LLaMA way (as the quickstart trains it), a random model, Llama 2's template."""
    from camelid.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer_path)
    args = ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=tok.vocab_size, multiple_of=32)
    model = build_model(args, seed=1)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(8)  # peaked distributions: greedy text that depends on every weight
    release = Release(args, model.state_dict(), tok, LLAMA2_TEMPLATE)
    hf = write(release, tmp_path / "hf", "hf")
    texts = mixed_texts() + ["<s>[INST] Hi [/INST] Hello </s>"]
    same = check_export(release, hf, texts)
    print(f"SentencePiece HF export: AutoTokenizer ids equal camelid's on {same}/{len(texts)} texts; Llama 2 chat "
          "ids equal")  # fmt: skip


def test_llama3_template_and_vocabulary(llama_cpp_src, tmp_path):
    """Llama 3's own byte-level vocabulary (llama.cpp's ggml-vocab-llama-bpe.gguf) and Llama 3.1's template."""
    from camelid.formats.gguf_format import _reader, read_tokenizer

    vocab = llama_cpp_src / "models" / "ggml-vocab-llama-bpe.gguf"
    tok = read_tokenizer(_reader(vocab), vocab)
    template = (llama_cpp_src / "models" / "templates" / "meta-llama-Llama-3.1-8B-Instruct.jinja").read_text()
    args = ModelArgs(dim=32, n_layers=1, n_heads=2, vocab_size=tok.vocab_size, multiple_of=32, tie_embeddings=True)
    state = build_model(args, seed=0).state_dict()
    state.pop("output.weight")
    release = Release(args, state, tok, template)
    hf = write(release, tmp_path / "hf", "hf")
    theirs_tok = transformers.AutoTokenizer.from_pretrained(str(hf))
    for messages in CONVERSATIONS:
        want = their_chat_ids(theirs_tok, messages)
        assert want[0] == tok.bos_id and want.count(tok.bos_id) == 1  # one BOS: the template's
        assert chat_ids(tok, template, messages) == want
