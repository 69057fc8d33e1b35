"""Batched log-likelihoods and generation for evaluation (the three request types lm-eval defines).

Continuations are tokenized the way lm-eval does it (trailing context spaces move to the continuation;
the continuation's ids are those of context + continuation after the context's), so camelid's harness
and lm-eval give the same numbers on the same model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from camelid.generate import GREEDY, SamplingParams, generate


class Evaluator:
    def __init__(self, model, tokenizer, batch_size: int = 16, max_length: int | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length or model.args.max_seq_len
        self.device = model.device

    # -- tokenization ---------------------------------------------------------------------------------------

    def _prefix(self) -> list[int]:
        """The ids every scored sequence starts with (BOS where the tokenizer adds one, else nothing)."""
        return self.tokenizer.encode("")

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        n = len(context) - len(context.rstrip())
        if n:
            context, continuation = context[:-n], context[-n:] + continuation
        whole = self.tokenizer.encode(context + continuation)
        ctx = self.tokenizer.encode(context)
        if not context:  # an empty context: condition on BOS (or EOS when the tokenizer has no BOS)
            start = self.tokenizer.bos_id if self.tokenizer.bos_id is not None else self.tokenizer.eos_id
            return [start], whole[len(ctx) :]
        return ctx, whole[len(ctx) :]

    # -- scoring --------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def _score_token_lists(self, items: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """(sum of log P(continuation tokens), whether greedy decoding would produce them) per item.

        Items whose model input is the same (a context followed by different one-token continuations, as
        in MMLU's " A"/" B"/" C"/" D") share one forward pass."""
        inputs: dict[tuple[int, ...], int] = {}
        plan = []
        for ctx, cont in items:
            full = (ctx + cont)[-(self.max_length + 1) :]
            inp = tuple(full[:-1])
            row = inputs.setdefault(inp, len(inputs))
            plan.append((row, len(inp) - len(cont), cont))
        unique = list(inputs)
        order = sorted(range(len(unique)), key=lambda i: -len(unique[i]))
        needed: dict[int, list[int]] = {}
        for k, (row, _, _) in enumerate(plan):
            needed.setdefault(row, []).append(k)
        results = [None] * len(items)
        for b in range(0, len(order), self.batch_size):
            idx = order[b : b + self.batch_size]
            width = max(len(unique[i]) for i in idx)
            x = torch.zeros((len(idx), width), dtype=torch.long, device=self.device)
            for r, i in enumerate(idx):
                x[r, : len(unique[i])] = torch.tensor(unique[i])  # right padding: causal attention ignores it
            h = self.model.hidden(x)  # (B, T, dim): logits are made for the continuation rows only, below
            for r, i in enumerate(idx):
                for k in needed[i]:
                    _, start, cont = plan[k]
                    lp = torch.log_softmax(self.model.head(h[r, start : start + len(cont)]).float(), dim=-1)
                    target = torch.tensor(cont, device=self.device)
                    results[k] = (float(lp.gather(-1, target[:, None]).sum()), bool((lp.argmax(-1) == target).all()))
            del h
        return results  # type: ignore[return-value]

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[tuple[float, bool]]:
        return self._score_token_lists([self.encode_pair(c, x) for c, x in requests])

    def loglikelihood_rolling(self, texts: Sequence[str]) -> list[float]:
        """log P(text) over the whole text, in windows of the model's context (each token predicted once)."""
        out = []
        L = self.max_length
        for text in texts:
            prefix = self._prefix() or [self.tokenizer.eos_id]
            tokens = prefix + self.tokenizer.encode(text, bos=False)
            items = []
            for s in range(len(prefix), len(tokens), L):
                e = min(len(tokens), s + L)
                ctx_start = max(0, e - 1 - L)
                items.append((tokens[ctx_start:s], tokens[s:e]))
            out.append(sum(lp for lp, _ in self._score_token_lists(items)))
        return out

    def generate_until(
        self,
        prompts: Sequence[str],
        stop: Sequence[str],
        max_new_tokens: int = 256,
        params: SamplingParams = GREEDY,
        seed: int | None = 0,
    ) -> list[str]:
        """Continuations of `prompts` until a stop string; a prompt longer than the context minus
        `max_new_tokens` keeps its last tokens (as lm-eval does)."""
        max_new_tokens = min(max_new_tokens, self.max_length // 2)
        outs: list[str] = []
        for b in range(0, len(prompts), self.batch_size):
            results, _ = generate(
                self.model,
                self.tokenizer,
                list(prompts[b : b + self.batch_size]),
                max_new_tokens=max_new_tokens,
                params=params,
                stop=stop,
                seed=seed,
                max_prompt_tokens=self.max_length - max_new_tokens,
            )
            outs.extend(r.text for r in results)
        return outs


def perplexity(evaluator: Evaluator, text: str) -> dict[str, float]:
    """Token perplexity and bits per byte of a text (its log-likelihood from `loglikelihood_rolling`)."""
    (ll,) = evaluator.loglikelihood_rolling([text])
    n_tokens = len(evaluator.tokenizer.encode(text, bos=False))
    n_bytes = len(text.encode("utf-8"))
    return {
        "loglikelihood": ll,
        "tokens": n_tokens,
        "bytes": n_bytes,
        "perplexity": math.exp(-ll / n_tokens),
        "bits_per_byte": -ll / math.log(2) / n_bytes,
    }
