"""Builders of small inputs in each source's real format, with the cases each rule must handle."""

from __future__ import annotations

import bz2
import gzip
import io
import random
import tarfile
import uuid
from pathlib import Path

ADJ = ["quiet", "bright", "old", "narrow", "busy", "green", "small", "famous", "cold", "distant", "wooden", "gentle"]
NOUN = ["teacher", "farmer", "river", "library", "engineer", "garden", "train", "village", "doctor", "market",
        "painter", "bridge", "student", "museum", "harbor", "baker"]  # fmt: skip
VERB = ["visited", "described", "repaired", "painted", "watched", "followed", "admired", "photographed", "measured",
        "studied", "cleaned", "explained"]  # fmt: skip
PLACE = ["the northern hills", "the city centre", "a small island", "the old quarter", "the railway station",
         "the public park", "the seaside town", "the mountain road"]  # fmt: skip
WHEN = ["on Monday morning", "late in the evening", "during the long summer", "after the storm", "before the festival",
        "at the end of the year"]  # fmt: skip


def sentences(seed: int):
    """An endless supply of distinct English sentences for one seed."""
    rng, seen = random.Random(seed), set()
    while True:
        a, n, v, n2, p, w = (rng.choice(x) for x in (ADJ, NOUN, VERB, NOUN, PLACE, WHEN))
        if n != n2 and (a, n, v, n2, p, w) not in seen:
            seen.add((a, n, v, n2, p, w))
            yield f"The {a} {n} {v} the {n2} near {p} {w}."


def english_page(seed: int, paragraphs: int = 6, per: int = 4) -> str:
    s = sentences(seed)
    return "\n".join(" ".join(next(s) for _ in range(per)) for _ in range(paragraphs))


FRENCH = [
    "Le vieux professeur a visité la bibliothèque du village pendant l'été.",
    "Les enfants jouent dans le jardin public après la pluie du matin.",
    "Nous avons mangé du pain frais et du fromage près de la rivière.",
    "La ville était calme et les rues étaient presque vides ce soir-là.",
    "Mon frère travaille à la gare depuis plusieurs années maintenant.",
    "Elle a peint un tableau magnifique de la montagne sous la neige.",
]


