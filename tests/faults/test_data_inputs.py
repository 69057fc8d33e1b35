"""Malformed data per reader: every record a reader meets is one document, kept or dropped with a reason, and a
file it cannot read to its end is one more (`damaged_<kind>`); decompression bombs and huge records are
refused without being held in memory; nothing crashes; `prepare` never deletes what it did not make."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from camelid.data.pipeline.readers import READERS
from camelid.data.pipeline.steps import Defects
from tests.faults.cases import record

GOOD = "A perfectly ordinary sentence about a quiet river. " * 5
MAX_BYTES = 2_000_000  # the readers' per-record limit in these cases (4 x max_chars of a 500,000-character recipe)


def gzip_bomb(size: int) -> bytes:
    """`size` bytes of zeros as a tiny gzip member (about size / 1000 bytes compressed)."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as g:
        chunk = b"\0" * 2**20
        for _ in range(size // len(chunk)):
            g.write(chunk)
    return out.getvalue()


def warc_bytes(pages: int, truncate: int = 0) -> bytes:
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    out = io.BytesIO()
    w = WARCWriter(out, gzip=False)
    for i in range(pages):
        body = f"<html><body><p>{GOOD} page {i}</p></body></html>".encode()
        headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html")], protocol="HTTP/1.0")
        w.write_record(
            w.create_warc_record(f"http://x/{i}", "response", payload=io.BytesIO(body), http_headers=headers)
        )
    data = out.getvalue()
    return data[: len(data) - truncate] if truncate else data


def tar_gz(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


MACRO_BOMB = (
    "\\documentclass{article}\n"
    + "".join(f"\\newcommand{{\\m{chr(97 + i)}}}{{{(chr(92) + 'm' + chr(98 + i) + ' ') * 12}}}\n" for i in range(6))
    + "\\newcommand{\\mg}{lol}\n\\section{Intro}\n"
    + "\\ma " * 200
)

# case: (reader, file name, bytes, records the reader meets before any damage, reader parameters); a damaged file
# adds one document for its unreadable rest
CASES = {
    "text_gzip_bomb": ("text", "bomb.txt.gz", lambda: gzip_bomb(1 << 30), 1, {}),
    "text_bz2_bomb": ("text", "bomb.txt.bz2", lambda: bz2.compress(b"\0" * (200 << 20)), 1, {}),
    "text_truncated_gz": ("text", "cut.txt.gz", lambda: gzip.compress(GOOD.encode() * 500)[:300], 0, {}),
    "text_wrong_extension": ("text", "plain.txt.gz", lambda: GOOD.encode(), 0, {}),
    "text_huge_file": ("text", "huge.txt", lambda: b"word " * (MAX_BYTES // 4), 1, {}),
    "text_binary": ("text", "bin.txt", lambda: bytes(range(256)) * 40, 1, {}),
    "text_invalid_utf8": ("text", "bad.txt", lambda: b"caf\xe9 " * 100, 1, {}),
    "text_empty": ("text", "empty.txt", lambda: b"", 1, {}),
    "jsonl_scalars_and_lists": (
        "jsonl", "rows.jsonl",
        lambda: b"\n".join([json.dumps({"text": GOOD}).encode(), b"42", b"[1, 2]", b'"a string"', b"null",
                            json.dumps({"text": 7}).encode(), json.dumps({"no_text": 1}).encode(), b"{bad"]),
        8, {},
    ),
    "jsonl_deep_nesting": ("jsonl", "deep.jsonl", lambda: b"[" * 200_000 + b"]" * 200_000, 1, {}),
    "jsonl_huge_line": ("jsonl", "long.jsonl", lambda: json.dumps({"text": "x" * (MAX_BYTES + 10)}).encode() + b"\n"
                        + json.dumps({"text": GOOD}).encode(), 2, {}),
    "jsonl_gzip_bomb": ("jsonl", "bomb.jsonl.gz", lambda: gzip_bomb(1 << 30), 0, {}),
    "jsonl_invalid_utf8": ("jsonl", "bytes.jsonl",
                           lambda: b'{"text": "caf\xe9"}\n' + json.dumps({"text": GOOD}).encode(), 2, {}),
    "warc_truncated_record": ("warc", "cut.warc", lambda: warc_bytes(3, truncate=120), 3, {}),
    "warc_garbage": ("warc", "junk.warc", lambda: os.urandom(5000), 0, {}),
    "warc_gzip_garbage": ("warc", "junk.warc.gz", lambda: b"\x1f\x8b" + os.urandom(5000), 0, {}),
    "wiki_malformed_xml": ("wikipedia", "enwiki-1-pages-articles.xml",
                           lambda: b"<mediawiki><page><title>A</title><ns>0</ns><revision><text>" + GOOD.encode()
                           + b"</text></revision></page><page><title>B", 1, {}),
    "wiki_billion_laughs": ("wikipedia", "enwiki-2-pages-articles.xml", lambda: (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        + b"".join(f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">'.encode()
                   for i in range(1, 10))
        + b"]><mediawiki><page><title>L</title><ns>0</ns><revision><text>&lol9;</text></revision></page></mediawiki>"
    ), 0, {}),
    "stackexchange_bad_ids": ("stackexchange", "site/Posts.xml", lambda: (
        b'<posts><row Id="1" PostTypeId="1" Title="Q" Body="&lt;p&gt;question&lt;/p&gt;" />'
        b'<row Id="x7" PostTypeId="1" Title="bad" Body="b" />'
        b'<row Id="3" PostTypeId="2" ParentId="one" Body="a" />'
        b'<row PostTypeId="1" Title="no id" Body="b" />'
        b'<row Id="2" PostTypeId="2" ParentId="1" Score="3" Body="an answer" /></posts>'
    ), 4, {}),
    "stackexchange_truncated": ("stackexchange", "site2/Posts.xml",
                                lambda: b'<posts><row Id="1" PostTypeId="1" Title="Q" Body="b" /><row Id="2" P', 1, {}),
    "arxiv_macro_bomb": ("arxiv", "bomb.tar.gz", lambda: tar_gz({"main.tex": MACRO_BOMB.encode()}), 1, {}),
    "arxiv_gzip_bomb": ("arxiv", "bomb.gz", lambda: gzip_bomb(1 << 30), 1, {}),
    "arxiv_huge_member": ("arxiv", "big.tar.gz", lambda: tar_gz({"main.tex": b"%" * (MAX_BYTES + 1)}), 1, {}),
    "arxiv_garbage": ("arxiv", "junk.tar.gz", lambda: os.urandom(3000), 1, {}),
    "code_huge_file": ("code", "proj/big.py", lambda: b"x = 1\n" * (MAX_BYTES // 5), 1, {}),
    "code_binary": ("code", "proj/blob.py", lambda: os.urandom(4000), 1, {}),
}  # fmt: skip


def run_reader(kind: str, folder: Path, name: str, params: dict) -> tuple[list, Defects]:
    cls = READERS[kind]
    glob = name if "/" not in name else name
    reader = cls(str(folder), glob_pattern=glob, source=kind, max_bytes=MAX_BYTES, **params)
    defects = Defects(max_chars=MAX_BYTES // 4)
    docs = list(defects.run(reader.run(None, 0, 1), 0, 1))
    return docs, defects


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_input(case, tmp_path):
    kind, name, make, records, params = CASES[case]
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(make())
    before = peak_rss_mb()
    try:
        docs, defects = run_reader(kind, tmp_path, name, params)
    except Exception as e:  # noqa: BLE001 - what the suite counts
        record("data_inputs", "crash")
        pytest.fail(f"{case}: {type(e).__name__}: {e}")
    grew = peak_rss_mb() - before
    counters = {k: v["total"] if isinstance(v, dict) else v for k, v in defects.stats.to_dict()["stats"].items()}
    total = counters.get("total", 0)
    dropped = {k: v for k, v in counters.items() if k.startswith("dropped_")}
    damaged = sum(v for k, v in dropped.items() if k.startswith("dropped_damaged_"))
    kept = len(docs)
    print(f"{case}: met {total} (expected {records} + {damaged} damaged), kept {kept}, dropped {dropped}, "
          f"peak RSS +{grew:.0f} MB")  # fmt: skip
    if total != records + damaged or total != kept + sum(dropped.values()):
        record("data_inputs", "lost")
        pytest.fail(f"{case}: read {total}, expected {records} records (+{damaged} damaged), kept {kept}")
    if grew > 300:
        record("data_inputs", "crash")
        pytest.fail(f"{case}: peak memory grew {grew:.0f} MB")
    record("data_inputs", "clean")


def test_a_whole_prepare_run_over_every_case(tmp_path, tokenizer_path):
    """All the cases above as sources of one recipe, through `camelid data prepare`: it finishes, every step's
    counts add up, and its peak memory stays far below the bombs' sizes."""
    raw = tmp_path / "raw"
    lines = [f'[output]\ndir = "out"\ntokenizer = "{tokenizer_path.as_posix()}"\nmax_chars = {MAX_BYTES // 4}\n']
    for case, (kind, name, make, _, _) in sorted(CASES.items()):
        folder = raw / case
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(make())
        lines.append(f'[[sources]]\nname = "{case}"\nreader = "{kind}"\npath = "raw/{case}"\nweight = 1\n')
    (tmp_path / "recipe.toml").write_text("\n".join(lines))
    probe = (
        "import resource, subprocess, sys\n"
        "p = subprocess.run([sys.executable, '-m', 'camelid', 'data', 'prepare', 'recipe.toml'], capture_output=True,"
        " text=True)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)\n"
        "sys.stderr.write(p.stderr[-2000:])\nsys.exit(p.returncode)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    p = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, env=env,
                       timeout=900)  # fmt: skip
    outcome = "clean" if p.returncode == 0 else "crash"
    record("data_prepare", outcome)
    assert p.returncode == 0, p.stderr
    peak = int(p.stdout.strip().splitlines()[-1])
    print(f"prepare over {len(CASES)} malformed sources (1 GiB gzip bombs among them): peak RSS {peak} MB")
    assert peak < 1500
    from camelid.data.pipeline.run import accounting

    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    for case, stages in stats.items():
        assert accounting(stages["stage1"]) == [] and accounting(stages["stage2"]) == [], case


@pytest.mark.parametrize("layout", ["output_is_input", "output_inside_input", "input_inside_output", "foreign_dir"])
def test_prepare_never_deletes_what_it_did_not_make(layout, tmp_path, tokenizer_path):
    from camelid.data.pipeline.recipe import load_recipe
    from camelid.data.pipeline.run import prepare
    from camelid.errors import ConfigError

    raw = tmp_path / "raw"
    (raw / "books").mkdir(parents=True)
    (raw / "books" / "a.txt").write_text(GOOD)
    src, out = {
        "output_is_input": ("raw", "raw"),
        "output_inside_input": ("raw", "raw/books/out"),
        "input_inside_output": ("data/raw", "data"),
        "foreign_dir": ("raw", "out"),
    }[layout]
    if layout == "input_inside_output":
        (tmp_path / "data").mkdir()
        raw.rename(tmp_path / "data" / "raw")
    if layout == "foreign_dir":  # a folder named like a source, holding the user's own files
        (tmp_path / "out" / "books").mkdir(parents=True)
        (tmp_path / "out" / "books" / "notes.txt").write_text("mine")
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(
        f'[output]\ndir = "{out}"\ntokenizer = "{tokenizer_path.as_posix()}"\n'
        f'[[sources]]\nname = "books"\nreader = "text"\npath = "{src}/books"\nweight = 1\n'
    )
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    with pytest.raises(ConfigError) as e:
        prepare(load_recipe(recipe))
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    lost = set(before) - set(after)
    record("data_prepare", "lost" if lost else "clean")
    assert not lost, lost
    assert "\n" not in str(e.value)
