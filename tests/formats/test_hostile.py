"""Hostile or broken files: one `error:` line naming the file, exit 2, no traceback, nothing executed."""

import os
import shutil
import struct
import subprocess
import sys

import torch

from camelid.formats.convert import convert


def camelid(*args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run([sys.executable, "-m", "camelid", *args], capture_output=True, text=True, env=env)


def assert_error(proc, needle):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
    assert needle in lines[0], lines[0]


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_would_run_code(tmp_path, debug_checkpoint):
    meta = convert(debug_checkpoint, tmp_path / "meta", to="meta")
    marker = tmp_path / "pwned"
    torch.save({"tok_embeddings.weight": torch.zeros(1), "evil": Payload(str(marker))}, meta / "consolidated.00.pth")
    assert_error(camelid("generate", "--model", str(meta), "--prompt", "x"), "consolidated.00.pth")
    assert not marker.exists()


def test_gguf_bad_magic_and_truncated(tmp_path, debug_checkpoint):
    good = convert(debug_checkpoint, tmp_path / "m.gguf", to="gguf", quant="F32")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUX" + good.read_bytes()[4:])
    assert_error(camelid("generate", "--model", str(bad), "--prompt", "x"), "bad.gguf")
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size - 5000])
    assert_error(camelid("generate", "--model", str(cut), "--prompt", "x"), "cut.gguf")


def test_safetensors_header_claims_more_than_the_file(tmp_path, debug_checkpoint):
    hf = convert(debug_checkpoint, tmp_path / "hf", to="hf")
    data = (hf / "model.safetensors").read_bytes()
    (hf / "model.safetensors").write_bytes(struct.pack("<Q", len(data) * 4) + data[8:])
    assert_error(camelid("generate", "--model", str(hf), "--prompt", "x"), "model.safetensors")


def test_meta_shards_with_mismatched_shapes(tmp_path, debug_checkpoint):
    meta = convert(debug_checkpoint, tmp_path / "meta", to="meta", shards=2)
    part = torch.load(meta / "consolidated.01.pth", weights_only=True)
    part["layers.0.attention.wo.weight"] = torch.zeros(7, 5)
    torch.save(part, meta / "consolidated.01.pth")
    assert_error(camelid("generate", "--model", str(meta), "--prompt", "x"), "consolidated.01.pth")
    shutil.rmtree(meta)
