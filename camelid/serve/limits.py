"""What one request may ask of `camelid serve` (no torch: the CLI's --help reads the defaults)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from camelid.errors import InputError


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server, each checked before any model work (`camelid serve --max-*`)."""

    max_body_bytes: int = 16 * 2**20
    """Bytes of one request body (413 past it)."""
    max_prompts: int = 64
    """Prompts in one completions request (400)."""
    max_prompt_bytes: int = 256 * 2**10
    """UTF-8 bytes of one prompt, before it is tokenized (4 per token id given as ids; a chat's messages
    together); 413."""
    max_rows: int = 64
    """Sequences generated at once: prompts x n (400)."""
    request_timeout: float = 600.0
    """Seconds a request may wait for and hold the model; then it stops with a 503 (max_tokens alone is capped
    to the context, which on a CPU can still be minutes)."""
    stream_write_timeout: float = 10.0
    """Seconds a streaming client may leave the server's bounded send buffer full before the request is
    cancelled and the model freed for the others."""
    stream_buffer_bytes: int = 256 * 2**10
    """The send buffer of a streaming connection: output a slow reader may fall behind by."""
    backlog: int = 128
    """Connections the listening socket queues before accepting them."""
    slots: int = 16
    """Sequences decoded together (continuous batching): rows of the KV cache, allocated at start-up."""
    max_queue: int = 64
    """Sequences waiting for a slot; a request that would pass it gets a 429."""
    max_context: int = 2048
    """Positions of each KV-cache row (the model's own context when smaller): prompt plus output per sequence.
    The cache holds slots x max_context positions of every layer's keys and values."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not value > 0:
                raise InputError(f"--{f.name.replace('_', '-')} must be > 0, got {value}")
