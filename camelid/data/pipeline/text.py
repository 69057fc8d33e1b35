"""Pure text functions of the data pipeline: decoding, CCNet line normalization, Gutenberg boilerplate, licenses
and headers of source files, LaTeX cleanup for arXiv, wikitext cleanup, StackExchange threads, book shingles."""

from __future__ import annotations

import hashlib
import html
import re
import unicodedata


class LimitExceededError(Exception):
    """A file or record larger than a reader will hold: `kind` names which limit."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# -- decoding --------------------------------------------------------------------------------------------------


def decode(raw: bytes) -> tuple[str, str | None]:
    """(text, defect): strict UTF-8 (BOM dropped); a defect names why the bytes are not usable text:
    `empty`, `binary` (NUL bytes or mostly control characters) or `invalid_utf8`."""
    if not raw.strip():
        return "", "empty"
    head = raw[:65536]
    if b"\x00" in head:
        return "", "binary"
    try:
        text, defect = raw.decode("utf-8-sig"), None
    except UnicodeDecodeError:
        text, defect = raw.decode("utf-8", errors="replace"), "invalid_utf8"
    sample = text[:65536]
    junk = sum(1 for c in sample if c == "\ufffd" or unicodedata.category(c) == "Cc" and c not in "\n\r\t\f")
    if junk > 0.1 * len(sample):
        return "", "binary"
    return text, defect


# -- CCNet line normalization --------------------------------------------------------------------------------

_PUNCT = re.compile(r"[^\w\s]|_", re.UNICODE)
_DIGIT = re.compile(r"\d")


def normalize_line(line: str) -> str:
    """CCNet's normalization before hashing a line: lower case, accents removed, digits to 0, punctuation removed,
    whitespace collapsed."""
    line = unicodedata.normalize("NFD", line.strip().lower())
    line = "".join(c for c in line if unicodedata.category(c) != "Mn")
    line = _DIGIT.sub("0", _PUNCT.sub(" ", line))
    return " ".join(line.split())


def line_hash(line: str) -> bytes:
    return hashlib.sha1(normalize_line(line).encode("utf-8")).digest()[:8]


# -- Project Gutenberg ---------------------------------------------------------------------------------------

_GUT_START = re.compile(r"^\s*\*{3}\s*START OF (THE|THIS) PROJECT GUTENBERG.*$|^\*END\*THE SMALL PRINT.*$", re.I | re.M)
_GUT_END = re.compile(
    r"^\s*\*{3}\s*END OF (THE|THIS) PROJECT GUTENBERG.*$|^\s*End of (the )?Project Gutenberg.*$", re.I | re.M
)


def strip_gutenberg(text: str) -> str:
    """The book without Project Gutenberg's licence header and footer (the text between the START and END
    markers; a text without markers is returned as it is)."""
    start = _GUT_START.search(text)
    if start:
        text = text[start.end() :]
    end = _GUT_END.search(text)
    if end:
        text = text[: end.start()]
    return text.strip() + "\n"


# -- source code -----------------------------------------------------------------------------------------------

LICENSE_FILES = ("LICENSE", "LICENSE.txt", "LICENSE.md", "LICENCE", "COPYING", "COPYING.txt", "LICENSE.rst")
_SPDX = re.compile(r"SPDX-License-Identifier:\s*([\w.+-]+)")
_LICENSE_TEXTS = [  # (SPDX id, phrases that must all appear), most specific first
    ("AGPL-3.0", ("GNU AFFERO GENERAL PUBLIC LICENSE",)),
    ("LGPL-3.0", ("GNU LESSER GENERAL PUBLIC LICENSE", "Version 3")),
    ("LGPL-2.1", ("GNU LESSER GENERAL PUBLIC LICENSE",)),
    ("GPL-3.0", ("GNU GENERAL PUBLIC LICENSE", "Version 3")),
    ("GPL-2.0", ("GNU GENERAL PUBLIC LICENSE",)),
    ("Apache-2.0", ("Apache License", "Version 2.0")),
    ("MIT", ("Permission is hereby granted, free of charge",)),
    ("BSD-3-Clause", ("Redistribution and use in source and binary forms", "Neither the name")),
    ("BSD-2-Clause", ("Redistribution and use in source and binary forms",)),
    ("ISC", ("Permission to use, copy, modify, and/or distribute this software for any purpose",)),
    ("Unlicense", ("This is free and unencumbered software released into the public domain",)),
    ("PSF-2.0", ("PYTHON SOFTWARE FOUNDATION LICENSE",)),
    ("MPL-2.0", ("Mozilla Public License", "2.0")),
]
# The paper kept projects under the Apache, BSD and MIT licenses.
PERMISSIVE = ("Apache-2.0", "MIT", "BSD-3-Clause", "BSD-2-Clause", "ISC", "Unlicense", "PSF-2.0")


def detect_license(text: str) -> str | None:
    """The SPDX id of a licence text or of a file's `SPDX-License-Identifier:` line; None if unrecognized."""
    m = _SPDX.search(text[:4000])
    if m:
        return m.group(1)
    flat = " ".join(text.split())
    for spdx, phrases in _LICENSE_TEXTS:
        if all(p.lower() in flat.lower() for p in phrases):
            return spdx
    return None


