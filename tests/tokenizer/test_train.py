import pytest

from camelid.errors import TokenizerError
from camelid.tokenizer.train import train_tokenizer


def test_training_errors_name_the_problem(tmp_path, corpus):
    with pytest.raises(TokenizerError, match="does not exist"):
        train_tokenizer([tmp_path / "nope.txt"], tmp_path / "out", vocab_size=500)
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(TokenizerError, match="empty"):
        train_tokenizer([tmp_path / "empty.txt"], tmp_path / "out", vocab_size=500)
    (tmp_path / "small.txt").write_text("tiny corpus\n" * 10)
    with pytest.raises(TokenizerError, match="--vocab-size 5000"):
        train_tokenizer([tmp_path / "small.txt"], tmp_path / "out", vocab_size=5000)
    assert not (tmp_path / "out" / "tokenizer.model").exists()


def test_vocab_size_is_a_parameter(tmp_path, corpus):
    from camelid.tokenizer import load_tokenizer

    path = train_tokenizer([corpus], tmp_path / "t", vocab_size=700)
    assert load_tokenizer(path).vocab_size == 700
