"""camelid as a model of lm-eval-harness: `--model camelid --model_args model=PATH_OR_NAME[,dtype=,device=,quant=]`
(`quant`: none, int8 or int4, as `camelid eval --quant`; by default a GGUF's quantized types are kept).

lm-eval discovers models only through its own registry, so the bridge is started through this module, which
registers the model and then hands the command line to lm-eval unchanged:

    python -m camelid.eval.lm_eval_bridge run --model camelid --model_args model=smollm2-135m \\
        --tasks arc_easy --include_path my_tasks/ --batch_size 16

(`camelid-lm-eval` is the same program.) Requests are batched by camelid's `Evaluator`: identical model inputs
share one forward pass, and only the continuation rows are normalized.
"""

from __future__ import annotations

import sys

import lm_eval.models  # noqa: F401  (registers lm-eval's own models, so `--model hf` etc. still work here)
import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

from camelid.eval.lm import Evaluator
from camelid.generate import SamplingParams

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@register_model("camelid")
class CamelidLM(LM):
    def __init__(
        self,
        model: str = "smollm2-135m",
        dtype: str | None = None,
        device: str | None = None,
        quant: str | None = None,
        batch_size: int | str = 16,
        max_length: int | None = None,
        max_batch_size: int | None = None,
        **_ignored,
    ) -> None:
        from camelid.formats import load

        super().__init__()
        if dtype is not None and dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        if not device or (device.startswith("cuda") and not torch.cuda.is_available()):
            device = "cuda" if torch.cuda.is_available() else "cpu"  # lm-eval's CLI passes "cuda" by default
        if quant is not None and quant not in ("none", "int8", "int4"):
            raise ValueError(f"quant must be one of none, int8, int4, got {quant!r}")
        loaded = load(model, dtype=DTYPES.get(dtype or ""), device=torch.device(device), quant=quant)
        size = int(batch_size) if str(batch_size).isdigit() else 16  # "auto": camelid's default
        self.ev = Evaluator(loaded.model, loaded.tokenizer, batch_size=size, max_length=max_length and int(max_length))
        self.tokenizer = loaded.tokenizer

    @property
    def tokenizer_name(self) -> str:
        return type(self.tokenizer).__name__

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        out = []
        step = self.ev.batch_size * 8
        for b in tqdm(range(0, len(requests), step), disable=disable_tqdm, desc="loglikelihood"):
            out += self.ev.loglikelihood([r.args for r in requests[b : b + step]])
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """lm-eval's own rolling windows (context_len 1: every token predicted once, with up to max_length tokens
        of context), scored by camelid."""
        prefix = (self.ev._prefix() or [self.tokenizer.eos_id])[0]
        out = []
        for r in tqdm(requests, disable=disable_tqdm, desc="loglikelihood_rolling"):
            (text,) = r.args
            tokens = self.tokenizer.encode(text, bos=False)
            windows = [
                make_disjoint_window(w)
                for w in get_rolling_token_windows(tokens, prefix, self.ev.max_length, context_len=1)
            ]
            out.append(sum(lp for lp, _ in self.ev._score_token_lists(windows)))
        return out

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        out: list[str] = [""] * len(requests)
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(repr(sorted(r.args[1].items())), []).append(i)
        for idx in tqdm(groups.values(), disable=disable_tqdm, desc="generate_until"):
            kw = dict(requests[idx[0]].args[1])
            until = kw.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            do_sample = kw.get("do_sample", False)
            params = SamplingParams(
                temperature=float(kw.get("temperature", 0.0)) if do_sample or kw.get("temperature") else 0.0,
                top_p=float(kw.get("top_p", 1.0) or 1.0),
                top_k=kw.get("top_k"),
            )
            texts = self.ev.generate_until(
                [requests[i].args[0] for i in idx], until, int(kw.get("max_gen_toks", 256)), params
            )
            for i, t in zip(idx, texts):
                out[i] = t
        return out


def main() -> None:
    from lm_eval.__main__ import cli_evaluate

    if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help") and len(sys.argv) == 2:
        print(__doc__)
    cli_evaluate()


if __name__ == "__main__":
    main()
