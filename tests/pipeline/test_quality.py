"""CCNet's quality signals trained here: a 5-gram KenLM model (lmplz, built by `make`) and a fastText
reference-vs-random classifier, as `camelid data` commands and as recipe steps."""

import json
import random
import subprocess
import sys

import fixtures as F
import pytest
from datatrove.data import Document

from camelid.data.pipeline.quality import KenLMPerplexity, QualityClassifier, document_perplexity, normalized_lines

SPAM = ["buy", "cheap", "casino", "bonus", "click", "free", "win", "now", "deal", "pills", "viagra", "login", "crypto",
        "offer", "limited", "best", "price", "hot", "singles", "download"]  # fmt: skip


def spam_page(seed: int) -> str:
    rng = random.Random(seed)
    return "\n".join(" ".join(rng.choice(SPAM) for _ in range(30)) for _ in range(5))


def camelid(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "camelid", *args], capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("quality")
    (d / "reference.txt").write_text("\n\n".join(F.english_page(1000 + i) for i in range(60)))
    (d / "random.jsonl").write_text("".join(json.dumps({"text": spam_page(i)}) + "\n" for i in range(60)))
    p = camelid("data", "train-lm", "--input", str(d / "reference.txt"), "--out", str(d / "lm.arpa"))
    assert p.returncode == 0, p.stderr
    assert "order 5" in p.stdout and "\nngram 5=" in (d / "lm.arpa").read_text()
    p = camelid("data", "train-classifier", "--reference", str(d / "reference.txt"), "--random",
                str(d / "random.jsonl"), "--out", str(d / "classifier.bin"))  # fmt: skip
    assert p.returncode == 0, p.stderr
    return d


def test_a_binary_model_scores_like_the_arpa_one(models, capfd):
    """`--out NAME.binary` runs KenLM's build_binary: same scores as the ARPA model, loaded without the
    ARPA loader's progress bar."""
    import kenlm

    p = camelid("data", "train-lm", "--input", str(models / "reference.txt"), "--out", str(models / "lm.binary"))
    assert p.returncode == 0, p.stderr
    assert (models / "lm.binary").read_bytes()[:4] == b"mmap" and not list(models.glob(".lm.binary*"))
    capfd.readouterr()
    binary = kenlm.Model(str(models / "lm.binary"))
    assert "Loading" not in capfd.readouterr().err
    arpa = kenlm.Model(str(models / "lm.arpa"))
    for text in (F.english_page(7), "\n".join(F.FRENCH), spam_page(3)):
        assert document_perplexity(binary, text) == pytest.approx(document_perplexity(arpa, text), rel=1e-4)


def test_document_perplexity_is_kenlms_per_line_perplexity(models):
    import kenlm

    lm = kenlm.Model(str(models / "lm.arpa"))
    line = "The quiet teacher visited the river near the old quarter after the storm."
    (norm,) = normalized_lines([line])
    assert document_perplexity(lm, line) == pytest.approx(lm.perplexity(norm), rel=1e-9)
    english = document_perplexity(lm, F.english_page(5))
    french = document_perplexity(lm, "\n".join(F.FRENCH))
    spam = document_perplexity(lm, spam_page(999))
    print(f"\nperplexity: English {english:.1f}, French {french:.1f}, spam {spam:.1f}")
    assert english * 5 < min(french, spam)


def test_perplexity_buckets_and_classifier_filter(models):
    english, spam = Document(text=F.english_page(7), id="en"), Document(text=spam_page(1234), id="spam")
    lm = str(models / "lm.arpa")
    import kenlm

    ppl = document_perplexity(kenlm.Model(lm), english.text)
    step = KenLMPerplexity(lm, cutoffs=(ppl * 2, ppl * 4), keep=("head", "middle"))
    assert step.filter(english) is True and english.metadata["perplexity_bucket"] == "head"
    assert step.filter(spam) == (False, "perplexity_tail")
    clf = QualityClassifier(str(models / "classifier.bin"), threshold=0.25)
    assert clf.filter(english) is True and english.metadata["reference_prob"] > 0.8
    assert clf.filter(spam) == (False, "low_quality_score") and spam.metadata["reference_prob"] < 0.2


def test_quality_steps_in_a_recipe(models, tokenizer_path):
    raw = models / "raw"
    raw.mkdir()
    F.warc(raw / "crawl.warc.gz")
    (models / "recipe.toml").write_text(f"""
[output]
dir = "out"
tokenizer = "{tokenizer_path.as_posix()}"

[[sources]]
name = "commoncrawl"
reader = "warc"
path = "raw"
steps = [
    {{step = "language_id"}},
    {{step = "kenlm_perplexity", model = "lm.arpa", cutoffs = [340, 520]}},
    {{step = "quality_classifier", model = "classifier.bin", threshold = 0.25}},
]
""")
    p = camelid("data", "prepare", "recipe.toml", cwd=models)
    assert p.returncode == 0, p.stderr[-2000:]
    stats = json.loads((models / "out" / "stats.json").read_text())["commoncrawl"]["stage1"]
    by_name = {s["step"].split(": ", 1)[-1]: s for s in stats}
    assert by_name["📉 KenLM perplexity"]["total"] == 4  # the 3 English pages and the mirror; French dropped before
    assert by_name["🏷 quality classifier"]["forwarded"] == by_name["📉 KenLM perplexity"]["forwarded"]
    missing = camelid("data", "train-lm", "--input", str(models / "nope.txt"), "--out", str(models / "x.arpa"))
    assert missing.returncode == 2 and missing.stderr.startswith("error: cannot read")
