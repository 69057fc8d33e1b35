"""Forged and broken model files, per reader: each gives one clean error (or, where the file is valid but
unusual, loads), never a traceback, a hang, a read outside the model folder or a payload that runs."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from camelid.formats import read, write
from tests.faults.cases import expect_clean, record

settings.register_profile("faults", max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
settings.load_profile("faults")


@pytest.fixture(scope="module")
def folders(debug_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("valid")
    release = read(debug_checkpoint)
    return {
        "camelid": debug_checkpoint,
        "hf": write(release, root / "hf", "hf"),
        "meta": write(release, root / "meta", "meta", shards=2),
        "gguf": write(release, root / "m.gguf", "gguf", quant="F32"),
    }


def copy(src: Path, dst: Path) -> Path:
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copyfile(src, dst)
    return dst


def load_it(path):
    return lambda: read(path).build_model()


# -- safetensors headers ------------------------------------------------------------------------------------


def with_header(path: Path, header: dict | bytes, pad: bool = True) -> None:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    body = data[8 + n :]
    blob = header if isinstance(header, bytes) else json.dumps(header).encode()
    if pad:
        blob += b" " * (-len(blob) % 8)
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + body)


def header_of(path: Path) -> dict:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n])


def forge(**entry):
    """A forgery that replaces fields of the first tensor's header entry."""

    def apply(h: dict) -> dict:
        name = next(k for k in h if k != "__metadata__")
        fields = {k: (v(h[name]) if callable(v) else v) for k, v in entry.items()}
        return {**h, name: {**h[name], **fields}}

    return apply


SAFETENSORS_FORGERIES = {
    "header_not_json": lambda h: b"{not json",
    "header_a_list": lambda h: b"[1, 2, 3]",
    "dtype_unknown": forge(dtype="F128"),
    "dtype_not_a_string": forge(dtype=7),
    "shape_negative": forge(shape=[-1, 64]),
    "shape_strings": forge(shape=["64", "64"]),
    "shape_not_a_list": forge(shape=64),
    "offsets_reversed": forge(data_offsets=[100, 0]),
    "offsets_past_the_file": forge(data_offsets=lambda e: [10**12, 10**12 + e["data_offsets"][1]]),
    "offsets_floats": forge(data_offsets=[0.5, 4.5]),
    "entry_missing_dtype": lambda h: {**h, next(k for k in h if k != "__metadata__"): {"shape": [1]}},
    "entry_not_an_object": lambda h: {**h, next(k for k in h if k != "__metadata__"): "x"},
    "overlapping_tensors": lambda h: overlap(h),
    "huge_shape": forge(shape=[2**40, 2**40]),
}


def overlap(h: dict) -> dict:
    h = {k: v for k, v in h.items() if k != "__metadata__"}
    names = sorted(h, key=lambda k: h[k]["data_offsets"][0])
    a, b = names[0], names[1]
    span = h[a]["data_offsets"][1] - h[a]["data_offsets"][0]
    if h[b]["dtype"] == h[a]["dtype"] and h[b]["shape"] == h[a]["shape"]:
        h[b] = {**h[b], "data_offsets": [h[a]["data_offsets"][0], h[a]["data_offsets"][0] + span]}
    else:  # make b an alias of a's bytes with a's shape
        h[b] = {**h[a]}
    return h


@pytest.mark.parametrize("case", sorted(SAFETENSORS_FORGERIES))
def test_forged_safetensors_header(case, folders, tmp_path):
    folder = copy(folders["camelid"], tmp_path / "m")
    weights = folder / "model.safetensors"
    forged = SAFETENSORS_FORGERIES[case](header_of(weights))
    with_header(weights, forged)
    expect_clean("safetensors", load_it(folder))


def test_unaligned_but_valid_safetensors_header_loads(folders, tmp_path):
    folder = copy(folders["camelid"], tmp_path / "m")
    weights = folder / "model.safetensors"
    with_header(weights, header_of(weights) | {"__metadata__": {"format": "pt", "x": "y"}}, pad=False)
    assert (struct.unpack("<Q", weights.read_bytes()[:8])[0]) % 8  # the data really starts unaligned
    release = expect_clean("safetensors", lambda: read(folder), may_succeed=True)
    assert torch.equal(release.state["norm.weight"], read(folders["camelid"]).state["norm.weight"])


