"""A release: everything a model file carries, in one bundle that every format reads into and writes from.

`Release` holds the shape (`ModelArgs`), the weights in camelid's names (a tied model stores no
`output.weight`: `canonical_state` is the one place that decides), the tokenizer with its special ids,
the chat template, generation defaults and metadata such as the name and the licence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from camelid.errors import CheckpointError
from camelid.lazy import torch
from camelid.model.args import ModelArgs

# Metadata is keyed by GGUF's `general.*` names without the prefix (name, license, license.link, languages,
# size_label, ...); these describe the file itself and are rewritten by every writer instead of carried.
FILE_KEYS = ("architecture", "alignment", "file_type", "quantization_version")
_KEY = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)*$")


@dataclass
class SpecialTokens:
    """The ids a tokenizer treats specially, and whether it adds BOS to every encoding."""

    bos_id: int | None
    eos_id: int | None
    pad_id: int | None
    stop_ids: tuple[int, ...]
    """eos plus the end-of-turn ids (`<|im_end|>`, `<|eot_id|>`) that end a reply."""
    add_bos: bool


def special_tokens(tokenizer) -> SpecialTokens:
    return SpecialTokens(
        tokenizer.bos_id,
        tokenizer.eos_id,
        tokenizer.pad_id,
        tuple(sorted(tokenizer.stop_ids)),
        bool(getattr(tokenizer, "add_bos", False)),
    )


@dataclass
class Release:
    args: ModelArgs
    state: dict[str, torch.Tensor]
    tokenizer: Any
    chat_template: str | None = None
    generation: dict[str, Any] = field(default_factory=dict)
    """Sampling defaults the model ships with (temperature, top_p, top_k, max_new_tokens)."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Name, licence, authors, languages, ... (GGUF's `general.*` keys without the prefix)."""
    format: str = "camelid"
    source: Path | None = None
    quantized: dict[str, Any] = field(default_factory=dict)
    """Weights held packed (`QuantizedWeight`, camelid's portable int8/int4 layout), by camelid name; a tied
    model's embedding stands for its output too."""

    @property
    def special(self) -> SpecialTokens:
        return special_tokens(self.tokenizer)

    def full_state(self) -> dict[str, torch.Tensor]:
        """The weights with `output.weight` present even when tied (for formats that cannot tie)."""
        if self.args.tie_embeddings and "output.weight" not in self.state:
            return {**self.state, "output.weight": self.state["tok_embeddings.weight"]}
        return self.state

    def to(self, dtype: torch.dtype | None) -> Release:
        if dtype is None:
            return self
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in self.state.items()}
        return Release(**{**self.__dict__, "state": state})

    def dense(self) -> Release:
        """The same release with every packed weight dequantized (fp32), for formats that hold only dense ones."""
        if not self.quantized:
            return self
        state = {**self.state, **{k: qw.dequantize() for k, qw in self.quantized.items()}}
        return Release(**{**self.__dict__, "state": state, "quantized": {}})

    def quantize(self, bits: int, group_size: int) -> Release:
        """The same release with its matrices (and the embedding) packed to int8 / int4, one tensor at a time."""
        from camelid.transforms.quant_weight import quantize_state

        dense, quantized = quantize_state(self.dense().state, bits, group_size)
        return Release(**{**self.__dict__, "state": dense, "quantized": quantized})

    def build_model(self, dtype: torch.dtype | None = None, device: str | torch.device = "cpu", consume: bool = False):
        """The model, assigned from the weights: nothing is copied unless a dtype or device change asks for it;
        packed weights become quantized modules (QuantizedLinear / QuantizedEmbedding). With `consume`, the
        release's packed weights are handed over one by one (and the release left without them)."""
        from camelid.model.transformer import Transformer

        with torch.device("meta"):
            model = Transformer(self.args)
        state = self.state
        if dtype is not None or str(device) != "cpu":
            state = {k: v.to(device=device, dtype=dtype if v.is_floating_point() else None) for k, v in state.items()}
        model.load_state_dict(state, strict=not (self.args.tie_embeddings or self.quantized), assign=True)
        if self.quantized:
            from camelid.transforms.quantize import install

            packed = self.quantized if consume else dict(self.quantized)
            install(model, packed, device, tied=self.args.tie_embeddings, consume=consume)
        model.tie_weights()
        return model.eval()


def expected_shapes(args: ModelArgs) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape for a model of `args` (tied embeddings store no `output.weight`)."""
    from camelid.model.transformer import Transformer

    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in Transformer(args).state_dict().items()}
    if args.tie_embeddings:
        expected.pop("output.weight")
    return expected


class _Shape:
    """Stands for a packed weight in the shape checks."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = tuple(shape)

    def numel(self) -> int:
        return int(torch.Size(self.shape).numel())


def canonical_state(
    args: ModelArgs, state: dict[str, torch.Tensor], source: str | Path, quantized: dict | None = None
) -> dict[str, torch.Tensor]:
    """`state` checked tensor by tensor against the shapes `args` implies (packed weights by their shapes), with a
    tied model's `output.weight` dropped (it must equal the embedding). Every reader ends here; the dense tensors
    come back."""
    state = dict(state)
    if quantized:
        overlap = set(state) & set(quantized)
        if overlap:
            raise CheckpointError(f"{source}: tensor {sorted(overlap)[0]!r} is stored both dense and quantized")
        state.update({k: _Shape(qw.shape) for k, qw in quantized.items()})
    if args.tie_embeddings and "output.weight" in state:
        out = state.pop("output.weight")
        emb = state.get("tok_embeddings.weight")
        same = out is emb or (isinstance(out, torch.Tensor) and isinstance(emb, torch.Tensor) and torch.equal(out, emb))
        if emb is not None and (out.shape != emb.shape or not same):
            raise CheckpointError(f"{source}: the model is tied but output.weight differs from the embedding")
    # Counted from the names before any module is built: a config claiming a million layers is refused at once.
    layers = {int(k.split(".")[1]) for k in state if k.startswith("layers.") and k.split(".")[1].isdigit()}
    if len(layers) != args.n_layers or (layers and max(layers) != args.n_layers - 1):
        raise CheckpointError(
            f"{source}: the config says {args.n_layers} layers but the weights hold {len(layers)}; "
            "the config does not describe these weights"
        )
    expected = expected_shapes(args)
    for name, shape in expected.items():
        if name not in state:
            raise CheckpointError(f"{source}: missing tensor {name!r}")
        if tuple(state[name].shape) != shape:
            raise CheckpointError(
                f"{source}: tensor {name!r} has shape {tuple(state[name].shape)}, the model's config implies {shape}"
            )
    extra = sorted(set(state) - set(expected))
    if extra:
        raise CheckpointError(f"{source}: unexpected tensor {extra[0]!r} for this model's config")
    return {k: v for k, v in state.items() if not isinstance(v, _Shape)}


def check_vocab(args: ModelArgs, tokenizer, source: str | Path) -> None:
    if tokenizer.vocab_size > args.vocab_size:
        raise CheckpointError(
            f"{source}: the tokenizer has {tokenizer.vocab_size} entries but the model only "
            f"{args.vocab_size} embeddings"
        )


def clean_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """The metadata a file can hold: lower-case dotted keys, strings, numbers and lists of strings."""
    out = {}
    for k, v in meta.items():
        if not isinstance(k, str) or not _KEY.match(k) or k in FILE_KEYS:
            continue
        if isinstance(v, (str, int, float)) and not isinstance(v, bool) and v != "":
            out[k] = v
        elif isinstance(v, (list, tuple)) and v and all(isinstance(x, str) for x in v):
            out[k] = list(v)
    return out
