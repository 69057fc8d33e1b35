"""The `camelid` command. Thin: parse arguments, call a stage, print its result."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from pathlib import Path

from camelid.cli_args import build_parser
from camelid.errors import CamelidError, InputError
from camelid.runtime import torch_dtype

log = logging.getLogger("camelid")


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
    api_key = a.api_key or os.environ.get("CAMELID_API_KEY") or None
    if a.host not in ("127.0.0.1", "localhost", "::1") and api_key is None:
        log.warning("serving on %s without --api-key: anyone who can reach the port can use the model", a.host)
    try:  # the port first, so that a busy one fails before the model loads
        server = make_server(None, a.host, a.port, limits.backlog, api_key)
    except OSError as e:
        raise InputError(f"cannot listen on {a.host}:{a.port}: {e.strerror}; choose another --port") from None
    loaded = _load(a)
    engine = Engine(loaded.model, loaded.tokenizer, a.name or a.model, loaded.chat_template, limits)
    server.RequestHandlerClass.engine = engine
    host, port = server.server_address[:2]
    full = loaded.model.args.max_seq_len
    context = f"context {engine.context}" + (f" of the model's {full}" if engine.context < full else "")
    slots = f"{limits.slots} slots, queue {limits.max_queue}"
    auth = ", API key required" if api_key else ""
    print(f"serving '{engine.name}' ({loaded.format}, {context}, {slots}{auth}) on http://{host}:{port}/v1", flush=True)
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


COMMANDS = {
    "info": cmd_info,
    "tokenizer_train": cmd_tokenizer_train,
    "tokenizer_encode": cmd_tokenizer_encode,
    "generate": cmd_generate,
    "chat": cmd_chat,
    "serve": cmd_serve,
    "eval": cmd_eval,
    "data_prepare": cmd_data_prepare,
    "data_train_lm": cmd_data_train_lm,
    "data_train_classifier": cmd_data_train_classifier,
    "score": cmd_score,
    "init": cmd_init,
    "train": cmd_train,
    "convert": cmd_convert,
    "quantize": cmd_quantize,
    "quickstart": cmd_quickstart,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "takes_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return COMMANDS[args.run](args, extra) if getattr(args, "takes_overrides", False) else COMMANDS[args.run](args)
    except CamelidError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
