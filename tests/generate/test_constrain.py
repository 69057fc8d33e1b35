"""Structured output on the scheduler: a grammar's mask decides what a row may sample, whatever the model."""

import json

import jsonschema
import pytest
import torch

from camelid.generate import GREEDY, SamplingParams, generate_ids
from camelid.generate.constrain import Constraint, GrammarError, json_grammar, token_bytes
from camelid.generate.scheduler import Request, Scheduler
from camelid.model import build_model, preset
from camelid.tokenizer import load_tokenizer

SCHEMA = {
    "type": "object",
    "properties": {"colour": {"enum": ["red", "green", "blue"]}, "n": {"type": "integer", "minimum": 1, "maximum": 9}},
    "required": ["colour", "n"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def tok(tokenizer_path):
    return load_tokenizer(tokenizer_path)


@pytest.fixture(scope="module")
def model(tok):
    return build_model(preset("debug").replace(vocab_size=tok.vocab_size), seed=3).eval()


def test_token_bytes_spell_the_decoded_text(tok):
    text = "def f(x):\n    return x ** 2  # 日本語, tabs\tand émigré"
    ids = tok.encode(text, bos=False)
    table = token_bytes(tok)
    assert b"".join(table[i] for i in ids).decode().removeprefix(" ") == tok.decode(ids) == text
    assert table[tok.eos_id].startswith(b"\xff") and table[tok.bos_id].startswith(b"\xff")


def test_a_random_model_writes_json_matching_the_schema_beside_a_free_row(model, tok):
    """A random model never writes this JSON by chance; under the grammar every sampled row does, and an
    unconstrained row in the same batch gets what it gets alone."""
    prompt = tok.encode("fill in the form:")
    free_alone = generate_ids(model, [prompt], 12, GREEDY)[0][0].ids
    s = Scheduler(model, slots=4, context=128)
    try:
        grammar = json_grammar(SCHEMA)
        constrained = [
            Request(
                prompt,
                60,
                SamplingParams(temperature=1.0),
                seed=i,
                stop_ids=frozenset(tok.stop_ids),
                constraint=Constraint(tok, grammar, tok.stop_ids, tok.vocab_size),
            )  # fmt: skip
            for i in range(3)
        ]
        jobs = s.submit(*constrained, Request(prompt, 12, GREEDY))
        outs = [j.result(timeout=120) for j in jobs]
    finally:
        s.close()
    for out in outs[:3]:
        text = tok.decode(out.ids)
        jsonschema.validate(json.loads(text), SCHEMA)
        assert out.finish_reason == "stop", text
    assert outs[3].ids == free_alone


def test_schemas_that_do_not_compile_are_one_line_errors(tok):
    with pytest.raises(GrammarError, match="nonsense"):
        Constraint(tok, json_grammar({"type": "nonsense"}), tok.stop_ids, tok.vocab_size)
    with pytest.raises(GrammarError, match="must be a JSON object"):
        json_grammar([1, 2])


def test_the_mask_allows_only_what_can_come_next(tok):
    c = Constraint(tok, json_grammar({"enum": ["yes", "no"]}), tok.stop_ids, tok.vocab_size + 6)
    allowed = c.allowed()
    assert allowed.shape == (tok.vocab_size + 6,) and not allowed[tok.vocab_size :].any()
    firsts = {token_bytes(tok)[i] for i in torch.nonzero(allowed)[:, 0].tolist()}
    assert firsts and all(b'"yes"'.startswith(f) or b'"no"'.startswith(f) for f in firsts), firsts