_COMMENT_LINE = re.compile(r"^\s*(#|//|/\*|\*|\*/|--|;)")
_BOILERPLATE = re.compile(r"copyright|licen[cs]e|all rights reserved|spdx|warranty|permission", re.I)


def strip_code_header(text: str) -> str:
    """Remove a leading comment block that is licence or copyright boilerplate (the paper removes such headers)."""
    lines = text.split("\n")
    start = 1 if lines and lines[0].startswith("#!") else 0
    i = start
    while i < len(lines) and (_COMMENT_LINE.match(lines[i]) or not lines[i].strip()):
        i += 1
    header = "\n".join(lines[start:i])
    if i > start and _BOILERPLATE.search(header):
        return "\n".join(lines[:start] + lines[i:])
    return text


def code_stats(text: str) -> dict[str, float]:
    lines = text.split("\n") or [""]
    lengths = [len(line) for line in lines]
    alnum = sum(c.isalnum() for c in text)
    alpha = sum(c.isalpha() for c in text)
    return {
        "max_line": max(lengths),
        "mean_line": sum(lengths) / len(lengths),
        "alnum_fraction": alnum / max(1, len(text)),
        "alpha_per_token": alpha / max(1, len(text.split())),  # whitespace-separated tokens
    }


# -- arXiv LaTeX -------------------------------------------------------------------------------------------------

_TEX_COMMENT = re.compile(r"(?<!\\)%.*$", re.M)
_NEWCOMMAND = re.compile(r"\\(?:re)?newcommand\*?\s*\{?\s*\\([A-Za-z]+)\s*\}?\s*(?:\[(\d)\])?\s*\{")
_DEF = re.compile(r"\\def\s*\\([A-Za-z]+)\s*((?:#\d)*)\s*\{")


def _braced(text: str, open_at: int) -> int:
    """Index just after the brace group that opens at `open_at` (text[open_at] == '{'); -1 if unbalanced."""
    depth = 0
    for k in range(open_at, len(text)):
        c = text[k]
        if c == "\\":
            continue
        if c == "{" and text[k - 1] != "\\":
            depth += 1
        elif c == "}" and text[k - 1] != "\\":
            depth -= 1
            if depth == 0:
                return k + 1
    return -1


def _macros(tex: str) -> tuple[str, dict[str, tuple[int, str]]]:
    """Remove \\newcommand / \\renewcommand / \\def definitions; return the text and {name: (n_args, body)}."""
    macros: dict[str, tuple[int, str]] = {}
    out, pos = [], 0
    while True:
        m1, m2 = _NEWCOMMAND.search(tex, pos), _DEF.search(tex, pos)
        m = min((x for x in (m1, m2) if x), key=lambda x: x.start(), default=None)
        if m is None:
            break
        end = _braced(tex, m.end() - 1)
        if end < 0:
            break
        body = tex[m.end() : end - 1]
        n_args = int(m.group(2) or 0) if m.re is _NEWCOMMAND else len(m.group(2)) // 2
        macros[m.group(1)] = (n_args, body)
        out.append(tex[pos : m.start()])
        pos = end
    out.append(tex[pos:])
    return "".join(out), macros


def _expand(tex: str, macros: dict[str, tuple[int, str]], rounds: int = 5, max_chars: int | None = None) -> str:
    """Expand user macros (those using macros too, up to `rounds` deep); more than `max_chars` of output is a
    macro bomb (each level doubling the one below) and raises instead of filling memory."""
    if not macros:
        return tex
    names = "|".join(sorted(map(re.escape, macros), key=len, reverse=True))
    use = re.compile(r"\\(" + names + r")(?![A-Za-z])")
    for _ in range(rounds):  # macros that use macros
        out, pos, changed, size = [], 0, False, 0
        for m in use.finditer(tex):
            if m.start() < pos:
                continue
            n_args, body = macros[m.group(1)]
            end, args = m.end(), []
            for _ in range(n_args):
                while end < len(tex) and tex[end].isspace():
                    end += 1
                if end < len(tex) and tex[end] == "{":
                    close = _braced(tex, end)
                    if close < 0:
                        break
                    args.append(tex[end + 1 : close - 1])
                    end = close
                elif end < len(tex):
                    args.append(tex[end])
                    end += 1
            for i, a in enumerate(args, 1):
                body = body.replace(f"#{i}", a)
            out.append(tex[pos : m.start()] + body)
            size += m.start() - pos + len(body)
            if max_chars is not None and size > max_chars:
                raise LimitExceededError("macro_expansion_too_long", f"macros expand past {max_chars:,} characters")
            pos, changed = end, True
        out.append(tex[pos:])
        tex = "".join(out)
        if not changed:
            break
    return tex


