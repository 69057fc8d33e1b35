"""llama.cpp's own converter and loader on camelid's exports: convert_hf_to_gguf.py (from the llama-cpp-python
sdist) converts camelid's Hugging Face folders, llama.cpp runs camelid's GGUF files, and the metadata camelid
writes is a superset of what llama.cpp's converter writes for the same model."""

import subprocess
import sys

import numpy as np
import pytest
import torch

llama_cpp = pytest.importorskip("llama_cpp")

from camelid.formats import read, write  # noqa: E402
from camelid.formats.release import Release  # noqa: E402
from camelid.model import ModelArgs, RopeScaling, build_model  # noqa: E402

# Keys that describe how a file was made (and so differ by design): the writer's own choices.
MADE_BY = {"GGUF.kv_count", "GGUF.tensor_count", "GGUF.version", "general.file_type", "general.quantization_version"}


def their_converter(src, hf_dir, out):
    proc = subprocess.run(
        [sys.executable, str(src / "convert_hf_to_gguf.py"), str(hf_dir), "--outfile", str(out), "--outtype", "f32"],
        capture_output=True,
        text=True,
        cwd=src,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def llama_logits(path, ids):
    llm = llama_cpp.Llama(
        model_path=str(path), n_ctx=512, n_threads=2, n_batch=512, logits_all=True, verbose=False,
        type_k=0, type_v=0,  # F32 KV cache
    )  # fmt: skip
    llm.reset()
    llm.eval(ids)
    return torch.tensor(np.array(llm.scores[: len(ids)]), dtype=torch.float32)


def keys(path):
    import gguf

    r = gguf.GGUFReader(str(path))
    return {k: r.fields[k].contents() for k in r.fields}


@pytest.fixture(scope="module")
def embedded_release():
    return read("smollm2-135m")


def test_their_converter_on_our_hf_export_of_the_embedded_model(embedded_release, llama_cpp_src, tmp_path):
    hf = write(embedded_release, tmp_path / "hf", "hf")
    theirs = their_converter(llama_cpp_src, hf, tmp_path / "theirs.gguf")
    ours = write(embedded_release, tmp_path / "ours.gguf", "gguf", quant="F32")
    k_theirs, k_ours = keys(theirs), keys(ours)
    missing = sorted(set(k_theirs) - set(k_ours) - MADE_BY)
    print(f"llama.cpp's converter wrote {len(k_theirs)} keys, camelid {len(k_ours)}; missing from camelid's: {missing}")
    assert not missing
    differ = [k for k in set(k_theirs) & set(k_ours) - MADE_BY if k_theirs[k] != k_ours[k]]
    assert not differ, differ
    # their file, read by camelid, is the same release
    back = read(theirs)
    assert back.chat_template == embedded_release.chat_template
    assert back.special == embedded_release.special
    assert back.metadata["license"] == "apache-2.0"
    for k, v in embedded_release.state.items():
        assert torch.equal(back.state[k], v), k


def gqa_release(tokenizer, **changes) -> Release:
    args = ModelArgs(
        dim=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=32, vocab_size=tokenizer.vocab_size, multiple_of=32,
        max_seq_len=512, norm_eps=1e-5, **changes,
    )  # fmt: skip
    model = build_model(args, seed=3)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(4)  # larger weights than init, so the comparison has teeth
    return Release(args, model.state_dict(), tokenizer, None, {}, {"name": "gqa-test", "license": "mit"})


@pytest.mark.parametrize("scaling", [None, RopeScaling(factor=4.0, high_freq_factor=2.0, original_max_seq_len=64)])
def test_gqa_model_with_explicit_head_dim(tokenizer_path, llama_cpp_src, tmp_path, scaling):
    """head_dim 32 with dim 64 / 4 heads: llama.cpp needs the key/value length keys. With Llama 3.1's scaling
    (original context 64) the 200-token input runs past the original context in both programs."""
    from camelid.tokenizer import load_tokenizer

    release = gqa_release(load_tokenizer(tokenizer_path), rope_scaling=scaling)
    ids = [1] + torch.randint(3, release.args.vocab_size, (199,), generator=torch.Generator().manual_seed(0)).tolist()
    with torch.no_grad():
        want = release.build_model()(torch.tensor([ids]))[0]
    ours = write(release, tmp_path / "ours.gguf", "gguf", quant="F32")
    got = llama_logits(ours, ids)
    print(f"camelid's GGUF in llama.cpp ({'llama3 rope' if scaling else 'plain rope'}): largest logit difference "
          f"{float((got - want).abs().max()):.2e}")  # fmt: skip
    torch.testing.assert_close(got, want, atol=2e-3, rtol=0)
    hf = write(release, tmp_path / "hf", "hf")
    theirs = their_converter(llama_cpp_src, hf, tmp_path / "theirs.gguf")
    torch.testing.assert_close(llama_logits(theirs, ids), want, atol=2e-3, rtol=0)
    back = read(theirs)  # llama.cpp's file: the scaling comes back from its rope_freqs tensor alone
    assert back.args.canonical() == release.args.canonical()
    with torch.no_grad():
        torch.testing.assert_close(back.build_model()(torch.tensor([ids]))[0], want, atol=1e-5, rtol=0)
    missing = sorted(set(keys(theirs)) - set(keys(ours)) - MADE_BY)
    assert not missing, missing
