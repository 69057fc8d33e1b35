"""The Python API: `camelid.load(name_or_path)` gives a `Model` whose methods take and return plain values.

    import camelid
    m = camelid.load("smollm2-135m")
    print(m.generate("The capital of France is", max_new_tokens=8, temperature=0))

Sampling defaults are camelid's one set (`camelid.generate.DEFAULT_TEMPERATURE`, `DEFAULT_TOP_P`), the same as
`camelid generate`, `camelid chat` and the server's; an unseeded call never touches the process-wide RNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from camelid.errors import InputError
from camelid.generate.sampling import DEFAULT_TEMPERATURE, DEFAULT_TOP_P, SamplingParams


class Model:
    """A loaded model and its release (tokenizer, chat template, special ids); `loaded` is the full
    `camelid.formats.LoadedModel` for code that wants the torch module (`m.loaded.model`)."""

    def __init__(self, loaded: Any, name: str) -> None:
        self.loaded = loaded
        self.name = name

    @property
    def tokenizer(self):
        return self.loaded.tokenizer

    @property
    def context(self) -> int:
        return self.loaded.model.args.max_seq_len

    def __repr__(self) -> str:
        return f"camelid.Model({self.name!r}, format={self.loaded.format}, context={self.context})"

    def generate(
        self,
        prompt: str | Sequence[str],
        max_new_tokens: int = 128,
        temperature: float = DEFAULT_TEMPERATURE,
        top_p: float = DEFAULT_TOP_P,
        top_k: int | None = None,
        stop: str | Sequence[str] = (),
        seed: int | None = None,
    ) -> str | list[str]:
        """The continuation of `prompt` (a str gives a str; a list of prompts, run as one batch, a list)."""
        from camelid.generate.text import generate

        one = isinstance(prompt, str)
        prompts = [prompt] if one else list(prompt)
        if not all(isinstance(p, str) for p in prompts):
            raise InputError("generate() takes a prompt string or a list of prompt strings")
        results, _ = generate(
            self.loaded.model,
            self.tokenizer,
            prompts,
            max_new_tokens=max_new_tokens,
            params=SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p),
            stop=[stop] if isinstance(stop, str) else list(stop),
            seed=seed,
        )
        texts = [r.text for r in results]
        return texts[0] if one else texts

    def chat(
        self,
        messages: str | Sequence[dict[str, str]],
        max_new_tokens: int = 256,
        temperature: float = DEFAULT_TEMPERATURE,
        top_p: float = DEFAULT_TOP_P,
        top_k: int | None = None,
        seed: int | None = None,
    ) -> str:
        """The assistant's reply to a conversation (OpenAI-style `[{"role": ..., "content": ...}]`, or one user
        message as a str), rendered with the model's own chat template."""
        from camelid.generate.chat import chat_ids, chat_stop
        from camelid.generate.text import generate_from_ids

        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        messages = list(messages)
        if not messages or not all(isinstance(m, dict) and "role" in m and "content" in m for m in messages):
            raise InputError("chat() takes a str or a non-empty list of {'role': ..., 'content': ...} messages")
        template = self.loaded.chat_template
        ids = chat_ids(self.tokenizer, template, messages)
        results, _ = generate_from_ids(
            self.loaded.model,
            self.tokenizer,
            [ids],
            max_new_tokens=max_new_tokens,
            params=SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p),
            stop=chat_stop(template),
            seed=seed,
        )
        return results[0].text.strip()

    def score(self, text: str) -> float:
        """log P(text) in nats: the sum over its tokens after the first (BOS where the tokenizer adds one)."""
        return sum(lp for _, lp in self.token_logprobs(text))

    def token_logprobs(self, text: str) -> list[tuple[str, float]]:
        """(token text, log P(token | the tokens before it)) for each token of `text` after the first."""
        from camelid.generate.engine import score_ids

        ids = self.tokenizer.encode(text)
        if len(ids) < 2:
            raise InputError(f"{text!r} encodes to fewer than 2 tokens; there is nothing to score")
        lps = score_ids(self.loaded.model, ids)
        return [(self.tokenizer.decode([i]), lp) for i, lp in zip(ids[1:], lps)]


def load(
    name_or_path: str = "smollm2-135m",
    dtype: str | None = None,
    device: str | None = None,
    quant: str | None = None,
    group_size: int | None = None,
) -> Model:
    """Load a model by embedded name (`smollm2-135m`) or path (camelid, Hugging Face or Meta directory, .gguf
    file). `dtype` ("float32", "bfloat16", "float16"; default as stored), `device` (default cuda when there is
    one), `quant` and `group_size` as in `camelid generate --help`. On a terminal, says what it loads on stderr."""
    import sys

    from camelid.runtime import load_model

    loaded = load_model(name_or_path, dtype, device, quant, group_size, announce=sys.stderr.isatty())
    return Model(loaded, str(name_or_path))
