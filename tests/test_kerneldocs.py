"""studies/kerneldocs.py: the rule that splits a file into documents, and the corpus built, as its docstring's
command builds it, from a sample of the package's real files (tests/kerneldocs_sample): FineWeb's schema, the
same bytes from every build, the seeded shuffle, and the shards prepare_fineweb.py writes of it."""

import os
import random
import shutil
import subprocess
import sys
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import REPO
from data import EOT, read_shard, shard_paths, val_shard_path
from studies import kerneldocs as K

SAMPLE = os.path.join(REPO, "tests", "kerneldocs_sample")
SAMPLE_FILES = ["bpf/libbpf/libbpf_build.rst.txt", "bpf/prog_cgroup_sysctl.rst.txt",
                "networking/devlink/devlink-flash.rst.txt", "networking/devlink/devlink-selftests.rst.txt"]


def sizes(text):
    return [len(doc.encode()) for doc in K.documents(text)]

# ----------------------------------------------------------------------------- the split rule

def test_paragraphs_are_joined_until_min_bytes_and_never_past_max_bytes():
    paragraphs = ["a" * 1000, "b" * 600, "c" * 200, "d" * 5900, "e" * 300]
    # 1000 + 2 + 600 reaches 1,500; 200 + 2 + 5900 would pass 6,000; the file's rest is its last document
    assert sizes("\n\n".join(paragraphs)) == [1602, 200, 5900, 300]
    assert sizes("a" * 1000 + "\n\n" + "b" * 498 + "\n\nend") == [1500, 3]  # exactly MIN_BYTES closes it
    assert sizes("a" * 1000 + "\n\n" + "b" * 4998) == [6000]  # exactly MAX_BYTES fits
    assert sizes("a" * 1000 + "\n\n" + "b" * 4999) == [1000, 4999]


def test_a_blank_line_is_whitespace_only_and_lines_keep_their_indentation():
    text = "\n\nTitle\n=====\n \t \n\n\n    indented code\n    more\n\nend\n"
    assert K.documents(text) == ["Title\n=====\n\n    indented code\n    more\n\nend"]


def test_sizes_are_utf8_bytes_not_characters():
    assert sizes("é" * 800 + "\n\n" + "b" * 10) == [1600, 10]  # 800 characters, 1,600 bytes


def test_a_paragraph_over_max_bytes_is_cut_between_lines():
    paragraph = "\n".join(f"{i:02d}" + "x" * 96 for i in range(100))  # 100 lines of 98 bytes
    docs = K.documents(paragraph)
    assert sizes(paragraph) == [98 * 60 + 59, 98 * 40 + 39]  # as many whole lines as fit in 6,000 bytes
    assert "\n".join(docs) == paragraph
    exact = "\n".join(["y" * 99] * 60 + ["z"])  # 5,999 bytes, then "\n" and "z" would make 6,001
    assert sizes(exact) == [5999, 1]

# ----------------------------------------------------------------------------- the build

def build(source, out):
    """The docstring's command, in a process of its own (its own hash seed)."""
    return subprocess.run([sys.executable, "-m", "studies.kerneldocs", str(source), str(out)],
                          capture_output=True, text=True, cwd=REPO, timeout=300)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, gpt2_encoding):
    """The sample with a translation beside it (which the build leaves out), built twice: (first, second)."""
    source = tmp_path_factory.mktemp("linux-doc") / "_sources"
    shutil.copytree(SAMPLE, source, ignore=shutil.ignore_patterns("README.md"))
    translated = source / "translations" / "zh_CN" / "bpf" / "prog_cgroup_sysctl.rst.txt"
    translated.parent.mkdir(parents=True)
    translated.write_text("BPF_PROG_TYPE_CGROUP_SYSCTL\n\n本文档描述 BPF_PROG_TYPE_CGROUP_SYSCTL 程序类型。\n")
    paths = []
    for name in ("first.parquet", "second.parquet"):
        result = build(source, source.parent / name)
        assert result.returncode == 0, result.stderr
        assert "wrote 9 documents of 4 files" in result.stdout
        paths.append(source.parent / name)
    return paths


def test_two_builds_give_the_same_bytes(corpus):
    first, second = corpus
    assert first.read_bytes() == second.read_bytes()


def test_the_schema_is_finewebs(corpus):
    assert pq.read_schema(corpus[0]).remove_metadata() == pa.schema([
        ("text", pa.string()), ("id", pa.string()), ("dump", pa.string()), ("url", pa.string()),
        ("date", pa.string()), ("file_path", pa.string()), ("language", pa.string()),
        ("language_score", pa.float64()), ("token_count", pa.int64())])