@given(prefix=st.binary(min_size=0, max_size=64), cut=st.integers(min_value=0, max_value=4096))
def test_random_bytes_as_safetensors(prefix, cut, tmp_path_factory, folders):
    folder = copy(folders["camelid"], tmp_path_factory.mktemp("rnd") / "m")
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(prefix + data[len(prefix) : max(len(prefix), len(data) - cut)])
    expect_clean("safetensors", load_it(folder), may_succeed=True)


def test_special_files_instead_of_weights(folders, tmp_path):
    for kind in ("fifo", "directory", "symlink_to_system_file", "missing"):
        folder = copy(folders["camelid"], tmp_path / kind)
        weights = folder / "model.safetensors"
        weights.unlink()
        if kind == "fifo":
            os.mkfifo(weights)
        elif kind == "directory":
            weights.mkdir()
        elif kind == "symlink_to_system_file":
            weights.symlink_to("/etc/passwd")
        expect_clean("safetensors", load_it(folder), seconds=10)


# -- Hugging Face shard index -------------------------------------------------------------------------------


def index_with(folder: Path, shard: str) -> None:
    weights = folder / "model.safetensors"
    names = list(header_of(weights))
    names.remove("__metadata__") if "__metadata__" in names else None
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": dict.fromkeys(names, shard)}))


@pytest.mark.parametrize(
    "case", ["parent_path", "absolute_path", "fifo", "symlink_out", "not_a_string", "not_json", "empty_map"]
)
def test_forged_shard_index(case, folders, tmp_path):
    folder = copy(folders["hf"], tmp_path / "hf")
    outside = tmp_path / "outside.safetensors"
    shutil.copyfile(folder / "model.safetensors", outside)
    if case == "parent_path":
        index_with(folder, "../outside.safetensors")
    elif case == "absolute_path":
        index_with(folder, str(outside))
    elif case == "fifo":
        os.mkfifo(folder / "shard.safetensors")
        index_with(folder, "shard.safetensors")
    elif case == "symlink_out":
        (folder / "shard.safetensors").symlink_to(outside)
        index_with(folder, "shard.safetensors")
    elif case == "not_a_string":
        (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": 5}}))
    elif case == "not_json":
        (folder / "model.safetensors.index.json").write_text("{")
    else:
        (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {}}))
    message = expect_clean("hf_index", load_it(folder), seconds=10)
    assert "outside" not in message or "outside the model folder" in message or "plain name" in message


# -- configs: every field with a wrong value ----------------------------------------------------------------
# For each field, which of BAD_VALUES may load: a value of the right type and range that still describes these
# weights (a larger context, another epsilon). Everything else must be refused in one line.

BAD_VALUES = ["abc", [1, 2], {"a": 1}, -4, 0, 1.5, True, 10**7, None]


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def positive_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0


NEVER = staticmethod(lambda v: False)
HF_FIELDS = {
    "hidden_size": NEVER, "num_hidden_layers": NEVER, "num_attention_heads": NEVER, "intermediate_size": NEVER,
    "vocab_size": NEVER, "tie_word_embeddings": lambda v: v is None,
    "num_key_value_heads": NEVER, "head_dim": lambda v: v is None,
    "rms_norm_eps": lambda v: positive_number(v) or v is None,
    "rope_theta": lambda v: True,  # transformers 5 reads rope_parameters' own rope_theta; this key is ignored
    "max_position_embeddings": lambda v: (is_int(v) and v > 0) or v is None,
    "rope_scaling": lambda v: isinstance(v, dict) or v is None,
    "rope_parameters": lambda v: isinstance(v, dict) or v is None,
}  # fmt: skip


@pytest.mark.parametrize("field", sorted(HF_FIELDS))
def test_hf_config_field_with_wrong_values(field, folders, tmp_path):
    for i, value in enumerate(BAD_VALUES):
        folder = copy(folders["hf"], tmp_path / f"hf{i}")
        cfg = json.loads((folder / "config.json").read_text())
        cfg[field] = value
        (folder / "config.json").write_text(json.dumps(cfg))
        expect_clean("hf_config", load_it(folder), may_succeed=HF_FIELDS[field](value), what=f"{field}={value!r}")


