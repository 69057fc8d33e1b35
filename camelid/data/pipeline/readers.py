"""datatrove readers for the paper's seven sources, each from its original release format.

Every reader turns each record into a `Document` whose `metadata["defect"]` names why its bytes are not usable
text (`empty`, `binary`, `invalid_utf8`); the `Defects` step drops those with that reason, so every record read
is accounted for. A file that cannot be read to its end (truncated gzip/bz2/tar, malformed XML) keeps the
documents read before the damage and is counted under `file_error_<kind>`; the run goes on.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import re
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import PurePosixPath
from xml.etree import ElementTree as ET

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.readers.base import BaseDiskReader
from loguru import logger

from camelid.data.pipeline.text import (
    LICENSE_FILES,
    WIKI_LANGUAGES,
    LimitExceededError,
    clean_latex,
    decode,
    detect_license,
)


def _error_kind(e: BaseException) -> str:
    if isinstance(e, LimitExceededError):
        return e.kind
    if isinstance(e, EOFError) or "end-of-stream" in str(e) or "truncated" in str(e).lower():
        return "truncated"
    if isinstance(e, (ET.ParseError,)):
        return "malformed_xml"
    if isinstance(e, (zlib.error, gzip.BadGzipFile, OSError, lzma.LZMAError)):
        return "corrupt_compression"
    if isinstance(e, tarfile.TarError):
        return "corrupt_tar"
    if isinstance(e, json.JSONDecodeError):
        return "malformed_json"
    return type(e).__name__.lower()


# Decompression is bounded: past MIN_BOMB_BYTES of output, more than MAX_RATIO bytes out per byte in is a bomb.
MAX_RATIO = 200
MIN_BOMB_BYTES = 64 * 2**20


class BoundedStream(io.RawIOBase):
    """A decompressing stream that refuses to expand its compressed input more than MAX_RATIO times (past the
    first MIN_BOMB_BYTES), so a small member that inflates to gigabytes stops early instead of filling memory."""

    def __init__(self, inner, raw, name: str) -> None:
        super().__init__()
        self.inner, self.raw, self.name, self.out = inner, raw, name, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        n = self.inner.readinto(buf)
        self.out += n
        if self.out > MIN_BOMB_BYTES:
            try:
                consumed = max(1, self.raw.tell())
            except (OSError, ValueError):
                consumed = 1
            if self.out > MAX_RATIO * consumed:
                raise LimitExceededError(
                    "decompression_bomb", f"{self.name} expands more than {MAX_RATIO}x ({self.out:,} bytes so far)"
                )
        return n


def _open_decompressed(raw, name: str):
    if name.endswith(".gz"):
        inner = gzip.GzipFile(fileobj=raw)
    elif name.endswith(".bz2"):
        inner = bz2.BZ2File(raw)
    elif name.endswith(".xz"):
        inner = lzma.LZMAFile(raw)
    else:
        return raw
    return io.BufferedReader(BoundedStream(inner, raw, name), 1 << 16)


def read_at_most(stream, limit: int) -> tuple[bytes, bool]:
    """Up to `limit` bytes of `stream` and whether there was more (the rest is not read)."""
    data = stream.read(limit + 1)
    return data[:limit], len(data) > limit


def lines_at_most(stream, limit: int):
    """(line, too_long) for each line of `stream`; a line over `limit` bytes is skipped without being held."""
    while True:
        line = stream.readline(limit + 1)
        if not line:
            return
        if len(line) > limit and not line.endswith(b"\n"):
            while True:  # drain the rest of the long line, a piece at a time
                rest = stream.readline(1 << 20)
                if not rest or rest.endswith(b"\n"):
                    break
            yield b"", True
            continue
        yield line, False


class CamelidReader(BaseDiskReader):
    """A datatrove disk reader whose files are parsed by `records(path)`, which yields (id, bytes or str, metadata);
    errors inside a file are counted, never raised. Every record becomes one document (a bad record one with a
    `defect`), and a file that cannot be read to its end one more, with defect `damaged_<kind>`, so what a reader
    met always equals what later steps keep plus what they drop, by reason."""

    name = "camelid reader"
    source = "data"

    def __init__(self, data_folder, glob_pattern: str | None = None, source: str = "data", max_bytes: int = 20_000_000,
                 **kwargs) -> None:  # fmt: skip
        super().__init__(data_folder, glob_pattern=glob_pattern, **kwargs)
        self.source = source
        self.max_bytes = max_bytes  # one record's bytes; a longer one is a `too_long` document, never held

    def records(self, path: str) -> Iterator[tuple[str, bytes | str, dict]]:
        raise NotImplementedError

    def read_file(self, filepath: str) -> DocumentsPipeline:
        where = {"source": self.source, "file_path": self.data_folder.resolve_paths(filepath)}
        try:
            for doc_id, content, meta in self.records(filepath):
                if isinstance(content, bytes):
                    text, defect = decode(content)
                else:
                    text, defect = content, (None if content.strip() else "empty")
                defect = meta.pop("defect", None) or defect
                metadata = {**where, **meta}
                if defect:
                    metadata["defect"] = defect
                yield Document(text=text, id=f"{self.source}/{doc_id}", metadata=metadata)
        except Exception as e:  # a damaged file is counted and skipped, whatever the damage
            kind = _error_kind(e)
            self.stat_update(f"file_error_{kind}")
            logger.warning(f"{filepath}: {kind} ({e}); documents read before the damage are kept")
            damaged = {**where, "defect": f"damaged_{kind}"}
            yield Document(text="", id=f"{self.source}/{filepath}#damage", metadata=damaged)


class TextReader(CamelidReader):
    """One document per text file (books, e.g. Project Gutenberg .txt; also .gz/.bz2/.xz compressed)."""

    name = "📖 text files"

    def records(self, path):
        with self.data_folder.open(path, "rb") as raw:
            data, longer = read_at_most(_open_decompressed(raw, path), self.max_bytes)
            yield path, b"" if longer else data, {"defect": "too_long"} if longer else {}


def _scalars(row: dict) -> dict:
    """A record's other fields that fit in a document's metadata."""
    return {k: v for k, v in row.items() if isinstance(v, (str, int, float, bool))}


class JsonlReader(CamelidReader):
    """JSON Lines (C4 and most corpora), optionally compressed; `text_key` (a datatrove reader argument, default
    "text") holds the text. A line that is not JSON is a document with defect `malformed_json`."""

    name = "📖 jsonl"

    def records(self, path):
        with self.data_folder.open(path, "rb") as raw:
            for n, (line, too_long) in enumerate(lines_at_most(_open_decompressed(raw, path), self.max_bytes)):
                if too_long:
                    yield f"{path}/{n}", "", {"defect": "too_long"}
                    continue
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
                    yield f"{path}/{n}", "", {"defect": "malformed_json"}
                    continue
                if not isinstance(row, dict) or self.text_key not in row:
                    yield f"{path}/{n}", "", {"defect": "malformed_json"}  # a scalar, a list, or no text field
                    continue
                text = row.pop(self.text_key)
                yield f"{path}/{n}", text if isinstance(text, str) else "", _scalars(row)


class ParquetReader(CamelidReader):
    """Parquet files; `text_key` holds the text."""

    name = "📖 parquet"

    def records(self, path):
        import pyarrow.parquet as pq

        with self.data_folder.open(path, "rb") as f:
            table = pq.read_table(f)
        for n, row in enumerate(table.to_pylist()):
            text = row.pop(self.text_key, "")
            yield f"{path}/{n}", text or "", _scalars(row)


class WarcReader(CamelidReader):
    """Common Crawl WARC (HTML responses; main text extracted with resiliparse) and WET (text conversions)."""

    name = "📖 warc/wet"

    def records(self, path):
        from resiliparse.extract.html2text import extract_plain_text
        from resiliparse.parse.encoding import bytes_to_str, detect_encoding
        from warcio.archiveiterator import ArchiveIterator

        with self.data_folder.open(path, "rb") as f:
            for record in ArchiveIterator(f):
                url = record.rec_headers.get_header("WARC-Target-URI") or ""
                rid = record.rec_headers.get_header("WARC-Record-ID") or url
                if record.rec_type not in ("conversion", "response"):
                    continue
                body, longer = read_at_most(record.content_stream(), self.max_bytes)
                if longer:
                    yield rid, b"", {"url": url, "defect": "too_long"}
                elif getattr(record.raw_stream, "limit", 0) > 0:  # the file ended inside this record
                    yield rid, b"", {"url": url, "defect": "truncated_record"}
                elif record.rec_type == "conversion":  # WET
                    yield rid, body, {"url": url}
                else:
                    ctype = record.http_headers.get_header("Content-Type", "") if record.http_headers else ""
                    if "html" not in ctype.lower():
                        continue
                    if b"\x00" in body[:4096]:
                        yield rid, body, {"url": url}  # decode() names it binary
                        continue
                    page = bytes_to_str(body, detect_encoding(body))
                    yield (
                        rid,
                        extract_plain_text(page, main_content=True, alt_texts=False, preserve_formatting=True),
                        {"url": url},
                    )


_WIKI_LANG = re.compile(r"([a-z]{2,3})wiki-")


class WikipediaReader(CamelidReader):
    """MediaWiki XML dumps (`<lang>wiki-*-pages-articles*.xml.bz2`): main-namespace articles, no redirects; the
    language comes from the dump's file name. The text stays wikitext; the `wikitext` step cleans it."""

    name = "📖 wikipedia"

    def records(self, path):
        m = _WIKI_LANG.search(PurePosixPath(path).name)
        language = m.group(1) if m else "unknown"
        with self.data_folder.open(path, "rb") as raw:
            stream = _open_decompressed(raw, path)
            for _, elem in ET.iterparse(stream, events=("end",)):
                if elem.tag.rsplit("}", 1)[-1] != "page":
                    continue
                fields = {child.tag.rsplit("}", 1)[-1]: child for child in elem}
                ns = fields.get("ns")
                redirect = "redirect" in fields
                title = fields["title"].text if "title" in fields else ""
                text = ""
                rev = fields.get("revision")
                if rev is not None:
                    for child in rev:
                        if child.tag.rsplit("}", 1)[-1] == "text":
                            text = child.text or ""
                if (ns is None or ns.text == "0") and not redirect and not text.lower().startswith("#redirect"):
                    yield f"{language}/{title}", text, {"title": title, "language": language}
                elem.clear()


