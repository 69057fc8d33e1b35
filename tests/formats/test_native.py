import json
import os

import pytest
import torch

from camelid.errors import CheckpointError, ConfigError
from camelid.formats import load
from camelid.formats.native import save_native
from camelid.formats.safetensors_io import load_file, save_file
from camelid.model import build_model, preset


def test_round_trip_is_bit_exact(tmp_path, tokenizer_path):
    args = preset("debug").replace(vocab_size=2000, tie_embeddings=True)
    model = build_model(args, seed=7)
    path = save_native(tmp_path / "ck", model.state_dict(), args, tokenizer_path)
    assert sorted(os.listdir(path)) == ["config.json", "model.safetensors", "tokenizer.model"]
    loaded = load(path)
    assert loaded.args == args
    assert loaded.model.output.weight is loaded.model.tok_embeddings.weight
    want = model.state_dict()
    got = loaded.model.state_dict()
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    x = torch.randint(0, 2000, (1, 12))
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model.eval()(x))


def test_bf16_save_and_load(tmp_path, tokenizer_path):
    args = preset("debug").replace(vocab_size=2000)
    model = build_model(args, seed=1)
    path = save_native(tmp_path / "bf", model.state_dict(), args, tokenizer_path, dtype=torch.bfloat16)
    assert json.loads((path / "config.json").read_text())["dtype"] == "bfloat16"
    loaded = load(path)
    assert loaded.model.tok_embeddings.weight.dtype == torch.bfloat16
    assert load(path, dtype=torch.float32).model.norm.weight.dtype == torch.float32


def test_weights_are_memory_mapped(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"a": torch.arange(1000, dtype=torch.float32)}, path)
    t = load_file(path)["a"]
    assert torch.equal(t, torch.arange(1000, dtype=torch.float32))
    maps = open("/proc/self/maps").read()
    assert str(path) in maps  # the tensor is a view of the mapped file, not a copy
    t.add_(1)  # copy-on-write: the file keeps its bytes
    assert torch.equal(load_file(path)["a"], torch.arange(1000, dtype=torch.float32))


def test_safetensors_written_by_us_load_in_the_reference(tmp_path):
    from safetensors.torch import load_file as ref_load
    from safetensors.torch import save_file as ref_save

    tensors = {"x": torch.randn(3, 5), "y": torch.randn(7).to(torch.bfloat16), "z": torch.arange(4)}
    save_file(tensors, tmp_path / "ours.safetensors")
    assert all(torch.equal(ref_load(tmp_path / "ours.safetensors")[k], v) for k, v in tensors.items())
    ref_save(tensors, tmp_path / "ref.safetensors")
    assert all(torch.equal(load_file(tmp_path / "ref.safetensors")[k], v) for k, v in tensors.items())


def test_save_replaces_atomically(tmp_path, tokenizer_path, monkeypatch):
    args = preset("debug").replace(vocab_size=2000)
    path = save_native(tmp_path / "ck", build_model(args, seed=1).state_dict(), args, tokenizer_path)
    before = (path / "model.safetensors").read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("camelid.tokenizer.files.native_files", boom)
    with pytest.raises(OSError):
        save_native(path, build_model(args, seed=2).state_dict(), args, tokenizer_path)
    assert (path / "model.safetensors").read_bytes() == before  # the old checkpoint is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # and no temp directory is left behind


def test_broken_checkpoints_give_one_clear_error(tmp_path, debug_checkpoint):
    import shutil

    def copy(name):
        dst = tmp_path / name
        shutil.copytree(debug_checkpoint, dst)
        return dst

    missing = copy("missing")
    (missing / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors does not exist"):
        load(missing)

    truncated = copy("truncated")
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load(truncated)

    nokey = copy("nokey")
    cfg = json.loads((nokey / "config.json").read_text())
    del cfg["model"]["n_layers"]
    (nokey / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="missing model key 'n_layers'"):
        load(nokey)

    shape = copy("shape")
    cfg = json.loads((shape / "config.json").read_text())
    cfg["model"]["dim"] = 128
    (shape / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="has shape"):
        load(shape)

    with pytest.raises(CheckpointError, match="does not exist"):
        load(tmp_path / "nowhere")