META_FIELDS = {
    "dim": NEVER, "n_layers": NEVER, "n_heads": NEVER, "n_kv_heads": NEVER, "multiple_of": lambda v: v is None,
    "vocab_size": lambda v: is_int(v) or v is None,  # Meta's -1 convention: the embedding's rows decide
    "norm_eps": positive_number, "rope_theta": lambda v: positive_number(v) or v is None,
}  # fmt: skip


@pytest.mark.parametrize("field", sorted(META_FIELDS))
def test_meta_params_field_with_wrong_values(field, folders, tmp_path):
    for i, value in enumerate(BAD_VALUES):
        folder = copy(folders["meta"], tmp_path / f"meta{i}")
        params = json.loads((folder / "params.json").read_text())
        params[field] = value
        (folder / "params.json").write_text(json.dumps(params))
        expect_clean("meta_params", load_it(folder), may_succeed=META_FIELDS[field](value), what=f"{field}={value!r}")


CAMELID_FIELDS = {
    "dim": NEVER, "n_layers": NEVER, "n_heads": NEVER, "n_kv_heads": NEVER, "vocab_size": NEVER,
    "norm_eps": positive_number, "max_seq_len": lambda v: is_int(v) and v > 0,
    "rope_scaling": lambda v: v is None,
}  # fmt: skip


@pytest.mark.parametrize("field", sorted(CAMELID_FIELDS))
def test_camelid_config_field_with_wrong_values(field, folders, tmp_path):
    for i, value in enumerate(BAD_VALUES):
        folder = copy(folders["camelid"], tmp_path / f"c{i}")
        cfg = json.loads((folder / "config.json").read_text())
        cfg["model"][field] = value
        (folder / "config.json").write_text(json.dumps(cfg))
        expect_clean(
            "camelid_config", load_it(folder), may_succeed=CAMELID_FIELDS[field](value), what=f"{field}={value!r}"
        )


def test_a_million_layers_is_refused_at_once(folders, tmp_path):
    for fmt, key in (("camelid", ("model", "n_layers")), ("hf", ("num_hidden_layers",)), ("meta", ("n_layers",))):
        folder = copy(folders[fmt], tmp_path / fmt)
        name = {"camelid": "config.json", "hf": "config.json", "meta": "params.json"}[fmt]
        cfg = json.loads((folder / name).read_text())
        target = cfg
        for k in key[:-1]:
            target = target[k]
        target[key[-1]] = 1_000_000
        (folder / name).write_text(json.dumps(cfg))
        expect_clean("config_size", load_it(folder), seconds=5)


# -- GGUF ---------------------------------------------------------------------------------------------------


