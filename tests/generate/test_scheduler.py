"""Continuous batching: requests join and leave a running batch on one KV cache, and each one's output is what
it gets alone."""

import threading
import time

import pytest
import torch

from camelid.generate import GREEDY, SamplingParams, generate_ids
from camelid.generate.engine import GenerationCancelledError
from camelid.generate.scheduler import QueueFullError, Request, Scheduler


def prompts(n_list, vocab=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, vocab, (n,), generator=g).tolist() for n in n_list]


def alone(model, prompt, n, params=GREEDY, seed=0, stop_ids=frozenset(), top=0):
    (row,), _ = generate_ids(model, [prompt], n, params, stop_ids=stop_ids, seed=seed, top_logprobs=top)
    return row


@pytest.fixture
def scheduler(model):
    made = []

    def make(**kw):
        made.append(Scheduler(model, **kw))
        return made[-1]

    yield make
    for s in made:
        s.close()


def test_greedy_output_is_the_same_as_alone_while_requests_come_and_go(model, scheduler):
    """12 requests of different lengths and budgets through 4 slots: they queue, join the running batch
    between steps (a long prompt prefilled in 5-token pieces between the others' decode steps), and leave
    when done; each gets the ids, log-probs and finish reason it gets alone."""
    ps = prompts([3, 23, 7, 1, 12, 30, 5, 9, 17, 2, 11, 6], seed=1)
    budgets = [20, 5, 31, 12, 8, 25, 3, 16, 10, 28, 7, 14]
    want = [alone(model, p, n) for p, n in zip(ps, budgets)]
    s = scheduler(slots=4, max_queue=16, context=128, prefill_chunk=5)
    jobs = []
    for i, (p, n) in enumerate(zip(ps, budgets)):
        jobs += s.submit(Request(p, n, GREEDY))
        if i % 3 == 2:
            time.sleep(0.02)  # later requests arrive while earlier ones are decoding
    for job, w in zip(jobs, want):
        out = job.result(timeout=120)
        assert out.ids == w.ids
        assert out.logprobs == pytest.approx(w.logprobs, abs=1e-4)
        assert out.finish_reason == w.finish_reason == "length"
    assert s.stats.rows_decoded / s.stats.decode_steps > 2  # the batch really ran several requests at once
    assert s.stats.generated_tokens == sum(budgets) and s.stats.finished["length"] == 12
    assert s.running == 0 and s.waiting == 0


def test_each_row_keeps_its_own_sampling_seed_stop_ids_and_top_logprobs(model, scheduler):
    ps = prompts([4, 9, 6, 13], seed=2)
    params = [SamplingParams(1.0, None, 1.0), SamplingParams(0.8, 5, 1.0), GREEDY, SamplingParams(1.2, None, 0.7)]
    seeds = [11, 22, 33, 44]
    ref = [alone(model, p, 18, pa, sd, top=3) for p, pa, sd in zip(ps, params, seeds)]
    stop = ref[2].ids[5]  # the greedy row's sixth token ends it at its first appearance
    ref[2] = alone(model, ps[2], 18, GREEDY, 33, stop_ids={stop}, top=3)
    s = scheduler(slots=8, context=64)
    stops = [frozenset(), frozenset(), frozenset({stop}), frozenset()]
    jobs = s.submit(*[Request(p, 18, pa, sd, st, top_logprobs=3) for p, pa, sd, st in zip(ps, params, seeds, stops)])
    for job, w in zip(jobs, ref):
        out = job.result(timeout=60)
        assert out.ids == w.ids and out.finish_reason == w.finish_reason
        assert [[i for i, _ in t] for t in out.top_logprobs] == [[i for i, _ in t] for t in w.top_logprobs]
    assert jobs[2].output.finish_reason == "stop" and jobs[2].output.stop_token[0] == stop
    assert len(set(map(tuple, (j.output.ids for j in jobs)))) == 4


def test_a_full_queue_refuses_and_the_scheduler_keeps_serving(model, scheduler):
    (p,) = prompts([5], seed=3)
    want = alone(model, p, 4).ids  # before the scheduler: while one runs, the model's cache is its own
    s = scheduler(slots=1, max_queue=2, context=256)
    first = s.submit(Request(p, 200, GREEDY))  # holds the slot
    while not s.running:
        time.sleep(0.001)
    queued = s.submit(Request(p, 4, GREEDY), Request(p, 4, GREEDY))
    with pytest.raises(QueueFullError, match="queue is full"):
        s.submit(Request(p, 4, GREEDY))
    assert s.stats.rejected == 1
    for job in first + queued:
        assert job.result(timeout=60).ids
    assert s.submit(Request(p, 4, GREEDY))[0].result(timeout=60).ids == want


def test_a_cancelled_request_frees_its_slot_for_the_next(model, scheduler):
    (p,) = prompts([5], seed=4)
    want = alone(model, p, 3).ids
    s = scheduler(slots=1, context=512)
    long, short = s.submit(Request(p, 500, GREEDY), Request(p, 3, GREEDY))
    while not long.output.ids:
        time.sleep(0.001)
    long.cancel("the client went away")
    with pytest.raises(GenerationCancelledError, match="went away"):
        long.result(timeout=30)
    assert len(long.output.ids) < 500
    assert short.result(timeout=30).ids == want
    assert s.running == 0


def test_calls_run_between_steps_and_a_failure_reaches_only_its_caller(model, scheduler):
    (p,) = prompts([6], seed=5)
    want = alone(model, p, 5).ids
    s = scheduler(slots=2, context=64)
    assert s.call(lambda: threading.current_thread().name) == "camelid-scheduler"
    with pytest.raises(ZeroDivisionError):
        s.call(lambda: 1 / 0)
    assert s.submit(Request(p, 5, GREEDY))[0].result(timeout=30).ids == want


def test_a_call_still_waiting_when_the_scheduler_closes_gets_an_error(model, scheduler):
    """A call queued behind another when close() comes is answered with an error, not left waiting forever."""
    s = scheduler(slots=2, context=64)
    late = {}

    def queue_another_then_close():
        def caller():
            try:
                s.call(lambda: "ran")
            except RuntimeError as e:
                late["error"] = str(e)

        t = threading.Thread(target=caller)
        t.start()
        while not s._calls:  # the second call is queued (the loop thread is busy running this one)
            time.sleep(0.01)
        threading.Thread(target=s.close).start()
        while not s._closed:
            time.sleep(0.01)
        late["thread"] = t

    s.call(queue_another_then_close)
    late["thread"].join(timeout=10)
    assert not late["thread"].is_alive() and late["error"] == "the scheduler was closed"


def test_a_model_error_fails_the_running_requests_not_the_scheduler(model, scheduler):
    (p,) = prompts([6], seed=6)
    want = alone(model, p, 5).ids
    s = scheduler(slots=2, context=64)
    broken = {"on": True}

    def stop_rule(ids):
        if broken["on"]:
            broken["on"] = False
            raise RuntimeError("a stop rule failed")
        return False

    (job,) = s.submit(Request(p, 5, GREEDY, should_stop=stop_rule))
    with pytest.raises(RuntimeError, match="stop rule failed"):
        job.result(timeout=30)
    assert s.submit(Request(p, 5, GREEDY))[0].result(timeout=30).ids == want
