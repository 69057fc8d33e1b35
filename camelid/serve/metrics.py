"""/metrics in Prometheus' text format: the scheduler's counters and gauges, and request latency histograms."""

from __future__ import annotations

import bisect
import threading

BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Histogram:
    def __init__(self, name: str, help: str, buckets: tuple[float, ...] = BUCKETS) -> None:
        self.name, self.help, self.buckets = name, help, buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0
        self.lock = threading.Lock()

    def observe(self, value: float) -> None:
        with self.lock:
            self.counts[bisect.bisect_left(self.buckets, value)] += 1
            self.sum += value

    def lines(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        with self.lock:
            total = 0
            for le, n in zip([*map(str, self.buckets), "+Inf"], self.counts):
                total += n
                out.append(f'{self.name}_bucket{{le="{le}"}} {total}')
            out += [f"{self.name}_sum {self.sum}", f"{self.name}_count {total}"]
        return out


def metric(name: str, kind: str, help: str, value: float, labels: str = "") -> list[str]:
    return [f"# HELP {name} {help}", f"# TYPE {name} {kind}", f"{name}{labels} {value}"]


def render(scheduler, histograms: list[Histogram]) -> str:
    s = scheduler.stats
    lines = [
        *metric("camelid_requests_total", "counter", "Sequences submitted to the scheduler.", s.requests),
        *metric("camelid_requests_rejected_total", "counter", "Sequences refused with a full queue.", s.rejected),
        "# HELP camelid_requests_finished_total Sequences finished, by reason.",
        "# TYPE camelid_requests_finished_total counter",
        *(f'camelid_requests_finished_total{{reason="{r}"}} {n}' for r, n in sorted(s.finished.items())),
        *metric("camelid_prompt_tokens_total", "counter", "Prompt tokens prefilled.", s.prompt_tokens),
        *metric("camelid_generation_tokens_total", "counter", "Tokens generated.", s.generated_tokens),
        *metric("camelid_decode_steps_total", "counter", "Batched decode steps run.", s.decode_steps),
        *metric("camelid_decode_rows_total", "counter", "Sequences decoded, summed over steps.", s.rows_decoded),
        *metric("camelid_queue_depth", "gauge", "Sequences waiting for a slot.", scheduler.waiting),
        *metric("camelid_running", "gauge", "Sequences holding a KV-cache slot.", scheduler.running),
        *metric("camelid_slots", "gauge", "KV-cache slots (sequences decoded together).", scheduler.slots),
    ]
    for h in histograms:
        lines += h.lines()
    return "\n".join(lines) + "\n"
