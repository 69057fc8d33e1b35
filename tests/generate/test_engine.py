import pytest
import torch

from camelid.errors import InputError
from camelid.generate import SamplingParams, generate_ids, sample, score_ids
from camelid.generate.engine import attention_mask
from camelid.model import build_model, preset


@pytest.fixture(scope="module")
def model():
    m = build_model(preset("debug"), seed=5).eval()
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2:
                p.mul_(8)  # spread the logits so greedy paths are varied
    return m


def greedy_by_recomputation(model, prompt, n):
    """The reference: no cache, no padding; the whole sequence goes through the model at every step."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    return ids[len(prompt) :]


def prompts(n_list, vocab=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, vocab, (n,), generator=g).tolist() for n in n_list]


def test_kv_cache_equals_recomputation_batch_1(model):
    (p,) = prompts([7])
    rows, stats = generate_ids(model, [p], 32)
    assert rows[0].ids == greedy_by_recomputation(model, p, 32)
    assert len(set(rows[0].ids)) > 4
    assert stats.new_tokens == 31 and rows[0].finish_reason == "length"


def test_kv_cache_equals_recomputation_left_padded_batch(model):
    batch = prompts([3, 12, 7], seed=1)
    rows, _ = generate_ids(model, batch, 24)
    for p, r in zip(batch, rows):
        assert r.ids == greedy_by_recomputation(model, p, 24)


def test_logprobs_are_the_models(model):
    (p,) = prompts([6], seed=2)
    rows, _ = generate_ids(model, [p], 5)
    full = p + rows[0].ids
    assert rows[0].logprobs == pytest.approx(score_ids(model, full)[len(p) - 1 :], abs=1e-4)


def test_stop_ids_end_a_row_and_are_not_emitted(model):
    (p,) = prompts([5], seed=3)
    free = greedy_by_recomputation(model, p, 10)
    stop = free[4]
    rows, _ = generate_ids(model, [p], 10, stop_ids={stop})
    assert rows[0].ids == free[: free.index(stop)] and rows[0].finish_reason == "stop"


def test_attention_mask_hides_padding_but_never_a_whole_row():
    m = attention_mask(torch.arange(4), torch.tensor([0, 2]), 6)
    assert m.shape == (2, 1, 4, 6)
    assert m[1, 0, 3].tolist() == [False, False, True, True, False, False]
    assert m.any(-1).all()


def test_sampling_is_seeded_and_respects_top_k_and_top_p():
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0, -3.0]]).repeat(2000, 1)
    params = SamplingParams(temperature=1.0, top_k=2)
    a = sample(logits, params, torch.Generator().manual_seed(0))
    b = sample(logits, params, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    assert set(a.tolist()) == {0, 1}
    probs = torch.softmax(logits[0], -1)  # top-p 0.8 keeps the smallest prefix reaching 0.8 mass
    keep = int((probs.cumsum(0) - probs < 0.8).sum())
    c = sample(logits, SamplingParams(temperature=1.0, top_p=0.8), torch.Generator().manual_seed(1))
    assert set(c.tolist()) == set(range(keep))
    assert torch.equal(sample(logits[:1], SamplingParams()), torch.tensor([0]))


def test_bad_generation_arguments():
    with pytest.raises(InputError, match="temperature"):
        SamplingParams(temperature=-1)
    with pytest.raises(InputError, match="top-p"):
        SamplingParams(top_p=0)
    m = build_model(preset("debug"))
    with pytest.raises(InputError, match="too long for the model's context of 256"):
        generate_ids(m, [[1] * 300], 4)


def test_generation_stops_at_context_length(model):
    rows, _ = generate_ids(model, [[5] * 250], 100)
    assert len(rows[0].ids) == 6


@pytest.mark.slow
def test_compiled_decode_matches_eager(model):
    (p,) = prompts([9], seed=4)
    eager, _ = generate_ids(model, [p], 12)
    compiled, _ = generate_ids(model, [p], 12, compile=True)
    assert compiled[0].ids == eager[0].ids
