"""Chat: the model's own chat template rendered as transformers and llama.cpp render it, encoded in one place.

Templates come from model files, so they are untrusted code: they run in Jinja's immutable sandbox with
bounds on what one rendering may do (ranges and repeated strings or lists, total loop budget, output size,
time), each a one-line error. `chat_ids` renders a conversation and encodes it the way transformers'
`apply_chat_template(tokenize=True)` does: special-token text parsed, no BOS added on top of the template's.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

from camelid.errors import InputError

# For models that ship no template (a base model pretrained with camelid): a plain transcript.
PLAIN_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] }}\n\n"
    "{% else %}{{ m['role'] | capitalize }}: {{ m['content'] }}\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)
PLAIN_STOP = ["\nUser:"]


@dataclass(frozen=True)
class TemplateLimits:
    max_output_chars: int = 4_000_000
    max_items: int = 200_000
    """Elements one rendering may make with range() or by repeating a string or list."""
    max_seconds: float = 5.0


class _Budget:
    def __init__(self, limits: TemplateLimits) -> None:
        self.limits, self.items, self.deadline = limits, 0, time.monotonic() + limits.max_seconds

    def spend(self, n: int) -> None:
        self.items += n
        if self.items > self.limits.max_items:
            raise InputError(
                f"the chat template made more than {self.limits.max_items:,} items (range or repetition); refused"
            )
        self.tick()

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise InputError(f"the chat template ran longer than {self.limits.max_seconds:g} s; refused")


_RENDERING = threading.local()  # the budget of the rendering running on this thread


@lru_cache(maxsize=32)
def _environment_and_template(template: str):
    import jinja2
    from jinja2 import nodes
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from jinja2.utils import Namespace

    class GenerationTag(Extension):
        """transformers' `{% generation %}...{% endgeneration %}` (marks assistant text): renders its body."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    class Env(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset(["*", "**"])

        @property
        def budget(self) -> _Budget | None:
            return getattr(_RENDERING, "budget", None)

        def call_binop(self, context, operator, left, right):
            b = self.budget
            if operator == "**" and isinstance(right, (int, float)) and abs(right) > 64:
                raise InputError(f"the chat template raised a number to the power {right}; refused")
            if operator == "*":
                for seq, n in ((left, right), (right, left)):
                    if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and b is not None:
                        b.spend(len(seq) * max(n, 0))
            return super().call_binop(context, operator, left, right)

        def getattr(self, obj, attribute):
            if self.budget is not None:
                self.budget.tick()
            return super().getattr(obj, attribute)

        def getitem(self, obj, argument):
            if self.budget is not None:
                self.budget.tick()
            return super().getitem(obj, argument)

    class TemplateNamespace(Namespace):
        def __init__(*args, **kwargs):
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for name in attrs:
                TemplateNamespace._check(name)
            Namespace.__init__(self, attrs)

        def __setitem__(self, name, value):
            TemplateNamespace._check(name)
            Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check(name):
            if isinstance(name, str) and name.startswith("_"):
                raise InputError(f"the chat template set the private name {name!r} on a namespace; refused")

    env = Env(trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, "jinja2.ext.loopcontrols"])

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def bounded_range(*args):
        r = range(*args)
        if env.budget is not None:
            env.budget.spend(len(r))
        return r

    env.filters["tojson"] = tojson
    env.globals.update(
        raise_exception=raise_exception,
        strftime_now=lambda fmt: datetime.now().strftime(fmt),
        namespace=TemplateNamespace,
        range=bounded_range,
        dict=lambda *a, **k: dict(*a, **k),
    )
    try:
        return env, env.from_string(template)
    except jinja2.exceptions.TemplateSyntaxError as e:
        raise InputError(f"the chat template does not parse: {e.message} (line {e.lineno})") from None


def render(
    template: str,
    messages: list[dict[str, Any]],
    add_generation_prompt: bool = True,
    limits: TemplateLimits = TemplateLimits(),
    **extra: Any,
) -> str:
    """The conversation as text, rendered by `template` with the variables transformers passes (messages,
    add_generation_prompt, tools, the special-token strings in `extra`)."""
    import jinja2

    env, compiled = _environment_and_template(template)
    budget = _Budget(limits)
    _RENDERING.budget = budget
    out: list[str] = []
    size = 0
    try:
        for chunk in compiled.generate(messages=messages, add_generation_prompt=add_generation_prompt, **extra):
            size += len(chunk)
            if size > limits.max_output_chars:
                raise InputError(f"the chat template's output exceeds {limits.max_output_chars:,} characters; refused")
            budget.tick()
            out.append(chunk)
    except InputError:
        raise
    except jinja2.exceptions.TemplateError as e:
        raise InputError(f"the model's chat template failed: {e}") from None
    except (RecursionError, MemoryError, OverflowError) as e:
        raise InputError(f"the model's chat template failed: {type(e).__name__}") from None
    except Exception as e:  # a template calling a method wrongly (TypeError, ...) is the template's fault
        raise InputError(f"the model's chat template failed: {type(e).__name__}: {e}") from None
    finally:
        _RENDERING.budget = None
    return "".join(out)


