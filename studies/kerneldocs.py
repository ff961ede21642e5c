"""
Build the kerneldocs corpus: the Linux kernel's documentation, in FineWeb's parquet schema, the
second corpus of the CPU-scale studies (results/kerneldocs) beside the Python documentation's.

Its source is Debian 12's package linux-doc-6.1, whose html/_sources folder holds the
reStructuredText source of every page of the kernel's documentation (about drivers, hardware,
administration and the kernel's development process, not a programming language's library).
The commands that rebuild data/kerneldocs, from the repository's root (the package is unpacked
into /tmp, not installed; a newer version of it gives other bytes):

    apt-get update && (cd /tmp && apt-get download linux-doc-6.1=6.1.192-3)   # 37 MB
    dpkg-deb -x /tmp/linux-doc-6.1_6.1.192-3_all.deb /tmp/linux-doc
    export TIKTOKEN_CACHE_DIR=../shared/tiktoken_cache   # offline: the GPT-2 BPE, for token_count
    python -m studies.kerneldocs /tmp/linux-doc/usr/share/doc/linux-doc-6.1/html/_sources data/kerneldocs.parquet
    python prepare_fineweb.py --data_files data/kerneldocs.parquet --out_dir data/kerneldocs --shard_size 1000000

The last command writes a validation shard of the first 1,000,000 tokens, then training shards of
1,000,000 tokens each. The counts and the parquet's sha256 are in results/kerneldocs/README.md;
the same pyarrow version (the file names it) gives the same bytes.

What it takes: every *.rst.txt file under the folder, in the order of their paths, except those
under translations/ (Chinese, Japanese, Korean, Italian), each read as UTF-8 (a file that is
not is an error). A file is split into documents of 1.5-6 KB, the sizes of the Python-docs
corpus's documents:
- its paragraphs are its runs of non-blank lines (a blank line is empty or whitespace only);
  a paragraph over MAX_BYTES is cut between lines into pieces of at most MAX_BYTES;
- paragraphs are joined, in order and with one blank line between them, into a document until
  it holds at least MIN_BYTES of UTF-8, or until the next paragraph would take it over
  MAX_BYTES; a file's last document holds what is left of it. No document spans two files.
The documents of all files are then shuffled with random.Random(SEED), so that the validation
shard is a sample of the whole corpus. Columns: text; id, a UUID of the url; dump, the package;
url, the source's address on kernel.org and the document's index in its file (#0, #1, ...);
date and language_score null (no crawl, no language classifier); file_path, the file's path in
the package; language "en"; token_count, the text's GPT-2 tokens (encode_ordinary: prepare_fineweb
writes one more per document, its end-of-text token).
"""

import argparse
import os
import random
import sys
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from data import load_tokenizer
from errors import Error

MIN_BYTES = 1_500  # a document is closed once it holds this much ...
MAX_BYTES = 6_000  # ... and never grows past this (unless one line is longer: the package has none)
SEED = 0  # of the shuffle
EXCLUDED = "translations"  # the top folder of the documentation's other languages
PACKAGE = "linux-doc-6.1"
PACKAGE_DIR = "/usr/share/doc/linux-doc-6.1/html/_sources"  # where the package puts the sources
SITE = "https://www.kernel.org/doc/html/v6.1/_sources"  # where kernel.org serves the same files

SCHEMA = pa.schema([  # FineWeb's columns and types
    ("text", pa.string()), ("id", pa.string()), ("dump", pa.string()), ("url", pa.string()),
    ("date", pa.string()), ("file_path", pa.string()), ("language", pa.string()),
    ("language_score", pa.float64()), ("token_count", pa.int64())])


class CorpusError(Error):
    """Bad input: reported as one line naming the folder or file, exit status 1."""


def size(text):
    return len(text.encode("utf-8"))


def paragraphs(text):
    """The text's runs of non-blank lines, each cut between lines into pieces of at most MAX_BYTES."""
    piece, n = [], 0
    for line in text.split("\n") + [""]:
        if line.strip() and (not piece or n + 1 + size(line) <= MAX_BYTES):
            n += size(line) + (1 if piece else 0)  # "\n" between lines
            piece.append(line)
            continue
        if piece:
            yield "\n".join(piece)
        piece, n = ([line], size(line)) if line.strip() else ([], 0)


def documents(text):
    """A file's text -> its documents (the module docstring's rule)."""
    done, current, n = [], [], 0
    for paragraph in paragraphs(text):
        if current and n + 2 + size(paragraph) > MAX_BYTES:
            done.append("\n\n".join(current))
            current, n = [], 0
        n += size(paragraph) + (2 if current else 0)  # a blank line between paragraphs
        current.append(paragraph)
        if n >= MIN_BYTES:
            done.append("\n\n".join(current))
            current, n = [], 0
    if current:
        done.append("\n\n".join(current))
    return done


def source_files(source):
    """The package's English sources under source, by path: [(path relative to source, Path)]."""
    if not source.is_dir():
        raise CorpusError(f"{source}: no such folder (the package's html/_sources, unpacked by dpkg-deb -x)")
    files = sorted((p.relative_to(source).as_posix(), p) for p in source.rglob("*.rst.txt"))
    files = [(rel, p) for rel, p in files if rel.split("/")[0] != EXCLUDED]
    if not files:
        raise CorpusError(f"{source}: holds no *.rst.txt file outside {EXCLUDED}/: not the package's html/_sources")
    return files


def build(source):
    """The corpus of the sources under source, as a pyarrow table of SCHEMA, its rows shuffled."""
    rows = []
    for rel, path in source_files(source):
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise CorpusError(f"{path}: not UTF-8 ({e.reason} at byte {e.start})") from None
        for index, doc in enumerate(documents(text)):
            url = f"{SITE}/{rel}#{index}"
            rows.append({"text": doc, "id": f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, url)}>", "dump": PACKAGE,
                         "url": url, "date": None, "file_path": f"{PACKAGE_DIR}/{rel}", "language": "en",
                         "language_score": None})
    random.Random(SEED).shuffle(rows)
    counts = load_tokenizer().encode_ordinary_batch([r["text"] for r in rows])  # GPT-2's BPE (offline: TIKTOKEN_CACHE_DIR)
    for row, tokens in zip(rows, counts):
        row["token_count"] = len(tokens)
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def write(table, out):
    """Write the table to out, making its folder, through a temporary file: out is either complete or as it was."""
    tmp = out.with_name(out.name + ".tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, tmp, compression="snappy")
        os.replace(tmp, out)
    except OSError as e:
        if tmp.exists():
            tmp.unlink()
        raise CorpusError(f"{out}: cannot write it: {e.strerror or e}") from None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0], allow_abbrev=False)
    parser.add_argument("source", type=Path, help=f"the package's html/_sources folder (installed: {PACKAGE_DIR})")
    parser.add_argument("out", type=Path, help="the parquet file to write (replaced if it exists)")
    args = parser.parse_args(argv)
    try:
        table = build(args.source)
        write(table, args.out)
    except Error as e:  # a CorpusError, or the tokenizer that cannot be loaded
        print(f"kerneldocs.py: error: {e}", file=sys.stderr)
        return 1
    files = len({path for path in table.column("file_path").to_pylist()})
    print(f"wrote {table.num_rows:,} documents of {files:,} files, {sum(map(size, table.column('text').to_pylist())):,} "
          f"bytes, {sum(table.column('token_count').to_pylist()):,} GPT-2 tokens to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
