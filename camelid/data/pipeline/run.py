"""Run a recipe on datatrove: stage 1 (read, per-document steps, CCNet line dedup within each task's shard group)
with `tasks` tasks on `workers` processes, stage 2 (whole-source steps and tokenization into .ds shards) as one
task per source, then the manifest and the per-step statistics.

Outputs in `output.dir`: `<source>/<source>_00000.ds` (+ .index, .metadata: the trainer's format,
camelid/data/shards.py), `manifest.json`, `stats.json`, `train_data.toml` (the [data] table for `camelid
train`), `<source>/book_pairs.jsonl` where book dedup ran; datatrove's logs and intermediate files in `.work/`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
from collections import Counter
from pathlib import Path

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.readers import JsonlReader as DatatroveJsonlReader
from datatrove.pipeline.writers import JsonlWriter

from camelid.atomic import write_text
from camelid.data.pipeline.readers import READERS
from camelid.data.pipeline.recipe import GLOBAL_STEPS, Recipe, Source, build_step
from camelid.data.pipeline.steps import BookDedup, Defects
from camelid.errors import ConfigError


class TokenizeShards(PipelineStep):
    """Tokenize each document as `<bos> ids <eos>` into shards of about `shard_tokens` tokens (a `val_fraction`
    of the documents, chosen by a hash of their ids, into `val_dir`), and record per shard its documents, tokens,
    input files and licences in `summary_file`."""

    name = "🔢 tokenize to .ds shards"
    type = "🔢 - TOKENIZER"

    def __init__(
        self,
        tokenizer: str,
        out_dir: str,
        source: str,
        shard_tokens: int,
        summary_file: str,
        val_fraction: float = 0.0,
        val_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.tokenizer, self.out_dir, self.source = tokenizer, out_dir, source
        self.shard_tokens, self.summary_file = shard_tokens, summary_file
        self.val_fraction, self.val_dir = val_fraction, val_dir

    def _is_val(self, doc_id: str) -> bool:
        h = int.from_bytes(hashlib.sha1(doc_id.encode("utf-8")).digest()[:8], "little")
        return h / 2**64 < self.val_fraction

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from camelid.data.shards import ShardWriter
        from camelid.tokenizer import load_tokenizer

        tok = load_tokenizer(self.tokenizer)
        name = Path(self.tokenizer).name
        split_dirs = {"train": Path(self.out_dir), "val": Path(self.val_dir or self.out_dir)}
        shards: dict[str, list] = {"train": [], "val": []}
        writers: dict[str, tuple] = {}
        for doc in data:
            self.stat_update("total")
            split = "val" if self.val_fraction and self._is_val(doc.id) else "train"
            if split not in writers:
                path = split_dirs[split] / f"{self.source}_{len(shards[split]):05d}.ds"
                info = {"file": path.name, "documents": 0, "tokens": 0, "inputs": set(), "licenses": Counter()}
                writers[split] = (ShardWriter(path, tok.vocab_size, name), info)
            writer, info = writers[split]
            ids = tok.encode(doc.text, bos=True, eos=True)
            writer.write(ids)
            info["documents"] += 1
            info["tokens"] += len(ids)
            info["inputs"].add(doc.metadata.get("file_path", ""))
            if doc.metadata.get("license"):
                info["licenses"][doc.metadata["license"]] += 1
            self.stat_update("tokens", value=len(ids))
            self.stat_update("forwarded", f"forwarded_{split}")
            if writer.tokens >= self.shard_tokens:
                writer.close()
                shards[split].append(info)
                del writers[split]
            yield doc
        for split, (writer, info) in writers.items():
            writer.close()
            shards[split].append(info)
        for s in shards["train"] + shards["val"]:
            s["inputs"] = sorted(s["inputs"])
            s["licenses"] = dict(sorted(s["licenses"].items()))
        Path(self.summary_file).write_text(json.dumps(shards, indent=1, sort_keys=True))


class EnsureOutput(PipelineStep):
    """After stage 1's writer: an empty `<rank>.jsonl` where a task kept no document, so that stage 2 reads an
    empty source instead of failing on a folder with no files."""

    name = "📁 ensure output"
    type = "✍️ - WRITER"

    def __init__(self, folder: str) -> None:
        super().__init__()
        self.folder = folder

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        yield from data
        path = Path(self.folder) / f"{rank:05d}.jsonl"  # the writer's `${rank}.jsonl`
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()


class _QuietStream:
    """stderr without datatrove's per-task INFO/SUCCESS reports (its executor re-adds an INFO handler for every
    task; the full reports stay in `.work/logs/`)."""

    def __init__(self, stream) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        if any(f"| {level}" in text[:80] for level in ("INFO", "SUCCESS", "DEBUG")):
            return len(text)
        return self.stream.write(text)

    def __getattr__(self, name):
        return getattr(self.stream, name)


@contextlib.contextmanager
def quiet_datatrove():
    from loguru import logger

    old = sys.stderr
    sys.stderr = _QuietStream(old)
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    try:
        yield
    finally:
        sys.stderr = old


def _split(source: Source) -> tuple[list, list]:
    cut = next((i for i, s in enumerate(source.steps) if s.step in GLOBAL_STEPS), len(source.steps))
    return source.steps[:cut], source.steps[cut:]


def _executor(kind: str, pipeline: list, tasks: int, workers: int, logging_dir: str, depends=None):
    common = dict(pipeline=pipeline, tasks=tasks, workers=workers, logging_dir=logging_dir, depends=depends)
    if kind == "local":
        from datatrove.executor import LocalPipelineExecutor

        start = "fork" if os.name == "posix" else "spawn"
        return LocalPipelineExecutor(**common, skip_completed=False, start_method=start)
    if kind == "ray":
        try:
            import ray
            from datatrove.executor.ray import RayPipelineExecutor
        except ImportError:
            raise ConfigError("--executor ray needs Ray: pip install 'camelid[ray]'") from None
        if not ray.is_initialized():  # join the running cluster (`ray start --head`; RAY_ADDRESS to choose one)
            try:
                ray.init(address=os.environ.get("RAY_ADDRESS", "auto"), log_to_driver=False)
            except ConnectionError as e:
                raise ConfigError(
                    f"--executor ray: no Ray cluster to join ({e}); start one: ray start --head"
                ) from None
        return RayPipelineExecutor(**common, skip_completed=False, mem_per_cpu_gb=0.5)
    if kind == "slurm":
        from datatrove.executor.slurm import SlurmPipelineExecutor

        partition = os.environ.get("CAMELID_SLURM_PARTITION", "cpu")
        return SlurmPipelineExecutor(**common, time="24:00:00", partition=partition, skip_completed=False)
    raise ConfigError(f"--executor: unknown executor {kind!r} (local, ray, slurm)")


def _stats(logging_dir: Path) -> list[dict]:
    """datatrove's merged stats.json as [{step, counters...}] with plain totals."""
    path = logging_dir / "stats.json"
    if not path.exists():
        return []
    out = []
    for step in json.loads(path.read_text()):
        counters = {}
        for label, v in step.get("stats", {}).items():
            counters[label] = v["total"] if isinstance(v, dict) else v
        out.append({"step": step["name"], **dict(sorted(counters.items()))})
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


