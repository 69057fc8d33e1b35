"""Bit-exact round trips between camelid's format, Hugging Face, Meta (1, 2, 4 shards) and GGUF F32."""

import json

import pytest
import torch

from camelid.formats import detect_format, load, load_weights
from camelid.formats.convert import convert
from camelid.formats.native import save_native
from camelid.model import ModelArgs, build_model


@pytest.fixture(scope="module")
def random_checkpoint(tokenizer_path, tmp_path_factory):
    # 8 heads / 4 kv heads and widths divisible by 4, so Meta's 4-way split applies to every sharded tensor
    args = ModelArgs(
        dim=64, n_layers=2, n_heads=8, n_kv_heads=4, vocab_size=2000, multiple_of=32, max_seq_len=128, norm_eps=1e-5
    )
    model = build_model(args, seed=11)
    return save_native(tmp_path_factory.mktemp("rt") / "src", model.state_dict(), args, tokenizer_path)


def assert_same(a: dict, b: dict):
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def test_camelid_hf_meta_camelid(random_checkpoint, tmp_path):
    _, args, state, _, _ = load_weights(random_checkpoint)
    hf = convert(random_checkpoint, tmp_path / "hf", to="hf")
    assert detect_format(hf) == "hf" and (hf / "model.safetensors").is_file()
    for shards in (1, 2, 4):
        meta = convert(hf, tmp_path / f"meta{shards}", to="meta", shards=shards)
        assert detect_format(meta) == "meta"
        assert len(list(meta.glob("consolidated.*.pth"))) == shards
        back = convert(meta, tmp_path / f"back{shards}", to="camelid")
        _, args2, state2, _, _ = load_weights(back)
        assert args2.ffn_hidden == args.ffn_hidden and args2.kv_heads == args.kv_heads
        assert (args2.dim, args2.n_layers, args2.n_heads, args2.norm_eps) == (64, 2, 8, 1e-5)
        assert_same(state, state2)
    # a 2-way shard really is split: wq by rows, wo by columns, norms replicated
    s0 = torch.load(tmp_path / "meta2" / "consolidated.00.pth", weights_only=True)
    assert s0["layers.0.attention.wq.weight"].shape == (32, 64)
    assert s0["layers.0.attention.wo.weight"].shape == (64, 32)
    assert s0["tok_embeddings.weight"].shape == (2000, 32)
    assert s0["norm.weight"].shape == (64,)


def test_hf_checkpoint_runs_in_transformers(random_checkpoint, tmp_path):
    transformers = pytest.importorskip("transformers")
    hf = convert(random_checkpoint, tmp_path / "hf", to="hf")
    theirs = transformers.LlamaForCausalLM.from_pretrained(hf).eval()
    ours = load(random_checkpoint).model
    x = torch.randint(0, 2000, (2, 30))
    with torch.no_grad():
        torch.testing.assert_close(theirs(x).logits, ours(x), atol=1e-5, rtol=1e-5)


def test_sharded_hf_checkpoint(random_checkpoint, tmp_path):
    from camelid.formats.hf import save_hf

    _, args, state, _, _ = load_weights(random_checkpoint)
    save_hf(tmp_path / "hf", state, args, None, max_shard_bytes=200_000)
    index = json.loads((tmp_path / "hf" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    from camelid.formats.hf import load_hf

    args2, state2 = load_hf(tmp_path / "hf")
    assert_same(state, state2)


def test_camelid_gguf_camelid(random_checkpoint, tmp_path):
    _, args, state, tok, _ = load_weights(random_checkpoint)
    gguf_path = convert(random_checkpoint, tmp_path / "m.gguf", to="gguf", quant="F32")
    assert detect_format(gguf_path) == "gguf"
    back = convert(gguf_path, tmp_path / "back", to="camelid")
    _, args2, state2, tok2, _ = load_weights(back)
    assert_same(state, state2)
    assert args2.n_kv_heads == args.n_kv_heads and args2.ffn_hidden == args.ffn_hidden
    text = "def f(x):\n    return 42  # ok こんにちは"
    assert tok2.encode(text) == tok.encode(text)


@pytest.mark.parametrize("quant,tol", [("F16", 2e-3), ("BF16", 1e-2), ("Q8_0", 2e-2)])
def test_gguf_16bit_and_q8(random_checkpoint, tmp_path, quant, tol):
    _, _, state, _, _ = load_weights(random_checkpoint)
    path = convert(random_checkpoint, tmp_path / f"m-{quant}.gguf", to="gguf", quant=quant)
    _, _, state2, _, _ = load_weights(path)
    for k, v in state.items():
        err = (state2[k].float() - v.float()).abs().max().item()
        assert err <= tol * max(1.0, v.abs().max().item()), (k, err)
