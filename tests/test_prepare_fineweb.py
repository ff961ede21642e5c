"""prepare_fineweb.py as users run it: the shards it writes are [EOT] + encode_ordinary(text) over the
documents in order, split at --shard_size, from parquet, jsonl and txt files, with bounded memory and no
network; an --out_dir holding shards is refused unless --overwrite; bad input is one line in its name.

Offline and CPU-only. Real text comes from the parquet files of $PACE_TEST_CORPUS (a glob, FineWeb's
schema) when it is set, else generated documents are used. The tokenizer loads through tiktoken,
offline when TIKTOKEN_CACHE_DIR points at a folder holding r50k_base.
"""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import prepare_fineweb as P
from conftest import REPO, corpus_texts, write_parquet
from data import EOT, read_shard

SCRIPT = os.path.join(REPO, "prepare_fineweb.py")


@pytest.fixture
def enc(gpt2_encoding):
    """GPT-2's encoding (the tests that need it skip where it cannot be loaded)."""
    return gpt2_encoding


def expected_tokens(enc, texts):
    """The specification: [EOT] + encode_ordinary(text) over the documents in order."""
    out = []
    for text in texts:
        out += [EOT] + enc.encode_ordinary(text)
    return np.array(out, dtype=np.uint16)


def shards_in(out_dir):
    """The files in out_dir, in shard order (by index: the val shard first)."""
    return sorted(os.listdir(out_dir), key=lambda name: name.split("_")[-1])


def read_all(out_dir):
    return np.concatenate([read_shard(os.path.join(out_dir, name)) for name in shards_in(out_dir)])


def prepare(*args):
    P.main([str(a) for a in args])


def run_script(*args, env=None):
    """Run the script in a subprocess, as a user would."""
    return subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=120)


def assert_one_line_error(result, *names):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("prepare_fineweb.py: error:"), lines[0]
    for name in names:
        assert name in lines[0], (name, lines[0])


# -----------------------------------------------------------------------------
# the script's imports

def test_import_is_cheap():
    # nor does data.py, which it imports: the workers fork from a small process
    code = "import sys, prepare_fineweb; print(sorted({'datasets', 'tiktoken', 'torch'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"

# -----------------------------------------------------------------------------
# round trips

def test_round_trip_on_corpus_documents(tmp_path, enc):
    texts = corpus_texts(300)
    write_parquet(tmp_path / "000.parquet", texts[:150], id=[str(i) for i in range(150)])
    write_parquet(tmp_path / "001.parquet", texts[150:], id=[str(i) for i in range(150, 300)])
    expected = expected_tokens(enc, texts)
    shard_size = len(expected) // 3 - 7  # 4 shards, boundaries inside documents
    out = tmp_path / "out"
    prepare("--data_files", tmp_path / "*.parquet", "--out_dir", out, "--shard_size", shard_size, "--num_proc", 2)
    assert shards_in(out) == ["fineweb_val_000000.bin", "fineweb_train_000001.bin",
                              "fineweb_train_000002.bin", "fineweb_train_000003.bin"]
    sizes = [len(read_shard(out / name)) for name in shards_in(out)]
    assert sizes == [shard_size] * 3 + [len(expected) - 3 * shard_size]
    np.testing.assert_array_equal(read_all(out), expected)
    # a document crosses each boundary: the next shard does not start with a document
    assert all(read_shard(out / f"fineweb_train_00000{i}.bin")[0] != EOT for i in (1, 2, 3))


