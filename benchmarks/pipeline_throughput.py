"""Documents per second per core of the CommonCrawl steps: camelid's CCNet recipe (min length, line dedup,
fastText language id, KenLM perplexity, reference classifier) against datatrove's stock C4 + Gopher quality
filters, on the same documents, in one process (one core). Also the WARC reading + HTML extraction
(resiliparse) rate that both would sit behind.

Input: a synthetic crawl made here (the machine has no network): web pages of English prose with shared
navigation boilerplate, 10% French pages and 10% exact duplicates, written as a gzipped WARC.

    PYTHONPATH=. python benchmarks/pipeline_throughput.py [--pages 3000]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "pipeline"))

import fixtures as F  # noqa: E402  (the test suite's page generator)


def make_warc(path: Path, pages: int) -> None:
    import io

    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    nav = "<nav><p>Home | Products | About us | Contact</p></nav>"
    foot = "<footer><p>Copyright 2023 Example Media. All rights reserved. Privacy policy</p></footer>"
    bodies = []
    with open(path, "wb") as f:
        w = WARCWriter(f, gzip=True)
        for i in range(pages):
            if i % 10 == 5:
                text = "\n".join(" ".join(F.FRENCH[j:] + F.FRENCH[:j]) for j in range(6))
            elif i % 10 == 9 and bodies:
                text = bodies[i // 2]
            else:
                text = F.english_page(10_000 + i)
            bodies.append(text)
            html = f"<html><body>{nav}<article>{''.join(f'<p>{p}</p>' for p in text.split(chr(10)))}</article>{foot}"
            headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.0")
            w.write_record(
                w.create_warc_record(
                    f"http://site{i % 50}.example/{i}",
                    "response",
                    payload=io.BytesIO(html.encode()),
                    http_headers=headers,
                )  # fmt: skip
            )


def drain(steps, data) -> tuple[int, float]:
    t0 = time.perf_counter()
    for step in steps:
        data = step.run(data)
    n = sum(1 for _ in data)
    return n, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=3000)
    a = ap.parse_args()
    from datatrove.pipeline.filters import C4QualityFilter, GopherQualityFilter

    from camelid.data.pipeline.readers import WarcReader
    from camelid.data.pipeline.steps import Defects, LanguageId, LineDedup, MinLength

    tmp = Path(tempfile.mkdtemp())
    make_warc(tmp / "crawl.warc.gz", a.pages)
    reader = WarcReader(str(tmp), glob_pattern="*.warc.gz", source="commoncrawl")
    t0 = time.perf_counter()
    docs = list(Defects().run(reader.run(None, 0, 1)))
    read_s = time.perf_counter() - t0
    n_in = len(docs)

    def copies():
        from datatrove.data import Document

        return (Document(text=d.text, id=d.id, metadata=dict(d.metadata)) for d in docs)

    # CCNet's quality models, trained here on generated reference pages vs spam-like pages
    import random

    from camelid.data.pipeline.quality import KenLMPerplexity, QualityClassifier, train_kenlm, train_quality_classifier

    reference = [F.english_page(50_000 + i) for i in range(300)]
    rng = random.Random(0)
    words = [
        "buy",
        "cheap",
        "casino",
        "bonus",
        "click",
        "free",
        "win",
        "now",
        "deal",
        "offer",
        "best",
        "price",
        "hot",
        "download",
        "login",
    ]
    spam = ["\n".join(" ".join(rng.choice(words) for _ in range(30)) for _ in range(5)) for _ in range(300)]
    lm = train_kenlm(reference, tmp / "lm.arpa")
    clf = train_quality_classifier(reference, spam, tmp / "clf.bin")

    def ccnet():
        return [MinLength(300), LineDedup(), LanguageId(["en"], 0.5), KenLMPerplexity(str(lm), (1e9, 1e9)),
                QualityClassifier(str(clf), 0.25)]  # fmt: skip

    warm = ccnet()
    list(warm[3].run(iter(list(copies())[:1])))  # load the models outside the timing (the ARPA parse is slow)
    LanguageId().filter_batch(list(copies())[:1])
    rows = {}
    for name, make in (
        ("camelid CCNet steps (min length, line dedup, language id)",
         lambda: [MinLength(300), LineDedup(), LanguageId(["en"], 0.5)]),
        ("camelid CCNet steps + KenLM perplexity + quality classifier", lambda: [*ccnet()[:3], warm[3], warm[4]]),
        ("datatrove stock C4 + Gopher quality filters", lambda: [C4QualityFilter(), GopherQualityFilter()]),
    ):  # fmt: skip
        best = None
        for _ in range(3):
            kept, secs = drain(make(), copies())
            best = secs if best is None else min(best, secs)
        rows[name] = {
            "docs_in": n_in,
            "docs_kept": kept,
            "seconds": round(best, 4),
            "docs_per_s": round(n_in / best, 1),
        }
    names = list(rows)
    ratio = rows[names[1]]["docs_per_s"] / rows[names[2]]["docs_per_s"]
    out = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, 1 process (1 core)",
        "python": sys.version.split()[0],
        "pages": a.pages,
        "warc_read_and_extract_docs_per_s": round(n_in / read_s, 1),
        "rows": rows,
        "ratio_camelid_full_over_datatrove": round(ratio, 2),
    }
    import datatrove

    out["datatrove"] = getattr(datatrove, "__version__", "0.10.1")
    print(f"{'pipeline':<70} {'kept':>6} {'docs/s':>9}")
    print(f"{'WARC read + resiliparse extraction':<70} {n_in:>6} {out['warc_read_and_extract_docs_per_s']:>9,.1f}")
    for name, r in rows.items():
        print(f"{name:<70} {r['docs_kept']:>6} {r['docs_per_s']:>9,.1f}")
    print(f"ratio camelid (with KenLM + classifier) / datatrove stock C4 + Gopher: {ratio:.2f}")
    path = Path("benchmarks/results") / f"pipeline_throughput_{out['date']}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
