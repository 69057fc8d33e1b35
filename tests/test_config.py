import pytest

from camelid.config import load_config
from camelid.errors import ConfigError


def test_toml_and_overrides(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[model]\npreset = "tiny"\nn_layers = 2\n[training]\nmicro_batch = 4\n[data]\nseq_len = 128\n')
    cfg = load_config(
        p,
        [
            "--training.micro_batch",
            "8",
            "--optimizer.lr=1e-3",
            "--training.compile",
            "true",
            "--job.name",
            "run x",
            "--model.dim",
            "256",
        ],
    )
    assert cfg.training.micro_batch == 8 and cfg.optimizer.lr == 1e-3 and cfg.training.compile is True
    assert cfg.job.name == "run x" and cfg.model.overrides == {"n_layers": 2, "dim": 256}
    assert cfg.data.seq_len == 128
    assert cfg.to_dict()["model"] == {"preset": "tiny", "n_layers": 2, "dim": 256}


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (["--training.micro_batch", "x"], "training.micro_batch must be an integer, got 'x'"),
        (["--training.precision", "fp16"], "training.precision must be one of"),
        (["--nosuch.key", "1"], "unknown config key 'nosuch.key'"),
        (["--model.dimension", "1"], "unknown config key 'model.dimension'"),
        (["--training.steps"], "needs a value"),
        (["stray"], "unexpected argument 'stray'"),
    ],
)
def test_bad_values_name_the_key(overrides, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        load_config(None, overrides)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "none.toml")
    (tmp_path / "bad.toml").write_text("[training\nsteps=")
    with pytest.raises(ConfigError, match="bad.toml is not valid TOML"):
        load_config(tmp_path / "bad.toml")
