"""`camelid data prepare` end to end on fixtures in every real format: each rule's effect, the accounting at
every step, determinism across worker counts, damaged inputs, recipe errors, and no network."""

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import fixtures as F
import pytest

from camelid.data.pipeline.run import accounting
from camelid.data.shards import open_dir
from camelid.tokenizer import load_tokenizer

RECIPE = """
[output]
dir = "out"
tokenizer = "{tokenizer}"
tasks = 2
shard_tokens = 4000
train_tokens = 1_000_000
val_fraction = 0.3

[[sources]]
name = "commoncrawl"
reader = "warc"
path = "raw/web"
glob = "*.warc.gz"
weight = 67
steps = [
    {{step = "line_dedup"}}, {{step = "language_id", languages = ["en"]}}, {{step = "min_length", min_chars = 100}},
]

[[sources]]
name = "c4"
reader = "warc"
path = "raw/web"
glob = "*.warc.gz"
weight = 15
steps = [{{step = "c4"}}, {{step = "gopher_quality"}}]

[[sources]]
name = "github"
reader = "code"
path = "raw/code"
weight = 4.5
steps = [{{step = "license"}}, {{step = "code_quality"}}, {{step = "code_header"}}, {{step = "exact_dedup"}}]

[[sources]]
name = "wikipedia"
reader = "wikipedia"
path = "raw/wiki"
glob = "*.xml.bz2"
weight = 4.5
steps = [{{step = "wiki_languages"}}, {{step = "wikitext"}}]

[[sources]]
name = "books"
reader = "text"
path = "raw/books"
glob = "*.txt"
weight = 4.5
steps = [{{step = "gutenberg"}}, {{step = "book_dedup"}}]

[[sources]]
name = "arxiv"
reader = "arxiv"
path = "raw/arxiv"
weight = 2.5

[[sources]]
name = "stackexchange"
reader = "stackexchange"
path = "raw/se"
glob = "**/Posts.xml"
weight = 2

[[sources]]
name = "damaged"
reader = "text"
path = "raw/damaged"
weight = 1
"""


RAW_DIRS = {"commoncrawl": "web", "c4": "web", "github": "code", "wikipedia": "wiki", "books": "books",
            "arxiv": "arxiv", "stackexchange": "se", "damaged": "damaged"}  # fmt: skip


def build(root: Path, tokenizer: Path) -> Path:
    raw = root / "raw"
    for d in ("web", "wiki", "code", "books", "arxiv", "se", "damaged"):
        (raw / d).mkdir(parents=True)
    F.warc(raw / "web" / "crawl.warc.gz")
    F.wikipedia_dump(raw / "wiki")
    F.code_tree(raw / "code")
    F.books(raw / "books")
    F.arxiv(raw / "arxiv")
    F.stackexchange(raw / "se")
    F.damaged(raw / "damaged")
    (root / "recipe.toml").write_text(RECIPE.format(tokenizer=tokenizer.as_posix()))
    return root / "recipe.toml"