def gguf_with(src: Path, dst: Path, changes: dict) -> Path:
    """A copy of a GGUF file with some metadata values replaced (or removed with None)."""
    import gguf

    reader = gguf.GGUFReader(str(src))
    w = gguf.GGUFWriter(str(dst), "llama")
    values = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    values.pop("general.architecture")
    for key, value in {**values, **changes}.items():
        if value is None:
            continue
        if isinstance(value, str):
            w.add_string(key, value)
        elif isinstance(value, bool):
            w.add_bool(key, value)
        elif isinstance(value, int):
            w.add_int64(key, value) if value < 0 else w.add_uint32(key, value) if value < 2**32 else w.add_uint64(
                key, value
            )
        elif isinstance(value, float):
            w.add_float32(key, value)
        elif isinstance(value, list):
            w.add_array(key, value)
    for t in reader.tensors:
        w.add_tensor(t.name, t.data, raw_shape=list(reversed(t.shape.tolist())), raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dst


GGUF_VALUES = ["abc", ["a", "b"], [1.5, 2.5], -3, 0, 10**9, 2.5, None]
GGUF_KEYS = {
    "llama.embedding_length": NEVER, "llama.block_count": NEVER, "llama.attention.head_count": NEVER,
    "llama.attention.head_count_kv": NEVER, "llama.feed_forward_length": NEVER,
    "llama.attention.key_length": lambda v: v is None,
    "llama.context_length": lambda v: is_int(v) and v > 0,
    "llama.attention.layer_norm_rms_epsilon": positive_number,
    "llama.rope.freq_base": lambda v: positive_number(v) or v is None,
    "tokenizer.ggml.model": NEVER, "tokenizer.ggml.tokens": NEVER,
    "tokenizer.ggml.scores": lambda v: v is None, "tokenizer.ggml.token_type": lambda v: v is None,
    "tokenizer.ggml.bos_token_id": lambda v: v is None or v == 0,
    "tokenizer.chat_template": lambda v: True,  # a template that is not text is ignored, as llama.cpp does
    "llama.rope.scaling.type": lambda v: v is None,
}  # fmt: skip


@pytest.mark.parametrize("key", sorted(GGUF_KEYS))
def test_gguf_metadata_with_wrong_values(key, folders, tmp_path):
    for i, value in enumerate(GGUF_VALUES):
        path = gguf_with(folders["gguf"], tmp_path / f"m{i}.gguf", {key: value})
        expect_clean("gguf_metadata", load_it(path), may_succeed=GGUF_KEYS[key](value), what=f"{key}={value!r}")


@given(cut=st.integers(min_value=1, max_value=20000), garbage=st.binary(min_size=1, max_size=16))
def test_gguf_truncated_or_overwritten(cut, garbage, tmp_path_factory, folders):
    data = folders["gguf"].read_bytes()
    path = tmp_path_factory.mktemp("g") / "m.gguf"
    pos = cut % len(data)
    path.write_bytes(data[:pos] + garbage + data[pos + len(garbage) :] if cut % 2 else data[: len(data) - cut])
    expect_clean("gguf_bytes", load_it(path), may_succeed=True)


# -- tokenizer files ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case", ["random_bytes", "truncated", "empty", "json_garbage", "json_wrong_shape", "bad_merges", "config_list"]
)
def test_broken_tokenizer_files(case, folders, tmp_path):
    src = folders["camelid"] if case in ("random_bytes", "truncated", "empty") else folders["hf"]
    folder = copy(src, tmp_path / "m")
    if case == "random_bytes":
        (folder / "tokenizer.model").write_bytes(os.urandom(5000))
    elif case == "truncated":
        data = (folder / "tokenizer.model").read_bytes()
        (folder / "tokenizer.model").write_bytes(data[: len(data) // 3])
    elif case == "empty":
        (folder / "tokenizer.model").write_bytes(b"")
    else:
        (folder / "tokenizer.model").unlink(missing_ok=True)
        tj = folder / "tokenizer.json"
        if case == "json_garbage":
            tj.write_text("{]")
        elif case == "json_wrong_shape":
            tj.write_text(json.dumps({"model": [1, 2]}))
        elif case == "bad_merges":
            data = json.loads(tj.read_text())
            data["model"]["merges"] = [42, ["a"], "nospace"]
            tj.write_text(json.dumps(data))
        else:
            (folder / "tokenizer_config.json").write_text("[1, 2]")
    expect_clean("tokenizer_files", load_it(folder))


# -- pickles ------------------------------------------------------------------------------------------------


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("where", ["meta_shard", "training_rng"])
def test_pickles_that_would_run_code(where, folders, tmp_path, debug_checkpoint):
    marker = tmp_path / "pwned"
    folder = copy(folders["meta"], tmp_path / "meta")
    torch.save({"tok_embeddings.weight": torch.zeros(1), "evil": Payload(str(marker))}, folder / "consolidated.00.pth")
    expect_clean("pickles", load_it(folder))
    outcome = "code" if marker.exists() else "clean"
    record("pickles", outcome)
    assert outcome == "clean"


@pytest.mark.parametrize(
    "data",
    [
        b"\x08\x48",  # field 1 (a piece, a submessage) as a varint: what random bytes once gave CI
        b"\x12\x03\x1a\x01A",  # the trainer spec's model_type (a varint) as a string
        b"\x0a\x02\x08\x05",  # a piece whose text (a string) is a varint
        b"\x12\x03\x92\x02\x00",  # bos_id given as length-delimited data
    ],
)
def test_a_field_of_the_wrong_wire_type_is_one_clean_error(data, tmp_path):
    from camelid.errors import TokenizerError
    from camelid.tokenizer.spm_proto import load_model

    (tmp_path / "tokenizer.model").write_bytes(data)
    with pytest.raises(TokenizerError, match="is not a SentencePiece model file"):
        load_model(tmp_path / "tokenizer.model")