CODE_EXTENSIONS = tuple(
    [
        ".py",
        ".c",
        ".h",
        ".cc",
        ".cpp",
        ".hpp",
        ".java",
        ".js",
        ".ts",
        ".go",
        ".rs",
        ".rb",
        ".php",
        ".scala",
        ".swift",
        ".kt",
        ".sh",
        ".sql",
        ".cs",
        ".lua",
        ".pl",
        ".r",
        ".jl",
        ".hs",
        ".m",
    ]
)


class CodeReader(CamelidReader):
    """Source trees: each top-level folder under the source's path (or each .tar/.tar.gz) is one project, whose
    licence is detected from its LICENSE/COPYING file; a file's own SPDX line overrides it. `license` (an SPDX
    id) is what the recipe declares for projects without a licence file (None: they have none)."""

    name = "📖 code"

    def __init__(self, data_folder, glob_pattern=None, source="github", license: str | None = None, **kwargs) -> None:
        super().__init__(data_folder, glob_pattern, source, **kwargs)
        self.default_license = license
        self._licenses: dict[str, str | None] = {}

    def _project_license(self, project: str) -> str | None:
        if project not in self._licenses:
            found = None
            for name in LICENSE_FILES:
                candidate = f"{project}/{name}"
                if self.data_folder.exists(candidate):
                    with self.data_folder.open(candidate, "rb") as f:
                        found = detect_license(f.read(200_000).decode("utf-8", errors="replace"))
                    break
            self._licenses[project] = found or self.default_license
        return self._licenses[project]

    def records(self, path):
        if path.endswith((".tar", ".tar.gz", ".tgz")):
            yield from self._tar_records(path)
            return
        if not path.lower().endswith(CODE_EXTENSIONS):
            return
        parts = PurePosixPath(path).parts
        project = parts[0] if len(parts) > 1 else ""
        with self.data_folder.open(path, "rb") as f:
            raw, longer = read_at_most(f, self.max_bytes)
        if longer:
            yield path, b"", {"defect": "too_long", "project": project}
            return
        license_ = detect_license(raw[:4000].decode("utf-8", errors="replace")) if b"SPDX" in raw[:4000] else None
        yield path, raw, {"license": license_ or self._project_license(project), "project": project}

    def _tar_records(self, path):
        with self.data_folder.open(path, "rb") as f, tarfile.open(fileobj=io.BytesIO(f.read())) as tar:
            members = [m for m in tar.getmembers() if m.isfile()]
            license_ = None
            for m in members:
                if PurePosixPath(m.name).name in LICENSE_FILES:
                    license_ = detect_license(tar.extractfile(m).read(200_000).decode("utf-8", errors="replace"))
                    break
            license_ = license_ or self.default_license
            for m in sorted(members, key=lambda m: m.name):
                if m.name.lower().endswith(CODE_EXTENSIONS):
                    if m.size > self.max_bytes:  # the size a tar header declares, checked before reading
                        yield f"{path}!{m.name}", b"", {"defect": "too_long", "project": path}
                        continue
                    raw = tar.extractfile(m).read()
                    own = (
                        detect_license(raw[:4000].decode("utf-8", errors="replace")) if b"SPDX" in raw[:4000] else None
                    )
                    yield f"{path}!{m.name}", raw, {"license": own or license_, "project": path}