def prepare(recipe: Path, *args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    cmd = [*prefix, sys.executable, "-m", "camelid", "data", "prepare", str(recipe), *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=recipe.parent, timeout=600)


@pytest.fixture(scope="module")
def run(tmp_path_factory, tokenizer_path):
    root = tmp_path_factory.mktemp("pipeline")
    recipe = build(root, tokenizer_path)
    p = prepare(recipe, "--workers", "2")
    assert p.returncode == 0, p.stderr[-3000:]
    out = root / "out"
    stats = json.loads((out / "stats.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    return {"root": root, "recipe": recipe, "out": out, "stats": stats, "manifest": manifest, "stdout": p.stdout}


def step(stats: list[dict], name: str) -> dict:
    (s,) = [s for s in stats if s["step"].endswith(name)]
    return s


def kept(run, name: str) -> tuple[int, list[dict]]:
    """Documents a source kept (training plus held-out) and all its shard entries."""
    (src,) = [s for s in run["manifest"]["sources"] if s["name"] == name]
    return src["documents"] + src["val"]["documents"], src["shards"] + src["val"]["shards"]


def texts(run, source: str) -> list[str]:
    """The documents of a source as stage 1 wrote them (before tokenization)."""
    out = []
    for line in (run["out"] / ".work" / source / "stage1").glob("*.jsonl"):
        out += [json.loads(x)["text"] for x in line.read_text().splitlines()]
    return out


def test_every_step_accounts_for_every_document(run):
    for source, stages in run["stats"].items():
        for stage in ("stage1", "stage2"):
            assert accounting(stages[stage]) == [], (source, stage)
        defects = step(stages["stage1"], "defects")
        reader = stages["stage1"][0]
        assert defects["total"] == reader.get("documents", 0)  # every record read reaches the first step


def test_commoncrawl_rules(run):
    s = run["stats"]["commoncrawl"]["stage1"]
    assert step(s, "line dedup")["dropped_all_lines_duplicate"] == 1  # the mirrored page
    assert step(s, "line dedup")["lines_removed"] >= 6
    assert step(s, "language id")["dropped_wrong_language"] == 1  # the French page
    assert kept(run, "commoncrawl")[0] == 3
    c4 = run["stats"]["c4"]["stage1"]
    assert step(c4, "C4 Quality")["line-filter-no_terminal_punc"] > 0  # boilerplate lines without punctuation removed
    assert step(c4, "Gopher Quality")["dropped"] == 1


def test_github_rules(run):
    s1, s2 = run["stats"]["github"]["stage1"], run["stats"]["github"]["stage2"]
    lic = step(s1, "licence")
    assert (lic["dropped_no_license"], lic["dropped_license_not_allowed"]) == (1, 1)  # bare_proj, gpl_proj
    assert step(s1, "code quality")["dropped_line_too_long"] == 2  # the minified file and the 2,000-char line
    assert step(s2, "exact dedup")["dropped_exact_duplicate"] == 1  # the tarball's copy of stats.py
    n, shards = kept(run, "github")
    assert n == 1 and sum(sum(s["licenses"].values()) for s in shards) == 1
    stage1 = texts(run, "github")  # stats.py twice (header stripped from mit_proj's), before the exact dedup
    assert len(stage1) == 2 and all(t.startswith("def moving_average") for t in stage1)


def test_wikipedia_rules(run):
    s = run["stats"]["wikipedia"]["stage1"]
    assert step(s, "wikipedia languages")["dropped_language_not_in_paper_list"] == 1  # the xh dump
    # one article per dump (the redirect and the talk page are not articles); the fr dump's XML breaks after it,
    # and its damaged rest is one more document, dropped for that reason
    assert s[0]["documents"] == 4 and s[0]["file_error_malformed_xml"] == 1
    assert step(s, "defects")["dropped_damaged_malformed_xml"] == 1
    texts_ = sorted(texts(run, "wikipedia"))
    assert [t.split(" ", 1)[0] for t in texts_] == ["Exampleville", "Villeexemple"]
    assert "[[" not in texts_[0] and "Category" not in texts_[0]


def test_books_rules(run):
    s = run["stats"]["books"]["stage2"]
    assert step(s, "book near-dup")["dropped_near_duplicate_book"] == 1
    pairs = [json.loads(x) for x in (run["out"] / "books" / "book_pairs.jsonl").read_text().splitlines()]
    assert pairs == [
        {"book": "books/voyage_2nd.txt", "kept_book": "books/voyage_1st.txt", "overlap": pairs[0]["overlap"]}
    ]
    assert pairs[0]["overlap"] > 0.9
    for t in texts(run, "books"):
        assert "PROJECT GUTENBERG" not in t and "anyone anywhere" not in t


def test_arxiv_and_stackexchange(run):
    papers = texts(run, "arxiv")
    assert len(papers) == 2
    for t in papers:
        assert t.startswith(r"\section{Introduction}") and r"\mathbb{R}" in t
        assert "TODO" not in t and "bibitem" not in t and "newcommand" not in t
    assert any(r"We bound $\lVert y \rVert$" in t for t in papers)  # \input{method} inlined
    threads = texts(run, "stackexchange")
    assert run["stats"]["stackexchange"]["stage1"][0]["file_error_malformed_xml"] == 1
    assert len(threads) == 3  # two from the good site, the first thread of the broken one
    bread, _ = [t for t in threads if "bread" in t]
    assert bread.index("High score answer") < bread.index("Low score answer")


def test_damaged_inputs_are_counted_not_fatal(run):
    s = run["stats"]["damaged"]["stage1"]
    reader, defects = s[0], step(s, "defects")
    assert reader["file_error_truncated"] == 2  # the truncated .gz and .bz2
    assert defects["dropped_damaged_truncated"] == 2  # each counted as a document dropped for it
    for reason in ("binary", "empty", "invalid_utf8", "too_long"):
        assert defects[f"dropped_{reason}"] == 1, reason
    assert defects["forwarded"] == 1  # fine.txt


def test_shards_are_what_the_trainer_reads(run, tokenizer_path):
    tok = load_tokenizer(tokenizer_path)
    held_out = 0
    for source in run["manifest"]["sources"]:
        shards = open_dir(run["out"] / source["name"]) if source["documents"] else []
        assert sum(sh.n_docs for sh in shards) == source["documents"]
        assert sum(s["tokens"] for s in source["shards"]) == source["tokens"]
        held_out += source["val"]["documents"]
        tokenizer_step = run["stats"][source["name"]]["stage2"][-1]
        assert tokenizer_step.get("forwarded_val", 0) == source["val"]["documents"]
        for entry in source["shards"] + source["val"]["shards"]:
            for inp in entry["inputs"]:
                path = run["root"] / "raw" / RAW_DIRS[source["name"]] / inp["file"]
                assert hashlib.sha256(path.read_bytes()).hexdigest() == inp["sha256"]
    assert held_out == sum(sh.n_docs for sh in open_dir(run["out"] / "val")) > 0  # a hashed 30% held out
    assert f'val = ["{run["out"].as_posix()}/val"]' in (run["out"] / "train_data.toml").read_text()
    docs = []
    for shard in open_dir(run["out"] / "stackexchange") + open_dir(run["out"] / "val"):
        starts = [0, *shard.ends[:-1].tolist()]
        docs += [shard.tokens[a:b].tolist() for a, b in zip(starts, shard.ends.tolist())]
    assert all(d[0] == tok.bos_id and d[-1] == tok.eos_id for d in docs)
    assert any("bread dough" in tok.decode(d[1:-1]) for d in docs)
    toml = (run["out"] / "train_data.toml").read_text()
    assert f'{{path = "{run["out"].as_posix()}/commoncrawl", weight = 0.663366}}' in toml  # 67 / 101


def _digest(out: Path) -> dict[str, str]:
    return {
        p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file() and ".work" not in p.parts
    }


@pytest.mark.slow
def test_same_bytes_with_one_and_two_workers_and_again(run, tmp_path):
    first = _digest(run["out"])
    assert len(first) > 20
    for workers in ("1", "2"):
        shutil.rmtree(run["out"])
        p = prepare(run["recipe"], "--workers", workers)
        assert p.returncode == 0, p.stderr[-2000:]
        assert _digest(run["out"]) == first, workers


def test_runs_with_the_network_cut_off(tmp_path, tokenizer_path):
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("unshare -n needs root or user namespaces here")
    recipe = build(tmp_path, tokenizer_path)
    p = prepare(recipe, prefix=("unshare", "-n"))
    assert p.returncode == 0, p.stderr[-3000:]
    assert "commoncrawl" in p.stdout and (tmp_path / "out" / "manifest.json").is_file()


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda r: r.replace('{step = "c4"}', '{step = "c5"}'), "unknown step 'c5'"),
        (lambda r: r.replace("tasks = 2", "tasks = 2\nworkers = 3"), "output.workers: unknown key"),
        (lambda r: r.replace('path = "raw/arxiv"', 'path = "raw/nowhere"'), "sources.arxiv.path:"),
        (lambda r: r.replace('reader = "arxiv"', 'reader = "pdf"'), "unknown reader 'pdf'"),
        (lambda r: r.replace('{step = "line_dedup"}', '{step = "line_dedup", size = 3}'), "bad parameters"),
    ],
)
def test_recipe_errors_are_one_line(tmp_path, tokenizer_path, edit, needle):
    recipe = build(tmp_path, tokenizer_path)
    recipe.write_text(edit(recipe.read_text()))
    p = prepare(recipe)
    assert p.returncode == 2, p.stderr[-2000:]
    assert p.stderr.startswith("error: ") and needle in p.stderr and "Traceback" not in p.stderr