def special_strings(tokenizer) -> dict[str, str]:
    """bos_token, eos_token, pad_token, unk_token as text, as transformers passes them to templates."""
    out = {}
    for name in ("bos", "eos", "pad", "unk"):
        i = getattr(tokenizer, f"{name}_id", None)
        if i is not None:
            out[f"{name}_token"] = tokenizer.id_to_piece(i)
    return out


def chat_text(tokenizer, template: str | None, messages: list[dict[str, Any]], add_generation_prompt: bool = True):
    return render(template or PLAIN_TEMPLATE, messages, add_generation_prompt, **special_strings(tokenizer))


def chat_ids(tokenizer, template: str | None, messages: list[dict[str, Any]], add_generation_prompt: bool = True):
    """Token ids of a conversation: rendered, then encoded with special-token text parsed and no BOS added by
    the tokenizer (the template writes `{{ bos_token }}` itself where the model wants one)."""
    text = chat_text(tokenizer, template, messages, add_generation_prompt)
    return tokenizer.encode(text, bos=False, special=True)


def chat_stop(template: str | None) -> list[str]:
    """Stop strings a conversation needs beyond the tokenizer's stop ids (a template-less model's transcript)."""
    return [] if template else list(PLAIN_STOP)


@dataclass
class ChatSession:
    """A conversation: `send(text)` renders the whole history with the template and generates the reply.

    When the history outgrows the context, the oldest turns (after any system message) are dropped and
    `dropped` counts them."""

    model: object
    tokenizer: object
    template: str | None = None
    system: str | None = None
    params: Any = None
    max_new_tokens: int = 256
    seed: int | None = None
    messages: list[dict[str, str]] = field(default_factory=list)
    dropped: int = 0
    interrupted: bool = False

    def __post_init__(self) -> None:
        from camelid.generate.sampling import SamplingParams

        if self.params is None:
            self.params = SamplingParams()
        if self.system:
            self.messages.append({"role": "system", "content": self.system})

    def prompt(self) -> str:
        return chat_text(self.tokenizer, self.template, self.messages)

    def prompt_ids(self) -> list[int]:
        """The history's ids, dropping the oldest exchanges until the prompt leaves room for a reply."""
        context = self.model.args.max_seq_len
        room = min(self.max_new_tokens, context // 2)
        while True:
            ids = chat_ids(self.tokenizer, self.template, self.messages)
            start = 1 if self.messages and self.messages[0]["role"] == "system" else 0
            if len(ids) + room <= context or len(self.messages) - start <= 1:
                return ids
            del self.messages[start : start + (2 if len(self.messages) - start > 2 else 1)]
            self.dropped += 1

    def send(self, text: str, on_text: Callable[[str], None] | None = None) -> str:
        """The reply to `text`, streamed through `on_text`. Ctrl-C (KeyboardInterrupt) while it is generated stops
        the reply, not the conversation: what was shown is kept as the reply and `interrupted` is set."""
        from camelid.generate.text import generate_from_ids

        self.messages.append({"role": "user", "content": text})
        ids = self.prompt_ids()
        shown: list[str] = []

        def stream(row: int, delta: str) -> None:
            shown.append(delta)
            if on_text is not None:
                on_text(delta)

        self.interrupted = False
        try:
            results, _ = generate_from_ids(
                self.model,
                self.tokenizer,
                [ids],
                max_new_tokens=self.max_new_tokens,
                params=self.params,
                stop=chat_stop(self.template),
                seed=self.seed,
                on_text=stream,
            )
            reply = results[0].text.strip()
        except KeyboardInterrupt:
            self.interrupted = True
            reply = "".join(shown).strip()
        self.messages.append({"role": "assistant", "content": reply})
        return reply

    def reset(self) -> None:
        self.messages = [m for m in self.messages if m["role"] == "system"]