MARKER = ".camelid-prepare"  # in every directory `prepare` made: the only ones it will ever delete


def _check_paths(recipe: Recipe) -> None:
    """Refuse an output directory that holds an input, or lies inside one, before anything is touched."""
    out = recipe.out_dir.resolve()
    for source in recipe.sources:
        src = source.path.resolve()
        if out == src or out.is_relative_to(src) or src.is_relative_to(out):
            raise ConfigError(
                f"output.dir {recipe.out_dir} and the input of source {source.name!r} ({source.path}) overlap; "
                "choose an output directory outside every input"
            )


def _fresh_dir(path: Path) -> Path:
    """`path` emptied for a new run, if an earlier run of `prepare` made it (its marker file is there); a directory
    camelid did not make is never deleted."""
    if path.exists():
        if not (path / MARKER).is_file():
            raise ConfigError(
                f"{path} exists and was not made by `camelid data prepare`; it is left as it is: move it away or "
                "choose another output.dir"
            )
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / MARKER).write_text("made by camelid data prepare; deleted and rebuilt by the next run\n")
    return path


def prepare(recipe: Recipe, workers: int = 1, executor: str = "local") -> dict:
    """Run every source of the recipe; returns the manifest."""
    _check_paths(recipe)
    out = recipe.out_dir
    for name in [".work", *[s.name for s in recipe.sources], "val"]:
        if (out / name).exists() and not (out / name / MARKER).is_file():
            _fresh_dir(out / name)  # raises before anything is deleted
    work = _fresh_dir(out / ".work")
    for name in [s.name for s in recipe.sources] + ["val"]:
        _fresh_dir(out / name)
    stages = []
    for source in recipe.sources:
        local, global_ = _split(source)
        where = f"sources.{source.name}.steps"
        reader_cls = READERS[source.reader]
        src_dir = source.path if source.path.is_dir() else source.path.parent
        glob = source.glob if source.path.is_dir() else source.path.name
        params = {"max_bytes": 4 * recipe.max_chars, **source.reader_params}  # a record's UTF-8 bytes, at most
        reader = reader_cls(str(src_dir), glob_pattern=glob, source=source.name, **params)
        stage1 = [reader, Defects(recipe.max_chars), *(build_step(s, where) for s in local)]
        stage1.append(
            JsonlWriter(str(work / source.name / "stage1"), output_filename="${rank}.jsonl", compression=None)
        )
        stage1.append(EnsureOutput(str(work / source.name / "stage1")))
        steps2 = []
        for s in global_:
            step = build_step(s, where)
            if isinstance(step, BookDedup) and step.pairs_file is None:
                step.pairs_file = str(out / source.name / "book_pairs.jsonl")
            steps2.append(step)
        summary = work / source.name / "shards.json"
        stage2 = [
            DatatroveJsonlReader(str(work / source.name / "stage1"), glob_pattern="*.jsonl", compression=None),
            *steps2,
            TokenizeShards(
                str(recipe.tokenizer),
                str(out / source.name),
                source.name,
                recipe.shard_tokens,
                str(summary),
                recipe.val_fraction,
                str(out / "val"),
            ),
        ]
        s1 = _executor(executor, stage1, recipe.tasks, workers, str(work / "logs" / source.name / "stage1"))
        s2 = _executor(executor, stage2, 1, 1, str(work / "logs" / source.name / "stage2"), depends=s1)
        stages.append((source, s2))
    for _, s2 in stages:
        s2.run()  # runs its stage 1 first
    return write_manifest(recipe)


