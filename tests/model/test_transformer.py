import torch

from camelid.model import build_model, preset
from camelid.model.rope import apply_rotary, inverse_frequencies


def test_forward_shapes_and_meta_build():
    args = preset("debug")
    model = build_model(args, seed=0)
    x = torch.randint(0, args.vocab_size, (2, 17))
    assert model(x).shape == (2, 17, args.vocab_size)
    meta = build_model(preset("llama-65b"), device="meta")
    assert next(meta.parameters()).device.type == "meta"


def test_state_dict_uses_meta_names():
    names = set(build_model(preset("debug")).state_dict())
    for n in [
        "tok_embeddings.weight",
        "norm.weight",
        "output.weight",
        "layers.0.attention.wq.weight",
        "layers.1.feed_forward.w3.weight",
        "layers.0.attention_norm.weight",
        "layers.0.ffn_norm.weight",
    ]:
        assert n in names
    assert not any("rope" in n or "inv_freq" in n for n in names)


def test_init_is_seeded():
    a = build_model(preset("debug"), seed=3).state_dict()
    b = build_model(preset("debug"), seed=3).state_dict()
    c = build_model(preset("debug"), seed=4).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["tok_embeddings.weight"], c["tok_embeddings.weight"])


def test_tied_embeddings_share_storage():
    model = build_model(preset("debug").replace(tie_embeddings=True))
    assert model.output.weight is model.tok_embeddings.weight


def test_rotary_matches_complex_multiplication():
    # Meta's reference: view adjacent pairs as complex numbers and multiply by e^{i * pos * freq}.
    hd, T = 16, 9
    x = torch.randn(1, T, 2, hd)
    freqs = inverse_frequencies(hd, 10000.0)
    angles = torch.arange(T).float()[:, None] * freqs
    ref = torch.view_as_real(
        torch.view_as_complex(x.unflatten(-1, (-1, 2))) * torch.polar(torch.ones_like(angles), angles)[None, :, None, :]
    ).flatten(-2)
    out = apply_rotary(x, angles.cos()[None], angles.sin()[None])
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-6)


def test_rope_scaling_only_changes_low_frequencies():
    from camelid.model import RopeScaling

    plain = inverse_frequencies(128, 500000.0)
    scaled = inverse_frequencies(128, 500000.0, RopeScaling())
    assert torch.equal(plain[:10], scaled[:10])  # high frequencies (short wavelengths) untouched
    torch.testing.assert_close(scaled[-1], plain[-1] / 8)  # the lowest frequency divided by the factor


def test_bf16_model_keeps_fp32_rope():
    model = build_model(preset("debug"), dtype=torch.bfloat16)
    x = torch.randint(0, 512, (1, 8))
    assert model(x).dtype == torch.bfloat16
    assert model.rope.inv_freq(torch.device("cpu")).dtype == torch.float32
