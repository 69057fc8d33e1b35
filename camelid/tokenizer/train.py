"""Train a SentencePiece BPE tokenizer the way LLaMA's was trained (SPEC section 4)."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from camelid.errors import TokenizerError

log = logging.getLogger(__name__)

# The trainer settings of LLaMA's tokenizer.model: BPE, digits split, byte fallback, identity normalisation,
# whitespace kept as written, ids unk 0 / bos 1 / eos 2 and no pad.
LLAMA_TRAINER_OPTIONS = dict(
    model_type="bpe",
    character_coverage=0.99995,
    split_digits=True,
    byte_fallback=True,
    split_by_unicode_script=True,
    split_by_whitespace=True,
    split_by_number=True,
    allow_whitespace_only_pieces=True,
    max_sentencepiece_length=16,
    normalization_rule_name="identity",
    add_dummy_prefix=True,
    remove_extra_whitespaces=False,
    unk_id=0,
    bos_id=1,
    eos_id=2,
    pad_id=-1,
    max_sentence_length=4192,
    hard_vocab_limit=True,
)


def train_tokenizer(
    inputs: list[str | Path],
    out_dir: str | Path,
    vocab_size: int = 32000,
    input_sentence_size: int = 2_000_000,
    num_threads: int | None = None,
) -> Path:
    """Train on the lines of `inputs`; write `out_dir/tokenizer.model` atomically and return its path."""
    import sentencepiece

    paths = [Path(p) for p in inputs]
    if not paths:
        raise TokenizerError("no input files given; pass --input FILE...")
    for p in paths:
        if not p.is_file():
            raise TokenizerError(f"input file {p} does not exist")
        if p.stat().st_size == 0:
            raise TokenizerError(f"input file {p} is empty")
    if vocab_size < 300:
        raise TokenizerError(f"--vocab-size {vocab_size} is too small: byte fallback alone needs 259 ids")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".train-") as tmp:
        prefix = Path(tmp) / "tokenizer"
        try:
            sentencepiece.SentencePieceTrainer.train(
                input=",".join(str(p) for p in paths),
                model_prefix=str(prefix),
                vocab_size=vocab_size,
                input_sentence_size=input_sentence_size,
                shuffle_input_sentence=True,
                num_threads=num_threads or os.cpu_count() or 1,
                minloglevel=2,
                **LLAMA_TRAINER_OPTIONS,
            )
        except RuntimeError as e:
            reason = str(e).strip().splitlines()[-1]
            raise TokenizerError(f"tokenizer training failed for --vocab-size {vocab_size}: {reason}") from None
        target = out_dir / "tokenizer.model"
        os.replace(prefix.with_suffix(".model"), target)
        shutil.move(str(prefix.with_suffix(".vocab")), out_dir / "tokenizer.vocab")
    log.info("wrote %s (%d pieces)", target, vocab_size)
    return target