def warc(path: Path) -> dict:
    """A gzipped WARC: 3 good English pages with shared navigation boilerplate, one French page, one exact
    duplicate of a good page under another URL, one non-HTML response (skipped by the reader)."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    nav = "<nav><p>Home | About | Contact</p></nav><footer><p>Cookie policy and privacy settings</p></footer>"

    def page(body: str) -> bytes:
        paras = "".join(f"<p>{line}</p>" for line in body.split("\n"))
        return f"<html><head><title>t</title></head><body>{nav}<article>{paras}</article>{nav}</body></html>".encode()

    pages = [(f"http://example.com/{i}", page(english_page(i))) for i in range(3)]
    pages.append(("http://example.fr/a", page("\n".join(" ".join(FRENCH[i:] + FRENCH[:i]) for i in range(6)))))
    pages.append(("http://mirror.example.com/0", pages[0][1]))

    def record_id(url: str) -> dict:  # warcio's default is a random uuid4, and the held-out split hashes it
        return {"WARC-Record-ID": f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, url)}>"}

    with open(path, "wb") as f:
        w = WARCWriter(f, gzip=True)
        for url, body in pages:
            headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.0")
            w.write_record(w.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=headers,
                                                warc_headers_dict=record_id(url)))  # fmt: skip
        headers = StatusAndHeaders("200 OK", [("Content-Type", "image/png")], protocol="HTTP/1.0")
        w.write_record(w.create_warc_record("http://example.com/x.png", "response", payload=io.BytesIO(b"\x89PNG"),
                                            http_headers=headers, warc_headers_dict=record_id("x.png")))  # fmt: skip
    return {"pages": 5, "english": 3, "french": 1, "duplicate": 1}


WIKI_ARTICLE = """{{Infobox settlement|name=Exampleville|population=1234}}
'''Exampleville''' is a small [[town]] in the [[Example County|county of Example]], known for its [[bridge]]s.<ref>{{cite web|url=http://x}}</ref>
<!-- editors: do not remove -->
[[File:Exampleville bridge.jpg|thumb|The old bridge]]
== History ==
The town was founded in 1820 by farmers who settled along the river. Its first school opened in 1851.
{| class="wikitable"
! Year !! Population
|-
| 1900 || 500
|}
== Economy ==
Today most residents work in agriculture, tourism and small workshops near the harbour.
[[Category:Towns in Example County]]
"""  # noqa: E501


def wikipedia_dump(folder: Path) -> None:
    ns = "http://www.mediawiki.org/xml/export-0.10/"

    def page(title: str, text: str, ns_id: int = 0, redirect: bool = False) -> str:
        r = f'<redirect title="{title}x" />' if redirect else ""
        esc = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        return (f"<page><title>{title}</title><ns>{ns_id}</ns><id>1</id>{r}<revision><id>2</id>"
                f'<text xml:space="preserve">{esc}</text></revision></page>')  # fmt: skip

    body = page("Exampleville", WIKI_ARTICLE) + page("Old name", "#REDIRECT [[Exampleville]]", redirect=True)
    body += page("Talk:Exampleville", "Some discussion here.", ns_id=1)
    xml = f'<mediawiki xmlns="{ns}" version="0.10"><siteinfo><sitename>W</sitename></siteinfo>{body}</mediawiki>'
    (folder / "enwiki-20230101-pages-articles.xml.bz2").write_bytes(bz2.compress(xml.encode()))
    xml_xh = xml.replace("Exampleville", "Idolophu")
    (folder / "xhwiki-20230101-pages-articles.xml.bz2").write_bytes(bz2.compress(xml_xh.encode()))
    broken = xml.replace("Exampleville", "Villeexemple").replace("<page><title>Old name", "<page><title>Old name</titl")
    (folder / "frwiki-20230101-pages-articles.xml.bz2").write_bytes(bz2.compress(broken.encode()))  # malformed XML


MIT = "MIT License\n\nPermission is hereby granted, free of charge, to any person obtaining a copy of this software"
GPL = "GNU GENERAL PUBLIC LICENSE\nVersion 3, 29 June 2007\n\nCopyright (C) 2007 Free Software Foundation"
APACHE = "Apache License\nVersion 2.0, January 2004\nhttp://www.apache.org/licenses/"
CODE = '''def moving_average(values, window):
    """The mean of each run of `window` consecutive values."""
    if window <= 0:
        raise ValueError("window must be positive")
    total = sum(values[:window])
    out = [total / window]
    for i in range(window, len(values)):
        total += values[i] - values[i - window]
        out.append(total / window)
    return out
'''
HEADER = "# Copyright (c) 2021 Example Authors\n# Licensed under the MIT License; see LICENSE.\n\n"


def code_tree(folder: Path) -> None:
    """mit_proj (header to strip, a minified file, a file with a 1,500-char line), gpl_proj, bare_proj (no
    licence), apache_proj.tar.gz (its file is an exact duplicate of mit_proj/stats.py)."""
    (folder / "mit_proj").mkdir(parents=True)
    (folder / "mit_proj" / "LICENSE").write_text(MIT)
    (folder / "mit_proj" / "stats.py").write_text(HEADER + CODE)
    (folder / "mit_proj" / "app.min.js").write_text("var a=1;" * 200 + "\n" + "function f(x){return x*2};" * 20)
    (folder / "mit_proj" / "table.py").write_text("DATA = [" + ", ".join(str(i) for i in range(400)) + "]\n")
    (folder / "mit_proj" / "README.md").write_text("not code")
    (folder / "gpl_proj").mkdir()
    (folder / "gpl_proj" / "COPYING").write_text(GPL)
    (folder / "gpl_proj" / "tool.py").write_text(CODE.replace("moving_average", "rolling_mean"))
    (folder / "bare_proj").mkdir()
    (folder / "bare_proj" / "util.py").write_text(CODE.replace("moving_average", "smooth"))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in (("apache_proj/LICENSE", APACHE), ("apache_proj/src/stats.py", CODE)):
            info = tarfile.TarInfo(name)
            info.size = len(data.encode())
            tar.addfile(info, io.BytesIO(data.encode()))
    (folder / "apache_proj.tar.gz").write_bytes(buf.getvalue())


GUT_HEAD = "The Project Gutenberg EBook of {t}\n\nThis eBook is for the use of anyone anywhere.\n\n*** START OF THIS PROJECT GUTENBERG EBOOK {T} ***\n\n"  # noqa: E501
GUT_FOOT = "\n\n*** END OF THIS PROJECT GUTENBERG EBOOK {T} ***\n\nUpdated editions will replace the previous one.\n"


def books(folder: Path) -> None:
    """Two editions of one book (the second changes a few sentences and adds a preface) and another book."""
    body = [english_page(10 + i, paragraphs=5) for i in range(8)]
    second = list(body)
    second[3] = english_page(99, paragraphs=1) + "\n" + body[3]
    first_text = "\n\n".join(body)
    second_text = "A preface to the second edition.\n\n" + "\n\n".join(second)
    other = "\n\n".join(english_page(200 + i, paragraphs=5) for i in range(8))
    editions = [("voyage_1st.txt", "The Voyage", first_text), ("voyage_2nd.txt", "The Voyage", second_text)]
    for name, title, text in [*editions, ("harbor.txt", "The Harbor", other)]:
        (folder / name).write_text(GUT_HEAD.format(t=title, T=title.upper()) + text + GUT_FOOT.format(T=title.upper()))


MAIN_TEX = r"""\documentclass{article}
\usepackage{amsmath}
\newcommand{\R}{\mathbb{R}}
\newcommand{\norm}[1]{\lVert #1 \rVert}
\def\eps{\varepsilon}
\title{On Examples}\author{A. Author}
\begin{document}
\maketitle
\begin{abstract}We study examples.\end{abstract}
\section{Introduction}
% TODO: cite the survey here
Let $x \in \R^n$ with $\norm{x} < \eps$; about 50\% of cases are easy. % trailing comment
\input{method}
\begin{thebibliography}{9}
\bibitem{a} A. Author. A paper. 2020.
\end{thebibliography}
\end{document}
"""
METHOD_TEX = r"""\section{Method}
We bound $\norm{y}$ for every $y \in \R$.
"""


def arxiv(folder: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in (("main.tex", MAIN_TEX), ("method.tex", METHOD_TEX), ("fig.png", "\x89PNG")):
            info = tarfile.TarInfo(name)
            info.size = len(data.encode())
            tar.addfile(info, io.BytesIO(data.encode()))
    (folder / "2301.00001.tar.gz").write_bytes(buf.getvalue())
    single = MAIN_TEX.replace(r"\input{method}", "A single-file paper.")
    (folder / "2301.00002.gz").write_bytes(gzip.compress(single.encode(), mtime=0))


POSTS = """<?xml version="1.0" encoding="utf-8"?>
<posts>
  <row Id="1" PostTypeId="1" Score="5" Title="How long should I rest bread dough?" Body="&lt;p&gt;My dough never rises. How long should it rest?&lt;/p&gt;" />
  <row Id="2" PostTypeId="2" ParentId="1" Score="1" Body="&lt;p&gt;Low score answer: an hour.&lt;/p&gt;" />
  <row Id="3" PostTypeId="2" ParentId="1" Score="12" Body="&lt;p&gt;High score answer: until it doubles, often &lt;b&gt;two hours&lt;/b&gt;.&lt;/p&gt;" />
  <row Id="4" PostTypeId="1" Score="2" Title="Is cast iron safe for tomatoes?" Body="&lt;p&gt;Can I cook tomato sauce in cast iron?&lt;/p&gt;" />
  <row Id="5" PostTypeId="2" ParentId="4" Score="3" Body="&lt;p&gt;Yes, for short cooking times.&lt;/p&gt;" />
</posts>
"""  # noqa: E501


def stackexchange(folder: Path) -> None:
    """A good site and a site whose Posts.xml breaks off mid-row (its first thread is still read)."""
    (folder / "cooking.stackexchange.com").mkdir(parents=True)
    (folder / "cooking.stackexchange.com" / "Posts.xml").write_text(POSTS)
    (folder / "broken.stackexchange.com").mkdir(parents=True)
    (folder / "broken.stackexchange.com" / "Posts.xml").write_text(
        POSTS[: POSTS.index('<row Id="4"')] + '<row Id="4" Post'
    )


def damaged(folder: Path) -> dict[str, str]:
    """Files that must never crash a run; the reason each is counted under."""
    good = english_page(500).encode()
    (folder / "invalid_utf8.txt").write_bytes(good[:200] + b"\xff\xfe\xc3(" + good[200:])
    (folder / "binary.txt").write_bytes(bytes(random.Random(0).randrange(256) for _ in range(5000)))
    (folder / "empty.txt").write_bytes(b"")
    (folder / "truncated.txt.gz").write_bytes(gzip.compress(good * 20, mtime=0)[:300])
    (folder / "truncated.txt.bz2").write_bytes(bz2.compress(good * 20)[:300])
    (folder / "one_line.txt").write_bytes(b"word " * 2_100_000)  # a 10 MB document on one line
    (folder / "fine.txt").write_bytes(good)
    return {
        **{"invalid_utf8.txt": "invalid_utf8", "binary.txt": "binary", "empty.txt": "empty"},
        **{"truncated.txt.gz": "file_error", "truncated.txt.bz2": "file_error", "one_line.txt": "too_long"},
    }
