"""Tokenize text documents into token shards (`<bos> tokens <eos>` per document)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from camelid.data.shards import ShardWriter
from camelid.tokenizer import Tokenizer


def tokenize_documents(
    docs: Iterable[str],
    tokenizer: Tokenizer,
    out_dir: str | Path,
    shard_tokens: int = 50_000_000,
    name: str = "part",
    tokenizer_name: str = "camelid",
) -> dict:
    """Write shards `out_dir/{name}_00000.ds`, ... of about `shard_tokens` tokens each; returns counts."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shard, writer, docs_n, tokens = 0, None, 0, 0
    for text in docs:
        if writer is None:
            writer = ShardWriter(out / f"{name}_{shard:05d}.ds", tokenizer.vocab_size, tokenizer_name)
        ids = tokenizer.encode(text, bos=True, eos=True)
        writer.write(ids)
        docs_n += 1
        tokens += len(ids)
        if writer.tokens >= shard_tokens:
            writer.close()
            writer, shard = None, shard + 1
    if writer is not None:
        writer.close()
        shard += 1
    return {"documents": docs_n, "tokens": tokens, "shards": shard}
