import math

import pytest
import torch

from camelid.eval.lm import Evaluator, perplexity
from camelid.formats import load
from camelid.generate import score_ids


@pytest.fixture(scope="module")
def ev(debug_checkpoint):
    m = load(debug_checkpoint)
    return Evaluator(m.model, m.tokenizer, batch_size=3)


def test_loglikelihood_matches_scoring_the_sequence(ev):
    reqs = [("The cat sat on the", " mat"), ("def f(x):\n   ", " return x"), ("", "Hello world")]
    out = ev.loglikelihood(reqs)
    for (ctx, cont), (lp, greedy) in zip(reqs, out):
        c, x = ev.encode_pair(ctx, cont)
        ref = score_ids(ev.model, c + x)[len(c) - 1 :]
        assert lp == pytest.approx(sum(ref), abs=1e-4)
        assert isinstance(greedy, bool)
    # the trailing space of a context moves to the continuation, as lm-eval does
    assert ev.encode_pair("a ", "b") == ev.encode_pair("a", " b")


def test_batching_does_not_change_scores(ev, debug_checkpoint):
    reqs = [("x" * n, " y") for n in (1, 5, 40, 3, 17)]
    single = Evaluator(ev.model, ev.tokenizer, batch_size=1).loglikelihood(reqs)
    batched = ev.loglikelihood(reqs)
    assert [a for a, _ in single] == pytest.approx([b for b, _ in batched], abs=1e-4)


def test_rolling_loglikelihood_windows(ev):
    text = "for i in range(10):\n    print(i * i)\n" * 30  # longer than the 256-token context
    short = "import os\nprint(os.getcwd())\n"
    ids = ev.tokenizer.encode(short)
    assert ev.loglikelihood_rolling([short])[0] == pytest.approx(sum(score_ids(ev.model, ids)), abs=1e-4)
    n = len(ev.tokenizer.encode(text, bos=False))
    assert n > 256
    small = Evaluator(ev.model, ev.tokenizer, max_length=64)
    full = ev.loglikelihood_rolling([text])[0]
    windowed = small.loglikelihood_rolling([text])[0]
    assert math.isfinite(windowed) and windowed != full  # less context per token, another number
    r = perplexity(ev, text)
    assert r["tokens"] == n and r["perplexity"] == pytest.approx(math.exp(-full / n))
    assert r["bits_per_byte"] == pytest.approx(-full / math.log(2) / len(text.encode()))
    assert torch.isfinite(torch.tensor(r["bits_per_byte"]))
