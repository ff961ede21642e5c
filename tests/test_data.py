"""data.py: the shard format (the bytes written, read back, refused when damaged), the shards' file
names, the tokenizer's error, and the DataLoader's global batches, which do not depend on the
number of processes."""

import os
import struct

import numpy as np
import pytest
import torch

import data
from data import DataLoader, ShardError, read_shard, shard_path, shard_paths, write_shard
from errors import Error


def test_write_shard_format_and_read_back(tmp_path):
    path = str(tmp_path / "s.bin")
    tokens = [data.EOT, 0, 1, 65535, 31373, 995]
    write_shard(path, tokens)
    raw = open(path, "rb").read()
    assert len(raw) == 4 * 256 + 2 * len(tokens)
    header = struct.unpack("<256i", raw[:1024])
    assert header[:3] == (20240520, 1, len(tokens)) and not any(header[3:])
    assert struct.unpack(f"<{len(tokens)}H", raw[1024:]) == tuple(tokens)
    shard = read_shard(path)
    assert isinstance(shard, np.memmap) and shard.dtype == np.uint16
    assert shard.tolist() == tokens
    assert os.listdir(tmp_path) == ["s.bin"]  # no temporary file left


def test_write_shard_refuses_ids_beyond_uint16(tmp_path):
    with pytest.raises(ValueError):
        write_shard(str(tmp_path / "s.bin"), [1, 70000])


def test_interrupted_write_leaves_no_shard_under_the_final_name(tmp_path, monkeypatch):
    def crash(fd):
        raise OSError("disk full")
    monkeypatch.setattr(os, "fsync", crash)
    path = shard_path(tmp_path, 0)
    with pytest.raises(OSError):
        write_shard(path, np.arange(1000, dtype=np.uint16))
    assert not os.path.exists(path)


def corrupt(path, how):
    raw = bytearray(open(path, "rb").read())
    if how == "truncated":
        raw = raw[:-3]
    elif how == "header only in part":
        raw = raw[:100]
    elif how == "bad magic":
        raw[:4] = struct.pack("<i", 12345)
    elif how == "version":
        raw[4:8] = struct.pack("<i", 7)
    elif how == "too long":
        raw += b"\0\0"
    open(path, "wb").write(raw)


@pytest.mark.parametrize("how, message", [
    ("truncated", "truncated"), ("header only in part", "truncated"), ("bad magic", "magic"),
    ("version", "version"), ("too long", "does not match"),
])
def test_read_shard_reports_corrupt_shards_by_name(tmp_path, how, message):
    path = shard_path(str(tmp_path), 1)
    write_shard(path, np.arange(100, dtype=np.uint16))
    corrupt(path, how)
    with pytest.raises(ShardError) as error:
        read_shard(path)
    assert path in str(error.value) and message in str(error.value)


def test_read_shard_missing_file(tmp_path):
    path = str(tmp_path / "nope.bin")
    with pytest.raises(ShardError) as error:  # an Error: a script reports it in one line, in its own name
        read_shard(path)
    assert isinstance(error.value, Error) and path in str(error.value)


def test_shard_names_order_the_validation_shard_first(tmp_path):
    assert shard_path(tmp_path, 0) == data.val_shard_path(tmp_path) == os.path.join(tmp_path, "fineweb_val_000000.bin")
    assert shard_path(tmp_path, 12) == os.path.join(tmp_path, "fineweb_train_000012.bin")
    for index in (12, 3, 1):
        write_shard(shard_path(tmp_path, index), [index])
    write_shard(shard_path(tmp_path, 0), [0])
    assert shard_paths(tmp_path) == [shard_path(tmp_path, i) for i in (1, 3, 12)]  # the training shards in order
    assert sorted(shard_paths(tmp_path, "*")) == sorted([shard_path(tmp_path, i) for i in (0, 1, 3, 12)])
    assert data.shard_pattern(tmp_path) == os.path.join(tmp_path, "fineweb_train_*.bin")


def test_the_tokenizer_that_cannot_load_is_an_error_not_an_exit(monkeypatch):
    tiktoken = pytest.importorskip("tiktoken")

    def offline(name):
        raise ValueError("no network\nmore detail")
    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    with pytest.raises(Error) as e:
        data.load_tokenizer()
    assert str(e.value).startswith("cannot load the GPT-2 tokenizer (tiktoken r50k_base): no network. Without internet")
    assert data.R50K_CACHE_FILE in str(e.value) and "\n" not in str(e.value)

