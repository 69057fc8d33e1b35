"""camelid against `transformers`' LlamaForCausalLM: same weights moved by camelid's own name map and q/k
permutation, fp32 on CPU. Logits within 1e-5 and greedy generation token for token."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from camelid.formats.hf import from_hf_state_dict, to_hf_config, to_hf_state_dict  # noqa: E402
from camelid.generate import GREEDY, generate_ids  # noqa: E402
from camelid.model import ModelArgs, RopeScaling, build_model  # noqa: E402

BASE = dict(dim=64, n_layers=2, n_heads=4, vocab_size=320, multiple_of=16, max_seq_len=256, norm_eps=1e-5)
CONFIGS = {
    "mha": ModelArgs(**BASE),
    "gqa-1kv": ModelArgs(**BASE, n_kv_heads=1),
    "gqa-2kv": ModelArgs(**BASE, n_kv_heads=2),
    "tied": ModelArgs(**BASE, n_kv_heads=2, tie_embeddings=True),
    "llama3.1-rope": ModelArgs(
        **{**BASE, "max_seq_len": 1024},
        n_kv_heads=2,
        rope_theta=500000.0,
        rope_scaling=RopeScaling(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_seq_len=64),
    ),
    "head-dim-override": ModelArgs(**{**BASE, "dim": 48}, n_kv_heads=2, head_dim=16, hidden_dim=100),
}


def hf_model(args: ModelArgs, state: dict) -> "transformers.LlamaForCausalLM":
    cfg = to_hf_config(args)
    keep = {k: v for k, v in cfg.items() if k not in ("architectures", "model_type", "torch_dtype", "rope_scaling")}
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**keep)).eval()
    result = model.load_state_dict(to_hf_state_dict(state, args), strict=False)
    assert not result.unexpected_keys
    assert result.missing_keys == (["lm_head.weight"] if args.tie_embeddings else [])
    return model


@pytest.mark.parametrize("name", CONFIGS)
def test_logits_match_transformers(name):
    args = CONFIGS[name]
    model = build_model(args, seed=1).eval()
    # Larger weights than the N(0, 0.02) init give logits with real spread, so the check has teeth.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(5)
    hf = hf_model(args, model.state_dict())
    x = torch.randint(0, args.vocab_size, (3, 200 if name != "llama3.1-rope" else 700))
    with torch.no_grad():
        ours, theirs = model(x), hf(x).logits
    assert ours.std() > 0.1
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_hf_state_dict_round_trip_is_exact():
    args = CONFIGS["gqa-2kv"]
    state = build_model(args, seed=2).state_dict()
    back = from_hf_state_dict(to_hf_state_dict(state, args), args)
    assert set(back) == set(state)
    assert all(torch.equal(back[k], state[k]) for k in state)


@pytest.mark.parametrize("name", ["gqa-2kv", "tied"])
def test_greedy_generation_matches_transformers(name):
    args = CONFIGS[name]
    model = build_model(args, seed=3).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(8)
    hf = hf_model(args, model.state_dict())
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, args.vocab_size, (n,), generator=g).tolist() for n in (5, 11, 8)]
    new = 24
    for batch in ([prompts[0]], prompts):
        rows, _ = generate_ids(model, batch, new, GREEDY)
        P = max(map(len, batch))
        ids = torch.tensor([[0] * (P - len(p)) + p for p in batch])
        attn = torch.tensor([[0] * (P - len(p)) + [1] * len(p) for p in batch])
        with torch.no_grad():
            out = hf.generate(
                input_ids=ids,
                attention_mask=attn,
                max_new_tokens=new,
                min_new_tokens=new,
                do_sample=False,
                pad_token_id=0,
                eos_token_id=None,
            )
        theirs = out[:, P:].tolist()
        ours = [r.ids for r in rows]
        assert ours == theirs
        assert len(set(ours[0])) > 3  # not a degenerate repetition of one token
