"""Chat: the model's own chat template (Jinja, as Hugging Face and llama.cpp render it), history, streaming."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from camelid.errors import InputError
from camelid.generate.sampling import SamplingParams
from camelid.generate.text import generate

# For models that ship no template (a base model pretrained with camelid): a plain transcript.
PLAIN_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] }}\n\n"
    "{% else %}{{ m['role'] | capitalize }}: {{ m['content'] }}\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def render(template: str, messages: list[dict[str, str]], add_generation_prompt: bool = True, **extra) -> str:
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(msg: str):
        raise InputError(f"chat template: {msg}")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt, **extra)
    except TemplateError as e:
        raise InputError(f"the model's chat template failed: {e}") from None


@dataclass
class ChatSession:
    """A conversation: `send(text)` renders the whole history with the template and generates the reply."""

    model: object
    tokenizer: object
    template: str | None = None
    system: str | None = None
    params: SamplingParams = field(default_factory=lambda: SamplingParams(temperature=0.7, top_p=0.9))
    max_new_tokens: int = 256
    seed: int | None = None
    messages: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.system:
            self.messages.append({"role": "system", "content": self.system})

    def prompt(self) -> str:
        tok = self.tokenizer
        bos = tok.id_to_piece(tok.bos_id) if getattr(tok, "bos_id", None) is not None else ""
        eos = tok.id_to_piece(tok.eos_id) if getattr(tok, "eos_id", None) is not None else ""
        return render(self.template or PLAIN_TEMPLATE, self.messages, bos_token=bos, eos_token=eos)

    def send(self, text: str, on_text: Callable[[str], None] | None = None) -> str:
        self.messages.append({"role": "user", "content": text})
        stop = [] if self.template else ["\nUser:"]
        results, _ = generate(
            self.model,
            self.tokenizer,
            [self.prompt()],
            max_new_tokens=self.max_new_tokens,
            params=self.params,
            stop=stop,
            seed=self.seed,
            on_text=None if on_text is None else (lambda row, d: on_text(d)),
        )
        reply = results[0].text.strip()
        self.messages.append({"role": "assistant", "content": reply})
        return reply

    def reset(self) -> None:
        self.messages = [m for m in self.messages if m["role"] == "system"]