def test_the_shipped_paper_recipe_loads(tmp_path):
    from camelid.data.pipeline.recipe import build_step, load_recipe

    shipped = Path(__file__).parents[2] / "configs" / "data" / "llama.toml"
    (tmp_path / "llama.toml").write_text(shipped.read_text())
    for name in ("commoncrawl", "c4", "github", "wikipedia", "books", "arxiv", "stackexchange"):
        (tmp_path / "raw" / name).mkdir(parents=True)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "lm.binary").write_text("")  # stand-ins: the steps check that their models exist
    (tmp_path / "models" / "quality.bin").write_text("")
    recipe = load_recipe(tmp_path / "llama.toml")
    weights = {s.name: s.weight for s in recipe.sources}
    assert weights == {"commoncrawl": 67.0, "c4": 15.0, "github": 4.5, "wikipedia": 4.5, "books": 4.5,
                       "arxiv": 2.5, "stackexchange": 2.0}  # fmt: skip
    for source in recipe.sources:
        for s in source.steps:
            build_step(s, source.name)  # every step's parameters are accepted


@pytest.mark.slow
def test_a_local_ray_cluster_gives_the_same_bytes(run):
    """`ray start --head` on loopback with 2 CPUs, then the same recipe with --executor ray."""
    import os
    import socket
    import tempfile

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RAY_ADDRESS": f"127.0.0.1:{port}", "RAY_USAGE_STATS_ENABLED": "0"}
    ray = str(Path(sys.executable).with_name("ray"))
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    start = [ray, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
             "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={ray_tmp}"]  # fmt: skip
    p = subprocess.run(start, capture_output=True, text=True, env=env, timeout=180)
    assert p.returncode == 0, p.stderr[-2000:]
    try:
        local = _digest(run["out"])
        shutil.rmtree(run["out"])
        cmd = [sys.executable, "-m", "camelid", "data", "prepare", str(run["recipe"]), "--executor", "ray",
               "--workers", "2"]  # fmt: skip
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=run["root"], env=env, timeout=600)
        assert p.returncode == 0, p.stderr[-3000:]
        assert _digest(run["out"]) == local
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, env=env, timeout=120)


