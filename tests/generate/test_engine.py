import pytest
import torch

from camelid.errors import InputError
from camelid.generate import GREEDY, Decoder, SamplingParams, decoder_for, generate_ids, sample, score_ids
from camelid.generate.sampling import sample_rows, uniform
from camelid.model import build_model, preset


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
    rows, stats = generate_ids(model, [p], 32, GREEDY)
    assert rows[0].ids == greedy_by_recomputation(model, p, 32)
    assert len(set(rows[0].ids)) > 4
    assert stats.new_tokens == 31 and rows[0].finish_reason == "length"


def test_rows_of_different_lengths_in_one_batch(model):
    """Each row is its own cache row at its own positions: the same greedy ids alone or in a batch."""
    batch = prompts([3, 12, 7], seed=1)
    rows, _ = generate_ids(model, batch, 24, GREEDY)
    for p, r in zip(batch, rows):
        assert r.ids == greedy_by_recomputation(model, p, 24)


def test_logprobs_are_the_models(model):
    (p,) = prompts([6], seed=2)
    rows, _ = generate_ids(model, [p], 5, GREEDY)
    full = p + rows[0].ids
    assert rows[0].logprobs == pytest.approx(score_ids(model, full)[len(p) - 1 :], abs=1e-4)


def test_stop_ids_end_a_row_and_are_not_emitted(model):
    (p,) = prompts([5], seed=3)
    free = greedy_by_recomputation(model, p, 10)
    stop = free[4]
    rows, _ = generate_ids(model, [p], 10, GREEDY, stop_ids={stop})
    assert rows[0].ids == free[: free.index(stop)] and rows[0].finish_reason == "stop"


def test_the_cache_is_allocated_once_and_reused():
    m = build_model(preset("debug"), seed=1).eval()
    (p,) = prompts([9], seed=5)
    first, _ = generate_ids(m, [p], 16, GREEDY)
    decoder = decoder_for(m)
    k = m.layers[0].attention.kv_cache.k
    second, _ = generate_ids(m, [p], 16, GREEDY)
    assert decoder.allocations == 1 and m.layers[0].attention.kv_cache.k is k  # two calls, one allocation
    assert first[0].ids == second[0].ids
    generate_ids(m, [p] * 3, 200, GREEDY)
    assert decoder.allocations == 2 and decoder.batch == 3 and decoder.length == 256  # grown when too small


def test_prefill_logits_only_at_each_prompts_last_token(model):
    decoder = Decoder(model)
    batch = prompts([4, 9], seed=6)
    logits = decoder.prefill(batch)
    assert logits.shape == (2, model.args.vocab_size)
    with torch.no_grad():
        for row, p in enumerate(batch):
            torch.testing.assert_close(logits[row], model(torch.tensor([p]))[0, -1].float(), atol=1e-5, rtol=1e-5)


def test_sampling_is_seeded_per_row_and_respects_top_k_and_top_p():
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0, -3.0]]).repeat(2000, 1)
    params = SamplingParams(temperature=1.0, top_k=2, top_p=1.0)
    a, b = sample(logits, params, seed=0), sample(logits, params, seed=0)
    assert torch.equal(a, b) and set(a.tolist()) == {0, 1}
    assert not torch.equal(a, sample(logits, params, seed=1))
    probs = torch.softmax(logits[0], -1)  # top-p 0.8 keeps the smallest prefix reaching 0.8 mass
    keep = int((probs.cumsum(0) - probs < 0.8).sum())
    c = sample(logits, SamplingParams(temperature=1.0, top_p=0.8), seed=1)
    assert set(c.tolist()) == set(range(keep))
    free = sample(logits, SamplingParams(temperature=1.0, top_p=1.0), seed=2)  # the softmax's frequencies
    freq = torch.bincount(free, minlength=5).float() / len(free)
    assert (freq - probs).abs().max() < 0.04
    assert torch.equal(sample(logits[:1], GREEDY), torch.tensor([0]))


def test_a_rows_noise_depends_only_on_its_seed_and_step():
    seeds, steps = torch.tensor([7, 7, 8]), torch.tensor([3, 3, 3])
    u = uniform(seeds, steps, 1000)
    assert torch.equal(u[0], u[1]) and not torch.equal(u[0], u[2])
    assert float(u.min()) > 0 and float(u.max()) < 1 and abs(float(u.mean()) - 0.5) < 0.02
    logits = torch.randn(3, 50)
    t, k, p = torch.tensor([1.0, 0.0, 0.9]), torch.tensor([0, 0, 5]), torch.tensor([1.0, 1.0, 0.5])
    ids = sample_rows(logits, t, k, p, seeds, steps, filtered=True)
    assert ids[1] == logits[1].argmax()  # temperature 0: greedy, whatever the noise


def test_unseeded_generation_leaves_the_process_rng_alone(model):
    torch.manual_seed(123)
    want = torch.rand(5)
    torch.manual_seed(123)
    generate_ids(model, prompts([4], seed=7), 6, SamplingParams(temperature=1.0))
    assert torch.equal(torch.rand(5), want)


def test_bad_generation_arguments():
    with pytest.raises(InputError, match="temperature"):
        SamplingParams(temperature=-1)
    with pytest.raises(InputError, match="top_p"):
        SamplingParams(top_p=0)
    with pytest.raises(InputError, match="temperature"):
        SamplingParams(temperature=float("nan"))
    m = build_model(preset("debug"))
    with pytest.raises(InputError, match="too long for the model's context of 256"):
        generate_ids(m, [[1] * 300], 4)


def test_generation_stops_at_context_length(model):
    rows, _ = generate_ids(model, [[5] * 250], 100, GREEDY)
    assert len(rows[0].ids) == 6


@pytest.mark.slow
def test_compiled_decode_matches_eager(model):
    batch = prompts([9, 4], seed=4)
    eager, _ = generate_ids(model, batch, 12, GREEDY)
    compiled, _ = generate_ids(model, batch, 12, GREEDY, compile=True)
    assert [r.ids for r in compiled] == [r.ids for r in eager]
    sampled = [generate_ids(model, batch, 12, SamplingParams(temperature=1.0), seed=3, compile=c)[0] for c in (0, 1)]
    assert [r.ids for r in sampled[0]] == [r.ids for r in sampled[1]]  # the sampling runs inside the step too
