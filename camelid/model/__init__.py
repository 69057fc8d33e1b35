"""The LLaMA model family: hyper-parameters, presets and the decoder itself."""

from camelid.model.args import PRESETS, ModelArgs, RopeScaling, param_count, preset
from camelid.model.transformer import Transformer, build_model

__all__ = ["PRESETS", "ModelArgs", "RopeScaling", "Transformer", "build_model", "param_count", "preset"]