def test_stackexchange_keeps_the_largest_sites(tmp_path):
    from camelid.data.pipeline.readers import StackExchangeReader

    F.stackexchange(tmp_path)
    reader = StackExchangeReader(str(tmp_path), glob_pattern="**/Posts.xml", largest_sites=1)
    docs = list(reader.run(None, 0, 1))
    assert {d.metadata["site"] for d in docs} == {"cooking.stackexchange.com"} and len(docs) == 2
    assert reader.stats["files_skipped_smaller_site"].total == 1


def test_jsonl_and_parquet_readers(tmp_path):
    import gzip

    import pyarrow as pa
    import pyarrow.parquet as pq

    from camelid.data.pipeline.readers import JsonlReader, ParquetReader

    rows = [json.dumps({"content": "a c4 page", "url": "http://a", "n": 1}), "{not json", ""]
    (tmp_path / "c4-0000.json.gz").write_bytes(gzip.compress(("\n".join(rows) + "\n").encode(), mtime=0))
    docs = list(JsonlReader(str(tmp_path), glob_pattern="*.json.gz", text_key="content").run(None, 0, 1))
    assert [(d.text, d.metadata.get("url"), d.metadata.get("defect")) for d in docs] == [
        ("a c4 page", "http://a", None),
        ("", None, "malformed_json"),  # kept as a document so the defects step counts it
    ]
    pq.write_table(pa.table({"text": ["first", "second"], "lang": ["en", "fr"]}), tmp_path / "part.parquet")
    docs = list(ParquetReader(str(tmp_path), glob_pattern="*.parquet").run(None, 0, 1))
    assert [(d.text, d.metadata["lang"]) for d in docs] == [("first", "en"), ("second", "fr")]
