"""Generation: a decoder that owns its KV cache (prefill, a compiled decode step with sampling inside), batching,
stop rules, streaming text, chat."""

from camelid.generate.decoder import Decoder, decoder_for, release_caches
from camelid.generate.engine import GenerationStats, generate_ids, score_ids
from camelid.generate.sampling import DEFAULT_TEMPERATURE, DEFAULT_TOP_P, GREEDY, SamplingParams, sample, sample_rows
from camelid.generate.text import GenerationResult, TextStream, generate

__all__ = [
    "DEFAULT_TEMPERATURE",
    "DEFAULT_TOP_P",
    "GREEDY",
    "Decoder",
    "GenerationResult",
    "GenerationStats",
    "SamplingParams",
    "TextStream",
    "decoder_for",
    "generate",
    "generate_ids",
    "release_caches",
    "sample",
    "sample_rows",
    "score_ids",
]
