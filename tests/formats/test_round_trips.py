"""Every release format to every other: the whole release survives (weights bit-exact, tokenizer ids on a fixed
text set, special ids, chat template, RoPE scaling, metadata), for a SentencePiece and a byte-level BPE model."""

import json
import os
import stat

import pytest
import torch

from camelid.formats import detect_format, load, read, write
from camelid.formats.convert import convert
from camelid.formats.release import Release
from camelid.model import ModelArgs, RopeScaling, build_model

FORMATS = ("camelid", "hf", "meta", "gguf")
TEXTS = [
    "def f(x):\n    return 42  # ok こんにちは",
    "In 2023, LLaMA 🦙 ran on one GPU.",
    "  two spaces, a\ttab and a\nnewline  ",
    "",
]
TEMPLATE = "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
META = {"name": "round-trip test", "license": "apache-2.0", "organization": "camelid", "languages": ["en", "fr"]}


def make_release(tokenizer, tie: bool, scaling: RopeScaling | None, seed: int) -> Release:
    # 8 heads / 4 kv heads and widths divisible by 4, so Meta's 4-way split applies to every sharded tensor
    args = ModelArgs(
        dim=64, n_layers=2, n_heads=8, n_kv_heads=4, vocab_size=tokenizer.vocab_size, multiple_of=32,
        max_seq_len=256, norm_eps=1e-5, tie_embeddings=tie, rope_scaling=scaling,
    )  # fmt: skip
    state = build_model(args, seed=seed).state_dict()
    if tie:
        state.pop("output.weight")
    return Release(args, state, tokenizer, TEMPLATE, {"temperature": 0.6, "top_p": 0.9}, dict(META))


@pytest.fixture(scope="module")
def spm_tokenizer(tokenizer_path):
    from camelid.tokenizer import load_tokenizer

    return load_tokenizer(tokenizer_path)


@pytest.fixture(scope="module")
def bpe_tokenizer():
    """SmolLM2's byte-level BPE vocabulary (49,152 tokens, the `smollm` pre-tokenizer), from the embedded GGUF."""
    from camelid.formats import resolve
    from camelid.formats.gguf_format import _reader, read_tokenizer

    return read_tokenizer(_reader(resolve("smollm2-135m")), resolve("smollm2-135m"))


def ext(fmt: str) -> str:
    return ".gguf" if fmt == "gguf" else ""


def assert_same_release(a: Release, b: Release, src: str, dst: str):
    where = f"{src} -> {dst}"
    assert a.args.canonical() == b.args.canonical(), where
    assert set(a.state) == set(b.state), where
    for k in a.state:
        assert a.state[k].dtype == b.state[k].dtype and torch.equal(a.state[k], b.state[k]), (where, k)
    for text in TEXTS:
        assert a.tokenizer.encode(text) == b.tokenizer.encode(text), (where, text)
        ids = a.tokenizer.encode(text)
        assert a.tokenizer.decode(ids) == b.tokenizer.decode(ids), (where, text)
    assert a.special == b.special, where
    assert a.chat_template == b.chat_template, where
    # every key survives; a GGUF writer adds the descriptive keys llama.cpp's converter writes (type, size_label)
    assert a.metadata.items() <= b.metadata.items(), where
    assert set(b.metadata) - set(a.metadata) <= {"type", "size_label"}, where
    if {src, dst} <= {"camelid", "hf"}:  # the two formats with a place for sampling defaults
        assert a.generation == b.generation, where


@pytest.mark.parametrize("kind", ["spm", "bpe"])
def test_every_format_to_every_format(kind, spm_tokenizer, bpe_tokenizer, tmp_path):
    tok = spm_tokenizer if kind == "spm" else bpe_tokenizer
    original = make_release(tok, tie=kind == "bpe", scaling=None, seed=3)
    first = {}
    for fmt in FORMATS:
        path = write(original, tmp_path / f"first-{fmt}{ext(fmt)}", fmt, **({"quant": "F32"} if fmt == "gguf" else {}))
        assert detect_format(path) == fmt
        first[fmt] = read(path)
        assert_same_release(original, first[fmt], "memory", fmt)
    for src in FORMATS:
        for dst in FORMATS:
            out = convert(first[src].source, tmp_path / f"{src}-to-{dst}{ext(dst)}", to=dst,
                          quant="F32" if dst == "gguf" else None)  # fmt: skip
            assert_same_release(first[src], read(out), src, dst)


