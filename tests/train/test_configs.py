"""The shipped training configs parse, name real presets and give a valid batch plan."""

from pathlib import Path

import pytest

from camelid.config import load_config
from camelid.model import preset
from camelid.train.trainer import plan_batches

CONFIGS = sorted((Path(__file__).parents[2] / "configs" / "train").glob("*.toml"))


def test_every_size_has_a_config():
    names = {p.stem for p in CONFIGS}
    assert {"llama-7b", "llama-13b", "llama-33b", "llama-65b", "tiny", "125m", "350m", "1b"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_is_valid(path):
    cfg = load_config(path)
    args = cfg.model_args()
    assert args == preset(cfg.model.preset)
    assert cfg.data.seq_len <= args.max_seq_len
    plan = plan_batches(cfg, dp=8 if cfg.model.preset.startswith("llama") else 1)
    assert plan.steps > 0
    weights = [s["weight"] for s in cfg.data.train]
    assert sum(weights) == pytest.approx(1.0)
    if cfg.model.preset.startswith("llama"):
        # Table 2: 4M-token batches; 1.0T tokens for 7B/13B and 1.4T for 33B/65B; lr 3e-4 / 1.5e-4
        assert cfg.training.global_batch_tokens == 4 * 2**20 and cfg.data.seq_len == 2048
        big = cfg.model.preset in ("llama-33b", "llama-65b")
        assert cfg.training.tokens == (1.4e12 if big else 1.0e12)
        assert cfg.optimizer.lr == (1.5e-4 if big else 3e-4)
