"""camelid's SentencePiece BPE encoder against the sentencepiece library, on a model camelid trained."""

import random
import sysconfig
from pathlib import Path

import pytest

from camelid.errors import TokenizerError
from camelid.tokenizer import load_tokenizer
from camelid.tokenizer.spm_proto import BYTE, CONTROL, UNKNOWN, load_model, serialize_model

spm = pytest.importorskip("sentencepiece")

ENGLISH = [
    "The quick brown fox jumps over the lazy dog.",
    "LLaMA: Open and Efficient Foundation Language Models, by Touvron et al., February 2023.",
    "  Two leading spaces,   three inside, and a trailing one ",
    "Tabs\tand\nnewlines\r\nare bytes",
    "",
    " ",
]
CODE = [
    "def forward(self, x: torch.Tensor) -> torch.Tensor:\n    return self.w2(F.silu(self.w1(x)) * self.w3(x))\n",
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }",
    "    if __name__ == '__main__':\n        main()\n",
]
DIGITS = ["3.14159265358979", "Call 555-0199 before 2024-12-31 23:59:59", "x = 1e-10 + 0x1F + 1_000_000"]
JAPANESE = [
    "吾輩は猫である。名前はまだ無い。",
    "東京は日本の首都です。",
    "カタカナとひらがなと漢字",
    "今日は2024年12月31日です",
]
UNSEEN = ["emoji 🦙🐪🚀", "Ελληνικά και русский язык", "한국어 텍스트", "Ω≈ç√∫˜µ≤≥÷", "\u0000\u0001 control"]


@pytest.fixture(scope="module")
def pair(tokenizer_path):
    return load_tokenizer(tokenizer_path), spm.SentencePieceProcessor(model_file=str(tokenizer_path))


@pytest.mark.parametrize(
    "texts", [ENGLISH, CODE, DIGITS, JAPANESE, UNSEEN], ids=["en", "code", "digits", "ja", "unseen"]
)
def test_ids_equal_sentencepiece(pair, texts):
    ours, ref = pair
    for text in texts:
        assert ours.encode(text, bos=False) == ref.encode(text), text
        assert ours.encode(text, bos=True) == [ref.bos_id()] + ref.encode(text)
        ids = ref.encode(text)
        assert ours.decode(ids) == ref.decode(ids), text


def test_ids_equal_sentencepiece_on_real_files(pair):
    """Random slices of standard-library sources and of the test prose: thousands of spans, all equal."""
    ours, ref = pair
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))[40:80]
    text = "".join(p.read_text(encoding="utf-8", errors="replace") for p in files)
    text += (Path(__file__).parents[1] / "data" / "prose_ja.txt").read_text(encoding="utf-8")
    rng = random.Random(0)
    checked = 0
    for _ in range(2000):
        i = rng.randrange(len(text))
        span = text[i : i + rng.randrange(1, 400)]
        assert ours.encode(span, bos=False) == ref.encode(span), span
        checked += 1
    assert checked == 2000


def test_vocabulary_matches(pair, tokenizer_path):
    ours, ref = pair
    assert ours.vocab_size == ref.get_piece_size() == 2000
    model = load_model(tokenizer_path)
    for i in range(ref.get_piece_size()):
        assert model.pieces[i] == ref.id_to_piece(i)
        assert model.scores[i] == ref.get_score(i)
        assert (model.types[i] == CONTROL) == ref.is_control(i)
        assert (model.types[i] == UNKNOWN) == ref.is_unknown(i)
        assert (model.types[i] == BYTE) == ref.is_byte(i)
    assert (ours.bos_id, ours.eos_id, ours.pad_id) == (1, 2, None)  # LLaMA's ids: unk 0, bos 1, eos 2, no pad


def test_trained_the_llama_way(pair, tokenizer_path):
    ours, _ = pair
    model = load_model(tokenizer_path)
    assert model.byte_fallback and model.normalizer_name == "identity"
    assert not model.remove_extra_whitespaces and model.add_dummy_prefix
    pieces = [ours.id_to_piece(i) for i in ours.encode("In 2023 they trained 65000000000 parameters", bos=False)]
    digit_pieces = [p.lstrip("\u2581") for p in pieces if any(c.isdigit() for c in p)]
    assert all(len(p) == 1 for p in digit_pieces) and len(digit_pieces) == 15  # every digit on its own
    assert all(
        not any(c.isdigit() for c in model.pieces[i]) or len(model.pieces[i].lstrip("\u2581")) == 1
        for i in range(len(model.pieces))
        if model.types[i] == 1
    )


def test_unknown_characters_round_trip_through_byte_fallback(pair):
    ours, _ = pair
    for text in UNSEEN + ["𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ✓ ☃"]:
        ids = ours.encode(text, bos=False)
        assert 0 not in ids  # never <unk>: unseen characters become <0xXX> byte pieces
        assert ours.decode(ids) == text
    ids = ours.encode("🦙", bos=False)
    assert [ours.id_to_piece(i) for i in ids][-4:] == ["<0xF0>", "<0x9F>", "<0xA6>", "<0x99>"]


def test_serialized_model_loads_in_sentencepiece(tokenizer_path, tmp_path):
    data = serialize_model(load_model(tokenizer_path))
    (tmp_path / "copy.model").write_bytes(data)
    ref = spm.SentencePieceProcessor(model_file=str(tmp_path / "copy.model"))
    orig = spm.SentencePieceProcessor(model_file=str(tokenizer_path))
    for text in ENGLISH + CODE + JAPANESE:
        assert ref.encode(text) == orig.encode(text)


def test_nfkc_normalization_rules_match(corpus, tmp_path):
    """A model trained with sentencepiece's default nmt_nfkc rules exercises the precompiled charsmap path."""
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(tmp_path / "nfkc"),
        vocab_size=800,
        model_type="bpe",
        byte_fallback=True,
        minloglevel=2,
    )
    ours = load_tokenizer(tmp_path / "nfkc.model")
    assert ours._charsmap is not None
    ref = spm.SentencePieceProcessor(model_file=str(tmp_path / "nfkc.model"))
    for text in [
        "ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３",
        "ﬁne ligatures ①②",
        "  extra   spaces  ",
        "ｶﾀｶﾅ",
        *ENGLISH,
        *JAPANESE,
    ]:
        assert ours.encode(text, bos=False) == ref.encode(text), text


def test_bad_tokenizer_files(tmp_path):
    with pytest.raises(TokenizerError, match="does not exist"):
        load_tokenizer(tmp_path / "missing.model")
    (tmp_path / "junk.model").write_bytes(b"\xff\xff\xff\xff not a protobuf")
    with pytest.raises(TokenizerError, match="junk.model"):
        load_tokenizer(tmp_path / "junk.model")
