import dataclasses

import pytest

from camelid.errors import ConfigError
from camelid.model import PRESETS, ModelArgs, build_model, param_count, preset

# shared/SPEC.md section 1: exact parameter counts of the paper's four sizes.
PAPER_COUNTS = {
    "llama-7b": 6_738_415_616,
    "llama-13b": 13_015_864_320,
    "llama-33b": 32_528_943_616,
    "llama-65b": 65_285_660_672,
}
# Published counts of the released checkpoints (sum of the tensors in Meta's / HF's files).
RELEASED_COUNTS = {
    "llama2-7b": 6_738_415_616,
    "llama2-13b": 13_015_864_320,
    "llama2-70b": 68_976_648_192,
    "llama3-8b": 8_030_261_248,
    "llama3-70b": 70_553_706_496,
    "llama3.1-8b": 8_030_261_248,
}


@pytest.mark.parametrize("name,count", {**PAPER_COUNTS, **RELEASED_COUNTS}.items())
def test_preset_parameter_counts(name, count):
    args = preset(name)
    assert param_count(args) == count
    model = build_model(args, device="meta")  # the formula and the real module agree
    assert sum(p.numel() for p in model.parameters()) == count


def test_paper_formula_and_shapes():
    # N = L*(4d^2 + 3dh + 2d) + 2Vd + d, with the FFN widths of SPEC's table.
    for name, h in [("llama-7b", 11008), ("llama-13b", 13824), ("llama-33b", 17920), ("llama-65b", 22016)]:
        a = preset(name)
        assert a.ffn_hidden == h and a.head_size == 128 and a.vocab_size == 32000 and a.max_seq_len == 2048
        n = a.n_layers * (4 * a.dim**2 + 3 * a.dim * h + 2 * a.dim) + 2 * a.vocab_size * a.dim + a.dim
        assert n == PAPER_COUNTS[name]
    assert preset("llama2-70b").ffn_hidden == 28672
    assert preset("llama3-8b").ffn_hidden == 14336


def test_small_presets_sizes():
    assert 10e6 <= param_count(preset("tiny")) <= 20e6
    assert param_count(preset("debug")) < 1e6
    # 125m and 1b are the shapes of shared/bench's baseline (134,105,856 and 1,261,529,088 parameters).
    assert param_count(preset("125m")) == 134_105_856
    assert param_count(preset("1b")) == 1_261_529_088


def test_unknown_preset_lists_valid_names():
    with pytest.raises(ConfigError) as e:
        preset("llama-8b")
    msg = str(e.value)
    assert "llama-8b" in msg
    for name in PRESETS:
        assert name in msg


def test_from_dict_is_strict():
    d = preset("debug").to_dict()
    assert ModelArgs.from_dict(d) == preset("debug")
    bad = dict(d)
    del bad["n_heads"]
    with pytest.raises(ConfigError, match="missing model key 'n_heads'"):
        ModelArgs.from_dict(bad, source="x.json")
    with pytest.raises(ConfigError, match="unknown model key 'n_head'"):
        ModelArgs.from_dict({**d, "n_head": 4})
    with pytest.raises(ConfigError, match="n_kv_heads"):
        dataclasses.replace(preset("debug"), n_kv_heads=3)


def test_rope_scaling_round_trips():
    a = preset("llama3.1-8b")
    assert ModelArgs.from_dict(a.to_dict()) == a
