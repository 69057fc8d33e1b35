"""The LLaMA model family: hyper-parameters, presets and the decoder itself.

`camelid.model.args` needs no torch; the model's names import torch on first use."""

from camelid.lazy import lazy_exports

_HOME = {
    "PRESETS": "args",
    "ModelArgs": "args",
    "RopeScaling": "args",
    "param_count": "args",
    "preset": "args",
    "Transformer": "transformer",
    "build_model": "transformer",
}
__getattr__ = lazy_exports(__name__, _HOME)
__all__ = sorted(_HOME)