def test_each_file_is_its_documents_in_order_and_translations_are_left_out(corpus, gpt2_encoding):
    rows = pq.read_table(corpus[0]).to_pylist()
    for name in SAMPLE_FILES:
        mine = [r for r in rows if r["file_path"] == f"/usr/share/doc/linux-doc-6.1/html/_sources/{name}"]
        mine.sort(key=lambda r: int(r["url"].rsplit("#", 1)[1]))
        with open(os.path.join(SAMPLE, name), encoding="utf-8") as f:
            assert [r["text"] for r in mine] == K.documents(f.read())
        assert [r["url"] for r in mine] == [f"https://www.kernel.org/doc/html/v6.1/_sources/{name}#{i}"
                                            for i in range(len(mine))]
    assert len(rows) == 9 == sum(len(K.documents(open(os.path.join(SAMPLE, n)).read())) for n in SAMPLE_FILES)
    for r in rows:
        assert r["id"] == f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, r['url'])}>"
        assert (r["dump"], r["date"], r["language"], r["language_score"]) == ("linux-doc-6.1", None, "en", None)
        assert r["token_count"] == len(gpt2_encoding.encode_ordinary(r["text"]))


def test_the_documents_are_shuffled_with_the_seed(corpus):
    rows = pq.read_table(corpus[0], columns=["url"]).column("url").to_pylist()
    in_file_order = sorted(rows, key=lambda url: (url.rsplit("#", 1)[0], int(url.rsplit("#", 1)[1])))
    shuffled = list(in_file_order)
    random.Random(K.SEED).shuffle(shuffled)
    assert rows == shuffled and rows != in_file_order


def test_prepare_fineweb_tokenizes_it(corpus, gpt2_encoding, tmp_path):
    # the docstring's last command
    subprocess.run([sys.executable, "prepare_fineweb.py", "--data_files", str(corpus[0]), "--out_dir", str(tmp_path),
                    "--shard_size", "1000", "--num_proc", "1"], cwd=REPO, check=True, capture_output=True, timeout=120)
    shards = [val_shard_path(tmp_path), *shard_paths(tmp_path)]
    tokens = np.concatenate([read_shard(path) for path in shards])
    table = pq.read_table(corpus[0])
    expected = [t for text in table.column("text").to_pylist() for t in [EOT] + gpt2_encoding.encode_ordinary(text)]
    np.testing.assert_array_equal(tokens, expected)
    assert len(tokens) == sum(table.column("token_count").to_pylist()) + table.num_rows
    assert sorted(os.listdir(tmp_path)) == sorted(map(os.path.basename, shards)) and len(shards) == -(-len(tokens) // 1000)

# ----------------------------------------------------------------------------- bad input

def non_utf8(source):
    shutil.copytree(SAMPLE, source)
    (source / "bpf" / "broken.rst.txt").write_bytes(b"Latin-1, not UTF-8: caf\xe9\n")
    return "broken.rst.txt"


def only_translations(source):
    (source / "translations" / "it_IT").mkdir(parents=True)
    (source / "translations" / "it_IT" / "index.rst.txt").write_text("Documentazione\n")
    return "outside translations/"


@pytest.mark.parametrize("make", [lambda source: "no such folder", only_translations, non_utf8])
def test_bad_input_is_a_one_line_error_and_leaves_the_output_alone(tmp_path, capsys, make):
    source, out = tmp_path / "_sources", tmp_path / "corpus.parquet"
    out.write_bytes(b"an earlier build")
    message = make(source)
    assert K.main([str(source), str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("kerneldocs.py: error:") and len(err.splitlines()) == 1
    assert message in err and str(source) in err
    assert out.read_bytes() == b"an earlier build" and not list(tmp_path.glob("*.tmp"))


def test_an_unwritable_output_is_a_one_line_error(tmp_path, capsys, gpt2_encoding):
    (tmp_path / "a_file").write_text("")
    out = tmp_path / "a_file" / "corpus.parquet"  # unwritable even for root, unlike a chmod-ed folder
    assert K.main([SAMPLE, str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("kerneldocs.py: error:") and len(err.splitlines()) == 1 and str(out) in err


def test_the_output_folder_is_made(tmp_path, gpt2_encoding):
    assert K.main([SAMPLE, str(tmp_path / "data" / "corpus.parquet")]) == 0
    assert pq.read_table(tmp_path / "data" / "corpus.parquet").num_rows == 9