def write_manifest(recipe: Recipe) -> dict:
    out, work = recipe.out_dir, recipe.out_dir / ".work"
    total_weight = sum(s.weight for s in recipe.sources)
    manifest = {"recipe": recipe.path.name, "tokenizer": recipe.tokenizer.name, "sources": []}
    stats = {}
    hashes: dict[str, str] = {}
    for source in recipe.sources:
        splits = json.loads((work / source.name / "shards.json").read_text())
        shards, val = splits["train"], splits["val"]
        tokens = sum(s["tokens"] for s in shards)
        for s in shards + val:
            s["inputs"] = [
                {"file": _relative(p, source.path), "sha256": hashes.setdefault(p, _sha256(Path(p)))}
                for p in s["inputs"]
                if p and Path(p).is_file()
            ]
        weight = source.weight / total_weight
        entry = {
            "name": source.name,
            "reader": source.reader,
            "weight": round(weight, 6),
            "documents": sum(s["documents"] for s in shards),
            "tokens": tokens,
            "epochs_at_train_tokens": round(weight * recipe.train_tokens / tokens, 4) if tokens else None,
            "shards": shards,
        }
        if recipe.val_fraction:
            entry["val"] = {"documents": sum(s["documents"] for s in val), "tokens": sum(s["tokens"] for s in val),
                            "shards": val}  # fmt: skip
        manifest["sources"].append(entry)
        stats[source.name] = {
            "stage1": _stats(work / "logs" / source.name / "stage1"),
            "stage2": _stats(work / "logs" / source.name / "stage2"),
        }
    manifest["train_tokens"] = recipe.train_tokens
    write_text(out / "manifest.json", json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    write_text(out / "stats.json", json.dumps(stats, indent=1, sort_keys=True) + "\n")
    lines = ["[data]", "train = ["]
    for s in manifest["sources"]:
        if s["documents"]:  # a source that kept nothing for training has no shard directory
            lines.append(f'    {{path = "{(out / s["name"]).as_posix()}", weight = {s["weight"]}}},')
    lines.append("]")
    if recipe.val_fraction:
        lines.append(f'val = ["{(out / "val").as_posix()}"]')
    lines += [f'tokenizer = "{recipe.tokenizer.as_posix()}"', ""]
    write_text(out / "train_data.toml", "\n".join(lines))
    return manifest


def _relative(path: str, base: Path) -> str:
    try:
        return Path(path).resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return Path(path).name


def accounting(stats: list[dict]) -> list[str]:
    """Steps whose counts do not add up (total = forwarded + dropped, dropped = sum of dropped_<reason>)."""
    bad = []
    for s in stats:
        if "total" not in s or ("dropped" not in s and "forwarded" not in s):  # readers and writers
            continue
        reasons = sum(v for k, v in s.items() if k.startswith("dropped_"))
        if s.get("total", 0) != s.get("forwarded", 0) + s.get("dropped", 0) or s.get("dropped", 0) != reasons:
            bad.append(s["step"])
    return bad
