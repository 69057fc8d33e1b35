import numpy as np
import pytest

from camelid.data.loader import TokenLoader, permute, validation_windows
from camelid.data.shards import ShardWriter, open_dir, open_shard, write_documents
from camelid.errors import ConfigError


def test_shard_layout_is_datatroves(tmp_path):
    docs = [[1, 5, 6, 2], [1, 7, 2], [1, 2]]
    write_documents(tmp_path / "x.ds", docs, vocab_size=32000, name="tok")
    assert (tmp_path / "x.ds").read_bytes() == np.array([1, 5, 6, 2, 1, 7, 2, 1, 2], dtype="<u2").tobytes()
    assert (tmp_path / "x.ds.index").read_bytes() == np.array([4, 7, 9], dtype="<u8").tobytes()
    assert (tmp_path / "x.ds.metadata").read_text().splitlines()[:2] == ["tok", "9"]
    shard = open_shard(tmp_path / "x.ds")
    assert shard.tokens.tolist() == sum(docs, []) and shard.n_docs == 3
    # vocabularies past 65,536 ids (Llama 3) use 4-byte tokens, detected from the file size
    write_documents(tmp_path / "big.ds", [[1, 128000, 2]], vocab_size=128256)
    assert open_shard(tmp_path / "big.ds").tokens.tolist() == [1, 128000, 2]


def make_dir(path, n_tokens, start):
    with ShardWriter(path / "part_00000.ds", 1000) as w:
        w.write(list(range(start, start + n_tokens // 2)))
    with ShardWriter(path / "part_00001.ds", 1000) as w:
        w.write(list(range(start + n_tokens // 2, start + n_tokens)))
    return path


@pytest.fixture
def two_sources(tmp_path):
    a = make_dir(tmp_path / "a", 400, 0)
    b = make_dir(tmp_path / "b", 400, 500)
    return [(a, 3.0), (b, 1.0)]


def test_permutation_is_a_bijection():
    for n in (1, 2, 7, 64, 1000, 4097):
        assert sorted(permute(i, n, 12345) for i in range(n)) == list(range(n))
    assert [permute(i, 1000, 1) for i in range(10)] != [permute(i, 1000, 2) for i in range(10)]


def test_mixture_weights_and_epochs(two_sources):
    loader = TokenLoader(two_sources, seq_len=7, seed=0)
    batch = loader.next_batch(4000, 0, 4000)
    from_a = int((batch[:, 0] < 500).sum())
    assert abs(from_a / 4000 - 0.75) < 0.03
    # windows are seq_len + 1 consecutive tokens of one shard
    assert all((np.diff(row) == 1).all() for row in batch)
    # every window of a source is seen once per epoch before any repeats
    n_a = loader.sources[0].n_windows
    first_epoch = [tuple(r) for r in batch[batch[:, 0] < 500][:n_a]]
    assert len(set(first_epoch)) == n_a
    assert loader.epochs()[0] == pytest.approx(from_a / n_a)


def test_deterministic_resumable_and_disjoint_across_ranks(two_sources):
    full = TokenLoader(two_sources, seq_len=7, seed=3)
    batches = [full.next_batch(8, 0, 8) for _ in range(6)]
    again = TokenLoader(two_sources, seq_len=7, seed=3)
    assert all((again.next_batch(8, 0, 8) == b).all() for b in batches)
    # resume after 3 batches from the saved state
    first = TokenLoader(two_sources, seq_len=7, seed=3)
    for _ in range(3):
        first.next_batch(8, 0, 8)
    state = first.state_dict()
    resumed = TokenLoader(two_sources, seq_len=7, seed=3)
    resumed.load_state_dict(state)
    assert all((resumed.next_batch(8, 0, 8) == b).all() for b in batches[3:])
    # two ranks each read their half of every global batch
    r0, r1 = TokenLoader(two_sources, seq_len=7, seed=3), TokenLoader(two_sources, seq_len=7, seed=3)
    for b in batches:
        assert (np.concatenate([r0.next_batch(8, 0, 4), r1.next_batch(8, 4, 4)]) == b).all()
    # another seed gives another order
    other = TokenLoader(two_sources, seq_len=7, seed=4)
    assert not (other.next_batch(8, 0, 8) == batches[0]).all()


def test_state_from_other_data_is_refused(two_sources, tmp_path):
    state = TokenLoader(two_sources, seq_len=7).state_dict()
    with pytest.raises(ConfigError, match="changed"):
        TokenLoader(two_sources, seq_len=9).load_state_dict(state)


def test_errors_name_the_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="empty"):
        open_dir(tmp_path / "empty")
    with pytest.raises(ConfigError, match="missing"):
        open_dir(tmp_path / "missing")
    make_dir(tmp_path / "small", 6, 0)
    with pytest.raises(ConfigError, match="fewer than"):
        TokenLoader([(tmp_path / "small", 1.0)], seq_len=64)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.ds").write_bytes(b"\x00" * 7)
    (tmp_path / "bad" / "x.ds.index").write_bytes(np.array([3], dtype="<u8").tobytes())
    with pytest.raises(ConfigError, match="x.ds"):
        open_dir(tmp_path / "bad")


def test_validation_windows_are_in_order(two_sources):
    w = validation_windows([two_sources[0][0]], seq_len=10, limit=3)
    assert w[:, 0].tolist() == [0, 10, 20]