class ArxivReader(CamelidReader):
    """arXiv source archives: a .tar/.tar.gz of a paper's files, or a gzipped single .tex. The main file (the one
    with \\documentclass) has its \\input/\\include files inlined; then comments, preamble and bibliography go and
    macros are expanded (`clean_latex`)."""

    name = "📖 arxiv"

    def records(self, path):
        with self.data_folder.open(path, "rb") as f:
            data = f.read()
        files: dict[str, str] = {}
        try:
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                for m in tar.getmembers():
                    if m.isfile() and m.name.endswith(".tex"):
                        if m.size > self.max_bytes:
                            yield f"{path}!{m.name}", b"", {"defect": "too_long"}
                            return
                        files[m.name] = tar.extractfile(m).read().decode("utf-8", errors="replace")
        except tarfile.ReadError:
            raw, longer = data, False
            if data[:2] == b"\x1f\x8b":
                raw, longer = read_at_most(_open_decompressed(io.BytesIO(data), ".gz"), self.max_bytes)
            if longer:
                yield path, b"", {"defect": "too_long"}
                return
            text, defect = decode(raw)
            if defect:
                yield path, raw, {}
                return
            files[PurePosixPath(path).name] = text
        if not files:
            yield path, b"", {}
            return
        main = next(
            (n for n, t in sorted(files.items()) if "\\documentclass" in t), max(files, key=lambda n: len(files[n]))
        )
        tex = files[main]

        def inline(m: re.Match) -> str:
            name = m.group(1) if m.group(1).endswith(".tex") else m.group(1) + ".tex"
            base = str(PurePosixPath(main).parent / name).removeprefix("./")
            return files.get(base, files.get(name, ""))

        for _ in range(3):
            tex = re.sub(r"\\(?:input|include)\{([^}]+)\}", inline, tex)
        try:
            yield path, clean_latex(tex, max_chars=self.max_bytes), {"main_file": main}
        except LimitExceededError:  # macros that expand to more than a document may hold (a macro bomb)
            yield path, "", {"main_file": main, "defect": "macro_expansion_too_long"}


