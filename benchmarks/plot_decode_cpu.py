"""Bar chart of a `decode_cpu.py` result: decode and prefill tokens/s of camelid and llama.cpp, pair by pair.

python benchmarks/plot_decode_cpu.py benchmarks/results/decode_cpu_2026-12-02.json docs/images/decode_cpu.png
"""

from __future__ import annotations

from plots import arguments, plt, save

PAIRS = (("bf16", "F16"), ("int8", "Q8_0"), ("int4", "Q4_0"))


def main() -> int:
    res, png = arguments(__doc__)
    runs = [k for k in ("threads_1", "threads_2") if k in res]
    fig, axes = plt.subplots(len(runs), 2, figsize=(10, 3.4 * len(runs)), squeeze=False)
    for row, key in enumerate(runs):
        systems = res[key]["systems"]
        for col, (metric, title) in enumerate(
            (("decode_tok_s", "decode, 128 tokens"), ("prefill_tok_s", "prefill, 512 tokens"))
        ):
            ax = axes[row][col]
            xs = range(len(PAIRS))
            ours = [systems[f"camelid:{c}"][metric] for c, _ in PAIRS]
            theirs = [systems[f"llama.cpp:{g}"][metric] for _, g in PAIRS]
            ax.bar([x - 0.2 for x in xs], theirs, 0.4, label="llama.cpp", color="#999999")
            ax.bar([x + 0.2 for x in xs], ours, 0.4, label="camelid", color="#c0504d")
            for x, o, t in zip(xs, ours, theirs):
                ax.text(x + 0.2, o, f"{o / t:.2f}x", ha="center", va="bottom", fontsize=8)
            ax.set_xticks(list(xs), [f"{c} / {g}" for c, g in PAIRS])
            threads = key.split("_")[1]
            ax.set_title(f"{title}, {threads} thread{'s' if threads != '1' else ''}", fontsize=10)
            ax.set_ylabel("tokens/s")
            if row == 0 and col == 0:
                ax.legend(fontsize=8)
    fig.suptitle(f"SmolLM2-135M on {res.get('cpu', 'CPU')}, batch 1, medians of {res.get('runs')} interleaved runs")
    return save(fig, png)


if __name__ == "__main__":
    raise SystemExit(main())