def test_llama31_rope_scaling_survives_hf_and_gguf(spm_tokenizer, tmp_path):
    """camelid -> HF -> GGUF -> camelid with Llama 3.1's rule (short original context, so a 200-token input
    reaches past it): same logits; Meta's params.json cannot hold these parameters and says so."""
    scaling = RopeScaling(factor=4.0, low_freq_factor=1.0, high_freq_factor=2.0, original_max_seq_len=64)
    original = make_release(spm_tokenizer, tie=False, scaling=scaling, seed=5)
    path = write(original, tmp_path / "src", "camelid")
    hf = convert(path, tmp_path / "hf", to="hf")
    cfg = json.loads((hf / "config.json").read_text())
    assert cfg["rope_parameters"]["rope_type"] == "llama3" and cfg["rope_parameters"]["factor"] == 4.0
    gg = convert(hf, tmp_path / "m.gguf", to="gguf", quant="F32")
    back = convert(gg, tmp_path / "back", to="camelid")
    assert read(back).args.rope_scaling == scaling
    x = torch.randint(0, spm_tokenizer.vocab_size, (1, 200))
    with torch.no_grad():
        want, got = load(path).model(x), load(back).model(x)
        plain = load(path).model
        plain.rope.scaling = None
        plain.rope._inv_freq.clear()
        unscaled = plain(x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert (unscaled[0, 100:] - want[0, 100:]).abs().max() > 1e-3  # the scaling really changes these positions
    from camelid.errors import CheckpointError

    with pytest.raises(CheckpointError, match="params.json holds only Llama 3.1"):
        convert(path, tmp_path / "meta", to="meta")


def test_rope_freqs_alone_give_back_llama31_scaling():
    """llama.cpp's converter stores Llama 3.1's rule only as per-frequency factors (rope_freqs): camelid recovers
    parameters that give the same frequencies (Llama 3.1 itself: head_dim 128, theta 500000)."""
    from camelid.formats.gguf_format import llama3_from_factors
    from camelid.model.rope import inverse_frequencies

    want = RopeScaling()  # factor 8, low 1, high 4, original context 8192
    factors = inverse_frequencies(128, 500000.0) / inverse_frequencies(128, 500000.0, want)
    got = llama3_from_factors(factors.tolist(), 128, 500000.0)
    assert got is not None and got.factor == 8.0 and got.original_max_seq_len == 8192
    torch.testing.assert_close(inverse_frequencies(128, 500000.0, got), inverse_frequencies(128, 500000.0, want))
    assert llama3_from_factors([1.0, 3.0, 1.5, 8.0] * 16, 128, 500000.0) is None  # not the rule: refused


def test_head_dim_other_than_dim_over_heads(spm_tokenizer, tmp_path):
    release = make_release(spm_tokenizer, tie=False, scaling=None, seed=2)
    release.args = release.args.replace(head_dim=16)  # 8 heads x 16 = 128 != dim 64
    release.state = build_model(release.args, seed=2).state_dict()
    for fmt in ("camelid", "hf", "gguf"):
        out = write(release, tmp_path / f"hd-{fmt}{ext(fmt)}", fmt, **({"quant": "F32"} if fmt == "gguf" else {}))
        assert read(out).args.canonical() == release.args.canonical(), fmt
    from camelid.errors import CheckpointError

    with pytest.raises(CheckpointError, match="cannot express a head dimension of 16"):
        write(release, tmp_path / "hd-meta", "meta")


def test_hf_checkpoint_runs_in_transformers(spm_tokenizer, tmp_path):
    transformers = pytest.importorskip("transformers")
    release = make_release(spm_tokenizer, tie=False, scaling=None, seed=11)
    src = write(release, tmp_path / "src", "camelid")
    hf = convert(src, tmp_path / "hf", to="hf")
    theirs = transformers.LlamaForCausalLM.from_pretrained(hf).eval()
    ours = load(src).model
    x = torch.randint(0, release.args.vocab_size, (2, 30))
    with torch.no_grad():
        torch.testing.assert_close(theirs(x).logits, ours(x), atol=1e-5, rtol=1e-5)


def test_meta_shards_split_on_the_papers_dimensions(spm_tokenizer, tmp_path):
    release = make_release(spm_tokenizer, tie=False, scaling=None, seed=4)
    for shards in (1, 2, 4):
        meta = write(release, tmp_path / f"meta{shards}", "meta", shards=shards)
        assert len(list(meta.glob("consolidated.*.pth"))) == shards
        back = read(meta)
        assert all(torch.equal(back.state[k], v) for k, v in release.state.items())
    s0 = torch.load(tmp_path / "meta2" / "consolidated.00.pth", weights_only=True)
    assert s0["layers.0.attention.wq.weight"].shape == (32, 64)
    assert s0["layers.0.attention.wo.weight"].shape == (64, 32)
    assert s0["tok_embeddings.weight"].shape == (release.args.vocab_size, 32)
    assert s0["norm.weight"].shape == (64,)


def test_sharded_hf_checkpoint(spm_tokenizer, tmp_path):
    release = make_release(spm_tokenizer, tie=False, scaling=None, seed=4)
    hf = write(release, tmp_path / "hf", "hf", max_shard_bytes=200_000)
    index = json.loads((hf / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    back = read(hf)
    assert all(torch.equal(back.state[k], v) for k, v in release.state.items())


@pytest.mark.parametrize("quant,tol", [("F16", 2e-3), ("BF16", 1e-2), ("Q8_0", 2e-2)])
def test_gguf_16bit_and_q8(spm_tokenizer, tmp_path, quant, tol):
    release = make_release(spm_tokenizer, tie=False, scaling=None, seed=4)
    path = write(release, tmp_path / f"m-{quant}.gguf", "gguf", quant=quant)
    state2 = read(path, quant="none").state
    for k, v in release.state.items():
        err = (state2[k].float() - v.float()).abs().max().item()
        assert err <= tol * max(1.0, v.abs().max().item()), (k, err)


def test_exports_are_readable_by_others(spm_tokenizer, tmp_path):
    """Folders 0755 and files 0644 under umask 022 (the temp files they are built in are private)."""
    old = os.umask(0o022)
    try:
        release = make_release(spm_tokenizer, tie=False, scaling=None, seed=1)
        for fmt in FORMATS:
            out = write(release, tmp_path / f"m-{fmt}{ext(fmt)}", fmt)
            paths = [out, *out.rglob("*")] if out.is_dir() else [out]
            for p in paths:
                mode = stat.S_IMODE(p.stat().st_mode)
                assert mode == (0o755 if p.is_dir() else 0o644), (fmt, p.name, oct(mode))
    finally:
        os.umask(old)


def test_option_for_another_format_is_refused(spm_tokenizer, tmp_path):
    from camelid.errors import CheckpointError

    release = make_release(spm_tokenizer, tie=False, scaling=None, seed=1)
    with pytest.raises(CheckpointError, match="does not apply to the hf format"):
        write(release, tmp_path / "x", "hf", shards=2)
