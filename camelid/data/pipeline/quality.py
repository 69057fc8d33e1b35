"""CCNet's two quality signals for CommonCrawl, trained locally (nothing is downloaded):

* a 5-gram KenLM language model of a reference corpus (the paper: Wikipedia), trained with KenLM's `lmplz`
  (built from the `kenlm` sdist by `make`, see the Makefile) and queried with the `kenlm` Python module;
  documents are bucketed by perplexity into head / middle / tail (English cutoffs 340 and 520; RedPajama keeps
  head and middle);
* a fastText linear classifier of reference-like pages (the paper: pages referenced by Wikipedia) against
  random pages; documents with P(reference) below a threshold (RedPajama: 0.25) are dropped.

Both see text normalized as CCNet does (`normalize_line`: lower case, no accents, digits to 0, no punctuation).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

from datatrove.pipeline.filters.base_filter import BaseFilter

from camelid.data.pipeline.text import normalize_line
from camelid.errors import ConfigError, InputError

KENLM_VERSION = "0.3.0"


def kenlm_binary(name: str) -> Path:
    """`lmplz` or `build_binary`: $CAMELID_KENLM_BIN, the Makefile's build in ~/.cache/camelid, or PATH."""
    cache = Path.home() / ".cache" / "camelid" / f"kenlm-{KENLM_VERSION}" / "bin"
    candidates = [os.environ.get("CAMELID_KENLM_BIN", ""), str(cache)]
    for folder in candidates:
        if folder and (Path(folder) / name).is_file():
            return Path(folder) / name
    found = shutil.which(name)
    if found:
        return Path(found)
    raise ConfigError(f"KenLM's {name} not found; `make setup-kenlm` builds it (or set CAMELID_KENLM_BIN)")


def read_documents(paths: Iterable[str | Path]) -> Iterable[str]:
    """Documents of JSON Lines files (their "text") or of text files (separated by blank lines)."""
    import json

    for path in map(Path, paths):
        try:
            raw = path.read_text(encoding="utf-8")
        except OSError as e:
            raise InputError(f"cannot read {path}: {e.strerror}") from None
        if path.suffix == ".jsonl":
            for line in raw.splitlines():
                if line.strip():
                    yield json.loads(line).get("text", "")
        else:
            yield from (d for d in raw.split("\n\n") if d.strip())


def normalized_lines(texts: Iterable[str]) -> Iterable[str]:
    for text in texts:
        for line in text.split("\n"):
            norm = normalize_line(line)
            if norm:
                yield norm


