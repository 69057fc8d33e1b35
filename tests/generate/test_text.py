import pytest

from camelid.errors import InputError
from camelid.formats import load
from camelid.generate import SamplingParams, TextStream, generate
from camelid.tokenizer import load_tokenizer


def test_stream_holds_back_partial_stop_strings(tokenizer_path):
    tok = load_tokenizer(tokenizer_path)
    prompt = tok.encode("Hello")
    target = tok.encode("world. The END is near", bos=False)
    stream = TextStream(tok, prompt, stop=["END"])
    shown = ""
    for k in range(1, len(target) + 1):
        shown += stream.update(target[:k])
        assert "E" not in shown or "END" not in shown
        if stream.stopped:
            break
    assert stream.stopped and shown == " world. The " and stream.text == " world. The "


def test_stream_keeps_leading_space_and_multibyte_characters(tokenizer_path):
    tok = load_tokenizer(tokenizer_path)
    ids = tok.encode("猫 and 🦙 llama", bos=False)  # byte-fallback pieces arrive one byte at a time
    stream = TextStream(tok, tok.encode("A"), stop=[])
    shown = "".join(stream.update(ids[:k]) for k in range(1, len(ids) + 1))
    assert shown == " 猫 and 🦙 llama"
    assert "\ufffd" not in shown


def test_batched_text_generation_and_streaming(debug_checkpoint):
    loaded = load(debug_checkpoint)
    seen: dict[int, str] = {}
    results, stats = generate(
        loaded.model,
        loaded.tokenizer,
        ["def f(x):", "Hello world", "12"],
        max_new_tokens=8,
        params=SamplingParams(temperature=0),
        on_text=lambda row, d: seen.__setitem__(row, seen.get(row, "") + d),
    )
    assert len(results) == 3
    for b, r in enumerate(results):
        assert r.prompt_ids[0] == loaded.tokenizer.bos_id
        assert len(r.ids) == len(r.logprobs) <= 8
        assert seen.get(b, "") == r.text
    # each row equals generating that prompt alone
    alone, _ = generate(
        loaded.model, loaded.tokenizer, ["Hello world"], max_new_tokens=8, params=SamplingParams(temperature=0)
    )
    assert alone[0].ids == results[1].ids


def test_long_prompts_keep_their_last_tokens_and_bos_when_asked(debug_checkpoint):
    loaded = load(debug_checkpoint)
    tok, ctx = loaded.tokenizer, loaded.model.args.max_seq_len
    prompt = "for i in range(10):\n    print(i)\n" * 200
    assert len(tok.encode(prompt)) > ctx
    with pytest.raises(InputError, match="too long"):
        generate(loaded.model, tok, [prompt], max_new_tokens=4)
    (r,), _ = generate(loaded.model, tok, [prompt], max_new_tokens=4, max_prompt_tokens=ctx - 4)
    ids = tok.encode(prompt)
    assert r.prompt_ids == [tok.bos_id] + ids[len(ids) - (ctx - 5) :]
