"""Bar chart of a `train_gpu.py` result: MFU of camelid and the transformers baseline per shape and mode.

python benchmarks/plot_train_gpu.py benchmarks/results/train_gpu_h200_2026-11-30.json docs/images/train_gpu_h200.png
"""

from __future__ import annotations

from plots import arguments, plt, save


def main() -> int:
    res, png = arguments(__doc__)
    tags = [
        ("1b_seq2048_mbs8_compile", "1.26B, seq 2048\ncompiled"),
        ("125m_seq1024_mbs32_compile", "134M, seq 1024\ncompiled"),
        ("1b_seq2048_mbs8_eager", "1.26B, seq 2048\neager"),
        ("125m_seq1024_mbs32_eager", "134M, seq 1024\neager"),
    ]
    tags = [(t, label) for t, label in tags if isinstance(res.get(f"camelid_{t}"), dict)]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.38
    for i, (t, _) in enumerate(tags):
        c, h = res[f"camelid_{t}"], res.get(f"hf_{t}")
        ax.bar(i - width / 2, 100 * c["mfu_989"], width, color="#c0392b", label="camelid" if i == 0 else None)
        if isinstance(h, dict):
            ax.bar(i + width / 2, 100 * h["mfu_989"], width, color="#7f8c8d", label="transformers" if i == 0 else None)
            ax.text(i, 100 * c["mfu_989"] + 1, f"{c['tok_s'] / h['tok_s']:.2f}x", ha="center", fontsize=9)
    ax.set_xticks(range(len(tags)), [label for _, label in tags])
    ax.set_ylabel("MFU (% of 989 TFLOP/s)")
    ax.set_title(f"Training throughput, {res['gpu']}, torch {res['torch']}, bf16 autocast, {res['date']}")
    ax.legend()
    ax.set_ylim(0, 70)
    return save(fig, png)


if __name__ == "__main__":
    raise SystemExit(main())