class StackExchangeReader(CamelidReader):
    """StackExchange dumps' Posts.xml (the site is the parent folder's name): each question with its answers,
    as one document (formatted by `stackexchange_thread`). With `largest_sites` N only the N largest sites'
    files are read (the paper kept the 28 largest); the others are counted as `files_skipped_smaller_site`."""

    name = "📖 stackexchange"

    def __init__(self, data_folder, glob_pattern=None, source="stackexchange", largest_sites: int | None = None,
                 **kwargs) -> None:  # fmt: skip
        super().__init__(data_folder, glob_pattern, source, **kwargs)
        self.largest_sites = largest_sites
        self._allowed: set[str] | None = None

    def _is_allowed(self, path: str) -> bool:
        if self.largest_sites is None:
            return True
        if self._allowed is None:  # the same answer in every task: sizes of the whole listing, ties by path
            files = self.data_folder.list_files(glob_pattern=self.glob_pattern, recursive=self.recursive)
            by_size = sorted(files, key=lambda f: (-self.data_folder.info(f)["size"], f))
            self._allowed = set(by_size[: self.largest_sites])
        return path in self._allowed

    def records(self, path):
        from camelid.data.pipeline.text import stackexchange_thread

        if not self._is_allowed(path):
            self.stat_update("files_skipped_smaller_site")
            return
        site = PurePosixPath(path).parent.name or "stackexchange"
        questions: dict[int, dict] = {}
        answers: dict[int, list[dict]] = {}
        damage, bad_rows = None, 0
        try:
            with self.data_folder.open(path, "rb") as raw:
                for _, elem in ET.iterparse(_open_decompressed(raw, path), events=("end",)):
                    if elem.tag == "row":
                        row = dict(elem.attrib)
                        try:
                            if row.get("PostTypeId") == "1":
                                questions[int(row["Id"])] = row
                            elif row.get("PostTypeId") == "2" and row.get("ParentId"):
                                answers.setdefault(int(row["ParentId"]), []).append(row)
                        except (KeyError, ValueError):
                            bad_rows += 1  # an id that is not a number: this row is a document dropped as such
                    elem.clear()
        except Exception as e:  # what was parsed before the damage is still emitted, then the damage counted
            damage = e
        for qid in sorted(questions):
            thread = stackexchange_thread(questions[qid], answers.get(qid, []))
            yield f"{site}/{qid}", thread, {"site": site, "answers": len(answers.get(qid, []))}
        for n in range(bad_rows):
            yield f"{site}/bad-row-{n}", "", {"site": site, "defect": "malformed_row"}
        if damage is not None:
            raise damage


READERS = {
    "text": TextReader,
    "jsonl": JsonlReader,
    "parquet": ParquetReader,
    "warc": WarcReader,
    "wikipedia": WikipediaReader,
    "code": CodeReader,
    "arxiv": ArxivReader,
    "stackexchange": StackExchangeReader,
}
__all__ = ["READERS", "WIKI_LANGUAGES"]
