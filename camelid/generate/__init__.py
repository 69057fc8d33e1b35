"""Generation: static KV cache, pure prefill/decode/sample functions, batching, stop rules, streaming."""

from camelid.generate.engine import GenerationStats, decode_one_token, generate_ids, prefill, score_ids
from camelid.generate.sampling import SamplingParams, sample
from camelid.generate.text import GenerationResult, TextStream, generate

__all__ = [
    "GenerationResult",
    "GenerationStats",
    "SamplingParams",
    "TextStream",
    "decode_one_token",
    "generate",
    "generate_ids",
    "prefill",
    "sample",
    "score_ids",
]
