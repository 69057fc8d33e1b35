"""`camelid data prepare RECIPE.toml`: a recipe names the sources, the steps of each, the mixture, the tokenizer
and the output directory.

    [output]
    dir = "data/shards"                      # one folder of .ds shards per source, manifest.json, stats.json
    tokenizer = "data/tokenizer/tokenizer.model"
    tasks = 4                                # stage-1 tasks per source: fixes the shard groups, so the output
                                             # is the same whatever --workers is
    shard_tokens = 50_000_000
    train_tokens = 1_400_000_000_000         # for the epochs column of the manifest (the paper's 1.4T)
    val_fraction = 0.0                       # documents held out (by a hash of their id) into <dir>/val

    [[sources]]
    name = "books"
    reader = "text"                          # text, jsonl, parquet, warc, wikipedia, code, arxiv, stackexchange
    path = "raw/books"
    glob = "*.txt"
    weight = 0.045                           # sampling proportion (the paper's Table 1)
    steps = [{step = "gutenberg"}, {step = "min_length", min_chars = 2000}, {step = "book_dedup"}]

Steps run in the order given. The ones that need a whole source at once (`exact_dedup`, `book_dedup`) and
everything after them run in stage 2, over the stage-1 output of all tasks in a fixed order.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from camelid.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def _steps():
    from datatrove.pipeline.filters import C4QualityFilter, GopherQualityFilter, GopherRepetitionFilter

    from camelid.data.pipeline import steps as S
    from camelid.data.pipeline.quality import KenLMPerplexity, QualityClassifier

    return {
        "gutenberg": S.GutenbergStrip,
        "code_header": S.CodeHeaderStrip,
        "wikitext": S.Wikitext,
        "wiki_languages": S.WikiLanguages,
        "min_length": S.MinLength,
        "language_id": S.LanguageId,
        "line_dedup": S.LineDedup,
        "c4": C4QualityFilter,
        "gopher_quality": GopherQualityFilter,
        "gopher_repetition": GopherRepetitionFilter,
        "license": S.LicenseFilter,
        "code_quality": S.CodeQuality,
        "exact_dedup": S.ExactDedup,
        "book_dedup": S.BookDedup,
        "c4_span_dedup": S.SpanDedup,
        "kenlm_perplexity": KenLMPerplexity,
        "quality_classifier": QualityClassifier,
    }


STEP_NAMES = (
    *("gutenberg", "code_header", "wikitext", "wiki_languages", "min_length", "language_id", "line_dedup", "c4"),
    *("gopher_quality", "gopher_repetition", "license", "code_quality", "exact_dedup", "book_dedup"),
    *("kenlm_perplexity", "quality_classifier", "c4_span_dedup"),
)
GLOBAL_STEPS = ("exact_dedup", "book_dedup", "c4_span_dedup")
READER_NAMES = ("text", "jsonl", "parquet", "warc", "wikipedia", "code", "arxiv", "stackexchange")


@dataclass
class Step:
    step: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Source:
    name: str
    reader: str
    path: Path
    glob: str | None = None
    weight: float = 1.0
    steps: list[Step] = field(default_factory=list)
    reader_params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Recipe:
    path: Path
    out_dir: Path
    tokenizer: Path
    sources: list[Source]
    tasks: int = 1
    shard_tokens: int = 50_000_000
    train_tokens: int = 1_400_000_000_000
    max_chars: int = 5_000_000
    val_fraction: float = 0.0


def _get(table: dict, key: str, kind, where: str, default=...):
    if key not in table:
        if default is ...:
            raise ConfigError(f"{where}: missing key {key!r}")
        return default
    from camelid.config import check_value

    return check_value(f"{where}.{key}", table[key], kind)


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"recipe {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"recipe {path} is not valid TOML: {e}") from None
    base = path.parent
    unknown = set(raw) - {"output", "sources"}
    if unknown:
        raise ConfigError(f"{path}: unknown section {sorted(unknown)[0]!r} (known: output, sources)")
    out = raw.get("output", {})
    known_out = {"dir", "tokenizer", "tasks", "shard_tokens", "train_tokens", "max_chars", "val_fraction"}
    for key in out:
        if key not in known_out:
            raise ConfigError(f"output.{key}: unknown key (known: {', '.join(sorted(known_out))})")
    sources = []
    names = set()
    for i, s in enumerate(raw.get("sources", [])):
        where = f"sources[{i}]"
        name = _get(s, "name", str, where)
        where = f"sources.{name}"
        if name in names:
            raise ConfigError(f"{where}: two sources are named {name!r}")
        names.add(name)
        reader = _get(s, "reader", str, where)
        if reader not in READER_NAMES:
            raise ConfigError(f"{where}.reader: unknown reader {reader!r} (known: {', '.join(READER_NAMES)})")
        steps = []
        for j, st in enumerate(_get(s, "steps", list, where, [])):
            if not isinstance(st, dict) or "step" not in st:
                raise ConfigError(f"{where}.steps[{j}]: expected a table with a 'step' key, got {st!r}")
            if st["step"] not in STEP_NAMES:
                raise ConfigError(f"{where}.steps[{j}]: unknown step {st['step']!r} (known: {', '.join(STEP_NAMES)})")
            params = {k: v for k, v in st.items() if k != "step"}
            if isinstance(params.get("model"), str):  # model files are relative to the recipe, like paths
                params["model"] = str(base / params["model"])
            steps.append(Step(st["step"], params))
        known = {"name", "reader", "path", "glob", "weight", "steps", "reader_params"}
        for key in s:
            if key not in known:
                raise ConfigError(f"{where}.{key}: unknown key (known: {', '.join(sorted(known))})")
        src_path = base / _get(s, "path", str, where)
        if not src_path.exists():
            raise ConfigError(f"{where}.path: {src_path} does not exist")
        weight = _get(s, "weight", float, where, 1.0)
        if weight <= 0:
            raise ConfigError(f"{where}.weight: must be > 0, got {weight}")
        sources.append(
            Source(name, reader, src_path, s.get("glob"), weight, steps, _get(s, "reader_params", dict, where, {}))
        )
    if not sources:
        raise ConfigError(f"{path}: no [[sources]]")
    val_fraction = _get(out, "val_fraction", float, "output", 0.0)
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"output.val_fraction: must be in [0, 1), got {val_fraction}")
    tasks = _get(out, "tasks", int, "output", 1)
    if tasks < 1:
        raise ConfigError(f"output.tasks: must be >= 1, got {tasks}")
    return Recipe(
        path=path,
        out_dir=base / _get(out, "dir", str, "output"),
        tokenizer=base / _get(out, "tokenizer", str, "output"),
        sources=sources,
        tasks=tasks,
        shard_tokens=_get(out, "shard_tokens", int, "output", 50_000_000),
        train_tokens=_get(out, "train_tokens", int, "output", 1_400_000_000_000),
        max_chars=_get(out, "max_chars", int, "output", 5_000_000),
        val_fraction=val_fraction,
    )


def build_step(step: Step, where: str):
    cls = _steps()[step.step]
    try:
        return cls(**step.params)
    except TypeError as e:
        raise ConfigError(f"{where}: bad parameters for step {step.step!r}: {e}") from None
