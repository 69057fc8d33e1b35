"""The pipeline's text rules, one by one, on hand-made inputs."""

from fixtures import GUT_FOOT, GUT_HEAD, MAIN_TEX, POSTS, WIKI_ARTICLE

from camelid.data.pipeline import text as T


def test_decode_names_each_defect():
    assert T.decode("héllo wörld".encode()) == ("héllo wörld", None)
    assert T.decode(b"\xef\xbb\xbfBOM text") == ("BOM text", None)
    assert T.decode(b"  \n ")[1] == "empty"
    assert T.decode(b"abc\x00def")[1] == "binary"
    assert T.decode(bytes(range(128, 256)) * 20)[1] == "binary"  # junk without NULs
    text, defect = T.decode(b"good text " * 20 + b"\xff bad byte")
    assert defect == "invalid_utf8" and text.startswith("good text")


def test_ccnet_line_normalization():
    assert T.normalize_line("  Café  Prices: 2023, 10% OFF!! ") == "cafe prices 0000 00 off"
    assert T.line_hash("Hello, World 1") == T.line_hash("hello world 9")
    assert T.line_hash("hello world") != T.line_hash("hello there")


def test_gutenberg_header_and_footer_removed():
    book = GUT_HEAD.format(t="X", T="X") + "Chapter 1\nIt begins.\n" + GUT_FOOT.format(T="X")
    out = T.strip_gutenberg(book)
    assert out == "Chapter 1\nIt begins.\n"
    assert T.strip_gutenberg("No markers here.") == "No markers here.\n"


def test_licenses_detected():
    assert T.detect_license("MIT License\n\nPermission is hereby granted, free of charge, to any person") == "MIT"
    assert T.detect_license("GNU GENERAL PUBLIC LICENSE\n Version 3, 29 June 2007") == "GPL-3.0"
    assert T.detect_license("GNU GENERAL PUBLIC LICENSE\nVersion 2, June 1991") == "GPL-2.0"
    assert T.detect_license("GNU LESSER GENERAL PUBLIC LICENSE Version 2.1") == "LGPL-2.1"
    assert T.detect_license("Apache License\n Version 2.0, January 2004") == "Apache-2.0"
    bsd = "Redistribution and use in source and binary forms ... Neither the name of the copyright holder"
    assert T.detect_license(bsd) == "BSD-3-Clause"
    assert T.detect_license("// SPDX-License-Identifier: BSD-2-Clause\nint x;") == "BSD-2-Clause"
    assert T.detect_license("all rights reserved") is None


def test_license_header_removed_but_not_ordinary_comments():
    code = "#!/usr/bin/env python\n# Copyright 2020 A\n# Licensed under MIT\n\nimport os\n"
    assert T.strip_code_header(code) == "#!/usr/bin/env python\nimport os\n"
    plain = "# Compute the totals.\nimport os\n"
    assert T.strip_code_header(plain) == plain


def test_code_stats():
    s = T.code_stats("abc\n" + "x" * 1500)
    assert s["max_line"] == 1500 and s["mean_line"] == (3 + 1500) / 2
    assert T.code_stats("{}[]();;;,,")["alnum_fraction"] == 0
    assert T.code_stats("a = b + c")["alpha_per_token"] == 3 / 5


def test_latex_cleanup():
    out = T.clean_latex(MAIN_TEX.replace(r"\input{method}", ""))
    assert out.startswith(r"\section{Introduction}")  # preamble, title and abstract gone
    assert "TODO" not in out and "trailing comment" not in out  # comments stripped
    assert r"50\%" in out  # an escaped percent is not a comment
    assert r"$x \in \mathbb{R}^n$" in out and r"\lVert x \rVert" in out and r"\varepsilon" in out  # macros expanded
    assert "newcommand" not in out and r"\def" not in out
    assert "bibitem" not in out and "thebibliography" not in out and "end{document}" not in out


def test_wikitext_cleanup():
    out = T.clean_wikitext(WIKI_ARTICLE)
    assert out.startswith("Exampleville is a small town in the county of Example, known for its bridges.")
    for gone in ("Infobox", "cite web", "editors", "File:", "thumb", "Category", "wikitable", "1900", "[[", "{{", "=="):
        assert gone not in out, gone
    assert "History" in out and "founded in 1820" in out


def test_stackexchange_thread_sorts_answers_by_score():
    import xml.etree.ElementTree as ET

    rows = [dict(r.attrib) for r in ET.fromstring(POSTS.split("\n", 1)[1])]
    q, answers = rows[0], [r for r in rows if r.get("ParentId") == "1"]
    out = T.stackexchange_thread(q, answers)
    assert out.startswith("How long should I rest bread dough?\n\nMy dough never rises.")
    assert out.index("High score answer") < out.index("Low score answer")
    assert "<p>" not in out and "<b>" not in out


def test_book_overlap_folds_old_spelling():
    modern = "I think I hear them. Stand, who is there? Give you good night. " * 3
    folio = "I thinke I heare them. Stand: who's there? Giue you good night. " * 3
    assert T.overlap(T.book_shingles(modern, n=3), T.book_shingles(folio, n=3)) > 0.6
    assert T.overlap(T.book_shingles(modern, n=3, spelling=False), T.book_shingles(folio, n=3, spelling=False)) < 0.3


def test_c4_three_sentence_span_dedup():
    from datatrove.data import Document

    from camelid.data.pipeline.steps import SpanDedup

    shared = "The river was high. The bridge was closed. Everyone waited. "
    docs = [
        Document(text="First page opens. " + shared + "It ends here.", id="a"),
        Document(text="Another start!\n" + shared.upper() + "A new ending.", id="b"),  # the span, other case
        Document(text=shared, id="c"),  # nothing but the span
    ]
    step = SpanDedup()
    out = list(step.run(iter(docs)))
    assert [d.id for d in out] == ["a", "b"]
    assert out[0].text.count("The bridge was closed.") == 1
    assert "BRIDGE" not in out[1].text and out[1].text.startswith("Another start!") and "A new ending." in out[1].text
    assert step.stats["dropped_all_spans_duplicate"].total == 1
