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
            "288",
        ],
    )
    assert cfg.training.micro_batch == 8 and cfg.optimizer.lr == 1e-3 and cfg.training.compile is True
    assert cfg.job.name == "run x" and cfg.model.overrides == {"n_layers": 2, "dim": 288}
    assert cfg.data.seq_len == 128
    assert cfg.to_dict()["model"] == {"preset": "tiny", "n_layers": 2, "dim": 288}


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


# One wrong value per ModelArgs field; before, [model] overrides skipped the checker and failed minutes later
# inside the trainer (`--model.norm_eps abc` was accepted).
WRONG_MODEL_VALUES = {
    "dim": "abc",
    "n_layers": 2.5,
    "n_heads": True,
    "n_kv_heads": "four",
    "vocab_size": -1,
    "multiple_of": "x",
    "ffn_dim_multiplier": "x",
    "hidden_dim": 0,
    "head_dim": "x",
    "norm_eps": "abc",
    "rope_theta": "x",
    "rope_scaling": "x",
    "max_seq_len": 1.5,
    "tie_embeddings": "yes",
}


def test_every_model_field_is_checked_at_load():
    import dataclasses

    from camelid.model.args import ModelArgs

    assert set(WRONG_MODEL_VALUES) == {f.name for f in dataclasses.fields(ModelArgs)}
    for name, value in WRONG_MODEL_VALUES.items():
        raw = f'"{value}"' if isinstance(value, str) else str(value).lower()
        with pytest.raises(ConfigError, match=f"model.{name}|rope_scaling"):
            load_config(None, [f"--model.{name}", raw])


def test_model_overrides_build_the_model_args():
    cfg = load_config(None, ["--model.n_layers", "2", "--model.rope_scaling", "{factor = 4.0, rope_type = 'linear'}"])
    args = cfg.model_args()
    assert args.n_layers == 2 and args.rope_scaling.factor == 4.0 and args.rope_scaling.rope_type == "linear"


def test_config_paths_are_relative_to_the_file_and_overrides_to_the_shell(tmp_path):
    d = tmp_path / "configs" / "train"
    d.mkdir(parents=True)
    (d / "c.toml").write_text(
        '[job]\nrun_dir = "../../runs/x"\n[data]\ntrain = [{path = "../../data/a", weight = 1.0}]\n'
        'val = ["../../data/val"]\ntokenizer = "/abs/tok.model"\n'
    )
    cfg = load_config(d / "c.toml")
    assert cfg.job.run_dir == str(tmp_path / "runs/x")
    assert cfg.data.train[0]["path"] == str(tmp_path / "data/a") and cfg.data.val == [str(tmp_path / "data/val")]
    assert cfg.data.tokenizer == "/abs/tok.model"
    assert load_config(d / "c.toml", ["--job.run_dir", "here"]).job.run_dir == "here"


def test_a_bad_job_fails_before_the_process_group_starts(monkeypatch):
    import camelid.train.trainer as T

    monkeypatch.setattr(T, "init_distributed", lambda *a: pytest.fail("the process group started"))
    with pytest.raises(ConfigError, match="data.seq_len"):
        T.Trainer(load_config(None, ["--model.preset", "debug", "--data.seq_len", "100000", "--training.device=cpu"]))


def test_a_data_recipe_goes_through_the_same_checker(tmp_path):
    from camelid.data.pipeline.recipe import load_recipe

    (tmp_path / "raw").mkdir()
    recipe = tmp_path / "r.toml"
    base = '[output]\ndir = "out"\ntokenizer = "t.model"\n{extra}\n'
    base += '[[sources]]\nname = "a"\nreader = "jsonl"\npath = "raw"\n'
    recipe.write_text(base.format(extra=""))
    assert load_recipe(recipe).tasks == 1
    for extra, needle in [
        ('shard_tokens = "big"', "output.shard_tokens must be an integer, got 'big'"),
        ("tasks = true", "output.tasks must be an integer, got True"),
        ("val_fraction = 'x'", "output.val_fraction must be a number, got 'x'"),
    ]:
        recipe.write_text(base.format(extra=extra))
        with pytest.raises(ConfigError, match=needle):
            load_recipe(recipe)