def clean_latex(tex: str, max_chars: int | None = None) -> str:
    """The paper's arXiv processing: comments stripped, user macros (\\newcommand, \\def) expanded inline,
    everything before the first section (preamble, title page) and the bibliography removed."""
    tex = _TEX_COMMENT.sub("", tex)
    tex, macros = _macros(tex)
    first = re.search(r"\\section\*?\{", tex)
    if first:
        tex = tex[first.start() :]
    for marker in (r"\\begin\{thebibliography\}", r"\\bibliography\{", r"\\printbibliography", r"\\end\{document\}"):
        m = re.search(marker, tex)
        if m:
            tex = tex[: m.start()]
    tex = _expand(tex, macros, max_chars=max_chars)
    return re.sub(r"\n{3,}", "\n\n", tex).strip() + "\n"


# -- Wikipedia ---------------------------------------------------------------------------------------------------

# The paper's 20 Wikipedia languages (Latin or Cyrillic scripts).
WIKI_LANGUAGES = ("bg", "ca", "cs", "da", "de", "en", "es", "fr", "hr", "hu", "it", "nl", "pl", "pt", "ro", "ru", "sl",
                  "sr", "sv", "uk")  # fmt: skip
_FILE_LINK = re.compile(r"^(file|image|category|datei|fichier|kategorie|catégorie|categoría|archivo)\s*:", re.I)


def clean_wikitext(wikitext: str) -> str:
    """Plain text of an article: links become their text, templates, File/Image/Category links, tables, comments,
    references and markup are removed."""
    import mwparserfromhell

    code = mwparserfromhell.parse(wikitext)
    for node in list(code.ifilter_wikilinks(recursive=False)):
        if _FILE_LINK.match(str(node.title).strip()):
            code.remove(node)
    for tag in list(code.ifilter_tags(recursive=False)):
        if str(tag.tag).lower() in ("ref", "table", "gallery", "math", "references"):
            code.remove(tag)
    text = code.strip_code(normalize=True, collapse=True)
    text = re.sub(r"\{\|.*?\|\}", "", text, flags=re.S)  # tables the parser left as text
    lines = [line.strip() for line in text.split("\n")]
    text = "\n".join(line.strip("= ").strip() if line.startswith("=") else line for line in lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


# -- StackExchange ---------------------------------------------------------------------------------------------


def html_to_text(fragment: str) -> str:
    from resiliparse.extract.html2text import extract_plain_text

    return extract_plain_text(fragment, preserve_formatting=True, main_content=False, alt_texts=False).strip()


def stackexchange_thread(question: dict, answers: list[dict]) -> str:
    """The paper's format: title and question, then the answers sorted by score (highest first), HTML removed."""
    parts = [html.unescape(question.get("Title", "")).strip(), html_to_text(question.get("Body", ""))]
    for a in sorted(answers, key=lambda a: (-int(a.get("Score", 0)), int(a.get("Id", 0)))):
        parts.append(html_to_text(a.get("Body", "")))
    return "\n\n".join(p for p in parts if p) + "\n"


# -- books ------------------------------------------------------------------------------------------------------


def _spelling_key(word: str) -> str:
    """Early-modern spelling folded onto modern: u/v, i/j/y merged, final e, doubled letters and inner vowels
    dropped ("giue" and "give", "heare" and "hear" meet)."""
    w = word.replace("v", "u").replace("j", "i").replace("y", "i")
    w = re.sub(r"(.)\1+", r"\1", w[:-1] if len(w) > 2 and w.endswith("e") else w)
    return w[:1] + re.sub(r"[aeiou]", "", w[1:])


def book_shingles(text: str, n: int = 5, spelling: bool = True) -> set[int]:
    """Hashed word n-grams of a book (words lower-cased, letters only; with `spelling`, folded by spelling key)."""
    words = re.findall(r"[a-z]+", text.lower())
    if spelling:
        words = [_spelling_key(w) for w in words]
    grams = (" ".join(words[i : i + n]) for i in range(max(0, len(words) - n + 1)))
    return {int.from_bytes(hashlib.blake2b(g.encode(), digest_size=8).digest(), "little") for g in grams}


def overlap(a: set[int], b: set[int]) -> float:
    """Containment of the smaller book in the larger: |A & B| / min(|A|, |B|)."""
    if not a or not b:
        return 0.0
    return len(a & b) / min(len(a), len(b))