def test_edge_cases_jsonl(tmp_path, enc):
    long_doc = "A long document that does not fit in one shard. " * 300
    texts = ["", "héllo wörld — ✓ 日本語 🙂", "a literal <|endoftext|> is plain text", long_doc, "\n\n", "end"]
    with open(tmp_path / "docs.jsonl", "w") as f:
        for text in texts:
            f.write(json.dumps({"text": text, "id": "x"}) + "\n")
        f.write(json.dumps({"text": None, "id": "null"}) + "\n")  # a missing text is an empty document
    out = tmp_path / "out"
    prepare("--data_files", tmp_path / "docs.jsonl", "--out_dir", out, "--shard_size", 1000, "--num_proc", 1)
    expected = expected_tokens(enc, texts + [""])
    assert len(enc.encode_ordinary(long_doc)) > 1000
    assert enc.encode_ordinary("<|endoftext|>") != [EOT]
    np.testing.assert_array_equal(read_all(out), expected)
    n = -(-len(expected) // 1000)
    assert n > 2 and shards_in(out) == ["fineweb_val_000000.bin"] + [f"fineweb_train_{i:06d}.bin" for i in range(1, n)]


def test_txt_files_with_bad_bytes_and_empty_files(tmp_path, enc):
    files = {"a.txt": "First document.\nSecond line.\n".encode(),
             "b.txt": b"bytes that are not UTF-8: \xff\xfe\xc3( and then fine text",
             "c.txt": b""}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    out = tmp_path / "out"
    prepare("--data_files", tmp_path / "*.txt", "--out_dir", out, "--num_proc", 1)
    texts = [data.decode("utf-8", errors="replace") for _, data in sorted(files.items())]
    assert shards_in(out) == ["fineweb_val_000000.bin"]
    np.testing.assert_array_equal(read_all(out), expected_tokens(enc, texts))


def test_max_tokens(tmp_path, enc):
    texts = corpus_texts(50)
    write_parquet(tmp_path / "docs.parquet", texts)
    expected = expected_tokens(enc, texts)
    assert len(expected) > 2500
    out = tmp_path / "out"
    prepare("--data_files", tmp_path / "docs.parquet", "--out_dir", out, "--shard_size", 1000,
            "--max_tokens", 2500, "--num_proc", 2)
    assert [len(read_shard(out / name)) for name in shards_in(out)] == [1000, 1000, 500]
    np.testing.assert_array_equal(read_all(out), expected[:2500])


def test_batches_in_flight_are_bounded_and_come_back_in_order(tmp_path, enc, monkeypatch):
    # many small documents: 9 batches for one worker, which may hold 2 * 1 of them plus the one sent last
    texts = [f"document {i}:" + " word" * (i % 7) for i in range(8 * P.BATCH_DOCS + 5)]
    write_parquet(tmp_path / "docs.parquet", texts)
    counts = {"sent": 0, "received": 0, "most_in_flight": 0}

    class CountingPool:
        def __init__(self, pool):
            self.pool = pool

        def apply_async(self, fn, args):
            counts["sent"] += 1
            counts["most_in_flight"] = max(counts["most_in_flight"], counts["sent"] - counts["received"])
            return self.pool.apply_async(fn, args)

    tokenize_in_workers = P.tokenize_in_workers

    def counting(pool, batches, num_proc):
        for tokens in tokenize_in_workers(CountingPool(pool), batches, num_proc):
            counts["received"] += 1
            yield tokens

    monkeypatch.setattr(P, "tokenize_in_workers", counting)
    out = tmp_path / "out"
    prepare("--data_files", tmp_path / "docs.parquet", "--out_dir", out, "--shard_size", 5000, "--num_proc", 1)
    assert counts == {"sent": 9, "received": 9, "most_in_flight": 3}
    np.testing.assert_array_equal(read_all(out), expected_tokens(enc, texts))


def test_existing_shards_are_refused_then_replaced_with_overwrite(tmp_path, enc):
    texts = corpus_texts(20)
    write_parquet(tmp_path / "docs.parquet", texts)
    out = tmp_path / "out"
    prepare("--data_files", tmp_path / "docs.parquet", "--out_dir", out, "--shard_size", 500, "--num_proc", 1)
    assert len(shards_in(out)) > 2
    before = {name: (out / name).read_bytes() for name in shards_in(out)}

    result = run_script("--data_files", tmp_path / "docs.parquet", "--out_dir", out)
    assert_one_line_error(result, str(out), "--overwrite")
    assert {name: (out / name).read_bytes() for name in shards_in(out)} == before  # untouched

    prepare("--data_files", tmp_path / "docs.parquet", "--out_dir", out, "--overwrite", "--num_proc", 1)
    assert shards_in(out) == ["fineweb_val_000000.bin"]  # the old train shards are gone, not mixed in
    np.testing.assert_array_equal(read_all(out), expected_tokens(enc, texts))


def test_help_documents_the_overwrite_rule(capsys):
    with pytest.raises(SystemExit) as exit:
        P.main(["--help"])
    assert exit.value.code == 0
    assert "--overwrite" in capsys.readouterr().out

# -----------------------------------------------------------------------------
# bad input: a one-line error naming the culprit, a non-zero exit, no traceback

@pytest.mark.usefixtures("gpt2_encoding")  # prepare_fineweb.py loads it before it reads the input
def test_no_file_matches(tmp_path):
    pattern = str(tmp_path / "missing" / "*.parquet")
    assert_one_line_error(run_script("--data_files", pattern, "--out_dir", tmp_path / "out"), pattern, "--data_files")


@pytest.mark.usefixtures("gpt2_encoding")  # prepare_fineweb.py loads it before it reads the input
def test_unsupported_file_kind(tmp_path):
    (tmp_path / "docs.csv").write_text("text\nhello\n")
    result = run_script("--data_files", tmp_path / "*.csv", "--out_dir", tmp_path / "out")
    assert_one_line_error(result, ".csv", "--data_files")


@pytest.mark.usefixtures("gpt2_encoding")  # prepare_fineweb.py loads it before it reads the input
def test_no_text_column(tmp_path):
    pq.write_table(pa.table({"content": ["a", "b"], "id": ["1", "2"]}), tmp_path / "docs.parquet")
    result = run_script("--data_files", tmp_path / "docs.parquet", "--out_dir", tmp_path / "out")
    assert_one_line_error(result, "'text'", "content, id")


@pytest.mark.usefixtures("gpt2_encoding")  # prepare_fineweb.py loads it before it reads the input
@pytest.mark.parametrize("name", ["empty.parquet", "empty.jsonl"])
def test_empty_dataset(tmp_path, name):
    if name.endswith(".parquet"):
        write_parquet(tmp_path / name, [])
    else:
        (tmp_path / name).write_text("")
    result = run_script("--data_files", tmp_path / name, "--out_dir", tmp_path / "out")
    assert_one_line_error(result, "empty", str(tmp_path / name))
    assert not glob.glob(str(tmp_path / "out" / "*"))


def test_unwritable_out_dir(tmp_path):
    (tmp_path / "a_file").write_text("")
    out = tmp_path / "a_file" / "out"  # unwritable even for root, unlike a chmod-ed folder
    write_parquet(tmp_path / "docs.parquet", ["hello"])
    result = run_script("--data_files", tmp_path / "docs.parquet", "--out_dir", out)
    assert_one_line_error(result, "--out_dir", str(out))


def test_tokenizer_unavailable_offline(tmp_path):
    write_parquet(tmp_path / "docs.parquet", ["hello"])
    env = dict(os.environ, TIKTOKEN_CACHE_DIR=str(tmp_path / "empty_cache"))
    # an unreachable proxy makes the download fail at once, also on a machine with internet
    env.update(HTTPS_PROXY="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9", NO_PROXY="", no_proxy="")
    result = run_script("--data_files", tmp_path / "docs.parquet", "--out_dir", tmp_path / "out", env=env)
    assert_one_line_error(result, "TIKTOKEN_CACHE_DIR", "r50k_base")


@pytest.mark.skipif(not os.environ.get("TIKTOKEN_CACHE_DIR"), reason="needs the tokenizer in TIKTOKEN_CACHE_DIR")
def test_offline_run_touches_no_network(tmp_path, enc):
    write_parquet(tmp_path / "docs.parquet", ["hello world", "offline"])
    # any DNS lookup or connection ends the process at once, with status 99
    code = ("import os, socket, sys; import prepare_fineweb\n"
            "def no_network(*args, **kwargs): os._exit(99)\n"
            "socket.getaddrinfo = socket.socket.connect = no_network\n"
            "prepare_fineweb.main(sys.argv[1:])")
    result = subprocess.run([sys.executable, "-c", code, "--data_files", str(tmp_path / "docs.parquet"),
                             "--out_dir", str(tmp_path / "out"), "--num_proc", "1"],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(read_all(tmp_path / "out"), expected_tokens(enc, ["hello world", "offline"]))