# -----------------------------------------------------------------------------
# the DataLoader


@pytest.fixture(scope="module")
def stream_dir(tmp_path_factory):
    """(a data folder, its stream): two training shards of 30,000 tokens, 0, 1, 2, ... (mod 50,000)."""
    folder = tmp_path_factory.mktemp("stream")
    stream = (np.arange(60_000) % 50_000).astype(np.uint16)
    write_shard(shard_path(folder, 1), stream[:30_000])
    write_shard(shard_path(folder, 2), stream[30_000:])
    return folder, stream


def global_batches(folder, batch_size, grad_accum_steps, world_size, n, block_size=32):
    """The first n global batches as the processes' loaders read them, joined in the stream's order."""
    loaders = [DataLoader(str(folder), batch_size, block_size, grad_accum_steps, r, world_size) for r in range(world_size)]
    batches = []
    for _ in range(n):
        parts = [loader.next_batch() for loader in loaders]  # parts[r][a]
        chunks = [parts[r][a] for a in range(grad_accum_steps) for r in range(world_size)]
        assert all(c.dtype == np.int64 and len(c) == batch_size * block_size + 1 for c in chunks)
        assert all(c[-1] == d[0] for c, d in zip(chunks, chunks[1:]))  # contiguous shares
        batches.append(np.concatenate([c[:-1] for c in chunks] + [chunks[-1][-1:]]))
    return batches


def test_global_batches_do_not_depend_on_the_number_of_processes(stream_dir):
    folder, stream = stream_dir
    # 16 sequences of 32 tokens per step: 117 global batches fit in the 60,000 tokens, the 59th spans both shards
    one = global_batches(folder, 16, 1, 1, 120)
    for k in range(117):
        np.testing.assert_array_equal(one[k], stream[k * 512:(k + 1) * 512 + 1])
    np.testing.assert_array_equal(one[117], one[0])  # the second pass starts over
    for batch_size, grad_accum_steps, world_size in ((4, 2, 2), (8, 2, 1), (2, 2, 4)):
        assert all(np.array_equal(a, b) for a, b in zip(one, global_batches(folder, batch_size, grad_accum_steps, world_size, 120)))


def test_a_loader_resumes_at_its_position(stream_dir):
    folder, _ = stream_dir
    whole = DataLoader(str(folder), 4, 32, 1, 0, 1)
    batches = [whole.next_batch()[0] for _ in range(5)]
    resumed = DataLoader(str(folder), 4, 32, 1, 0, 1)
    resumed.pos = 3 * 128  # as a checkpoint after 3 steps restores it
    assert np.array_equal(resumed.next_batch()[0], batches[3])


def test_too_little_data_or_none_is_an_error_naming_the_folder(stream_dir, tmp_path):
    folder, _ = stream_dir
    with pytest.raises(Error, match="fewer than one batch of total_batch_size \\+ 1 = 61441"):
        DataLoader(str(folder), 20, 1024, 3, 0, 1)
    with pytest.raises(Error) as e:
        DataLoader(str(tmp_path), 4, 32, 1, 0, 1)
    assert str(e.value) == f"no training shards {tmp_path / 'fineweb_train_*.bin'}: write them with prepare_fineweb.py"


def test_the_fingerprint_changes_with_any_shard_s_tokens(stream_dir, tmp_path):
    folder, stream = stream_dir
    same = DataLoader(str(folder), 4, 32, 1, 0, 1).fingerprint()
    assert same == DataLoader(str(folder), 4, 32, 1, 1, 2).fingerprint() and same.startswith("60000 tokens in 2 shards")
    changed = stream.copy()
    changed[30_100] += 1  # one token of the second shard
    write_shard(shard_path(tmp_path, 1), changed[:30_000])
    write_shard(shard_path(tmp_path, 2), changed[30_000:])
    assert DataLoader(str(tmp_path), 4, 32, 1, 0, 1).fingerprint() != same


def test_a_batch_is_a_tensor_in_train_py(stream_dir):
    folder, stream = stream_dir
    tokens = torch.from_numpy(DataLoader(str(folder), 4, 32, 1, 0, 1).next_batch()[0])
    assert tokens.dtype == torch.int64 and torch.equal(tokens, torch.from_numpy(stream[:129].astype(np.int64)))