def train_kenlm(texts: Iterable[str], out: str | Path, order: int = 5, memory: str = "1G") -> Path:
    """Train an order-`order` KenLM model on the normalized lines of `texts` and write it to `out` (atomically):
    KenLM's binary format (`build_binary`, loads fast and without a progress bar) when `out` ends in `.binary`
    or `.bin`, else ARPA text."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lmplz = kenlm_binary("lmplz")
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        n = 0
        with open(corpus, "w", encoding="utf-8") as f:
            for line in normalized_lines(texts):
                f.write(line + "\n")
                n += 1
        if n == 0:
            raise InputError("the reference corpus has no text to train a language model on")
        tmp_out = out.with_name(f".{out.name}.tmp")  # beside `out`: the final rename is atomic, nothing is copied
        try:
            with open(corpus, "rb") as fin, open(tmp_out, "wb") as fout:
                lmplz_cmd = [lmplz, "-o", order, "-S", memory, "-T", tmp, "--discount_fallback"]
                _run_kenlm(lmplz_cmd, "the reference corpus", stdin=fin, stdout=fout)
            if out.suffix in (".binary", ".bin"):
                arpa, tmp_out = tmp_out, out.with_name(f".{out.name}.bin.tmp")
                try:
                    _run_kenlm([kenlm_binary("build_binary"), arpa, tmp_out], "the trained model")
                finally:
                    arpa.unlink(missing_ok=True)
            os.replace(tmp_out, out)
        except InputError:
            tmp_out.unlink(missing_ok=True)
            raise
    return out


def _run_kenlm(cmd: list, what: str, **kw) -> None:
    p = subprocess.run([str(c) for c in cmd], stderr=subprocess.PIPE, **kw)
    if p.returncode != 0:
        tail = p.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise InputError(f"{Path(str(cmd[0])).name} failed on {what}: {tail[0]}")


def document_perplexity(model, text: str) -> float:
    """CCNet's document perplexity: 10 ** (-sum of log10 P over the normalized lines / their tokens + one </s>
    per line)."""
    log10, words = 0.0, 0
    for line in normalized_lines([text]):
        log10 += model.score(line, bos=True, eos=True)
        words += len(line.split()) + 1
    return 10 ** (-log10 / words) if words else float("inf")


class KenLMPerplexity(BaseFilter):
    """Perplexity buckets (head < `cutoffs[0]` <= middle < `cutoffs[1]` <= tail); keeps the buckets in `keep`."""

    name = "📉 KenLM perplexity"

    def __init__(self, model: str, cutoffs: tuple[float, float] = (340.0, 520.0), keep=("head", "middle")) -> None:
        super().__init__()
        if not Path(model).is_file():
            raise ConfigError(f"kenlm_perplexity.model: {model} does not exist (train one: camelid data train-lm)")
        self.model_path, self.cutoffs, self.keep = str(model), tuple(cutoffs), set(keep)
        self._model = None

    def filter(self, doc):
        if self._model is None:
            import kenlm

            self._model = kenlm.Model(self.model_path)
        ppl = document_perplexity(self._model, doc.text)
        bucket = "head" if ppl < self.cutoffs[0] else "middle" if ppl < self.cutoffs[1] else "tail"
        doc.metadata["perplexity"], doc.metadata["perplexity_bucket"] = round(ppl, 2), bucket
        return bucket in self.keep or (False, f"perplexity_{bucket}")


def _classifier_line(text: str) -> str:
    return " ".join(normalized_lines([text]))


def train_quality_classifier(
    reference: Iterable[str],
    random_pages: Iterable[str],
    out: str | Path,
    epochs: int = 25,
    lr: float = 0.5,
    seed: int = 0,
) -> Path:
    """fastText supervised model: label `reference` for reference-like pages, `random` for the others."""
    import fasttext

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        train = Path(tmp) / "train.txt"
        counts = {"reference": 0, "random": 0}
        with open(train, "w", encoding="utf-8") as f:
            for label, docs in (("reference", reference), ("random", random_pages)):
                for text in docs:
                    line = _classifier_line(text)
                    if line:
                        f.write(f"__label__{label} {line}\n")
                        counts[label] += 1
        if min(counts.values()) == 0:
            raise InputError(f"the classifier needs documents of both kinds; got {counts}")
        model = fasttext.train_supervised(str(train), epoch=epochs, lr=lr, wordNgrams=2, seed=seed, thread=1, verbose=0)
        tmp_out = Path(tmp) / "model.bin"
        model.save_model(str(tmp_out))
        shutil.move(str(tmp_out), out)
    return out


class QualityClassifier(BaseFilter):
    """Keeps documents whose P(reference) from the fastText classifier is at least `threshold`."""

    name = "🏷 quality classifier"

    def __init__(self, model: str, threshold: float = 0.25) -> None:
        super().__init__()
        if not Path(model).is_file():
            raise ConfigError(
                f"quality_classifier.model: {model} does not exist (train one: camelid data train-classifier)"
            )
        self.model_path, self.threshold = str(model), threshold
        self._model = None

    def filter(self, doc):
        if self._model is None:
            import fasttext

            fasttext.FastText.eprint = lambda *a, **k: None
            self._model = fasttext.load_model(self.model_path)
        labels, probs = self._model.predict(_classifier_line(doc.text) or " ", k=2)
        p = dict(zip((lab.removeprefix("__label__") for lab in labels), map(float, probs))).get("reference", 0.0)
        doc.metadata["reference_prob"] = round(p, 4)
        return p >= self.threshold or (False, "low_quality_score")
