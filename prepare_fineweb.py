"""
Tokenize FineWeb with the GPT-2 BPE into llm.c-format shards that training memory-maps.

Usage:
    python prepare_fineweb.py                                   # FineWeb sample-10BT, streamed from the hub
    python prepare_fineweb.py --dataset HuggingFaceFW/fineweb-edu --name sample-10BT
    python prepare_fineweb.py --max_tokens 10000000 --out_dir data/fineweb10M --overwrite
    python prepare_fineweb.py --data_files 'corpus/*.parquet' --out_dir data/mini --shard_size 1000000
    TIKTOKEN_CACHE_DIR=/data/tiktoken_cache python prepare_fineweb.py --data_files '...'   # offline

Input: a hub dataset through `datasets` (streamed, so the raw text never lands on disk), or with
--data_files local parquet / jsonl files with a `text` column (FineWeb's schema) or .txt files
(one document per file), read through the same streaming code path.

Output, in --out_dir: fineweb_val_000000.bin, then fineweb_train_000001.bin, fineweb_train_000002.bin, ...
each holding --shard_size tokens (the last one the remainder), in llm.c's format (data.py). Every
document is preceded by the end-of-text token 50256 and documents continue across shard boundaries,
so the shards concatenated in order are exactly [50256] + encode_ordinary(text) over the documents
in input order.

Tokenizer: tiktoken's r50k_base, byte-for-byte the GPT-2 BPE. Online it is downloaded once; on a
machine without internet set TIKTOKEN_CACHE_DIR to a folder holding its file.

Speed: --num_proc worker processes tokenize batches of documents while the main process reads the
input and writes the shards, in input order; memory stays about one shard whatever the dataset size.

Safety: each shard is written under a temporary name and renamed when complete, so an interrupted
run never leaves a truncated shard under a final name. A run refuses an --out_dir that already
holds shards, so that old and new shards never mix; --overwrite deletes them first.
"""

import argparse
import collections
import glob
import itertools
import multiprocessing
import os
import tempfile
import time

import numpy as np
from tqdm import tqdm

from data import EOT, load_tokenizer, shard_path, shard_paths, write_shard
from errors import Error, first_line, script_errors

BATCH_DOCS = 256  # documents per task sent to a worker: large enough to amortize the IPC

# datasets' builder for each kind of local file, and the options that make it read our documents
BUILDERS = {
    ".parquet": ("parquet", {"batch_size": BATCH_DOCS}),  # its default (a row group) fails on files without rows
    ".jsonl": ("json", {}),
    ".json": ("json", {}),
    ".txt": ("text", {"sample_by": "document", "encoding_errors": "replace"}),  # a file is a document; bad bytes -> U+FFFD
}

# -----------------------------------------------------------------------------
# tokenization

enc = None  # the tokenizer, in each worker process


def init_worker():
    global enc
    enc = load_tokenizer()


def tokenize(texts):
    """[EOT] + encode_ordinary(text) for each document, concatenated, as uint16."""
    eot = np.array([EOT], dtype=np.uint32)
    parts = []
    for text in texts:
        # encode_ordinary's ids without the cost of a Python list: with disallowed_special=(),
        # "<|endoftext|>" in a text is plain text, as in encode_ordinary
        parts += [eot, enc.encode_to_numpy(text or "", disallowed_special=())]  # null text: an empty document
    return np.concatenate(parts).astype(np.uint16)


def tokenize_in_workers(pool, batches, num_proc):
    """Yield the tokens of each batch in input order. Only a few batches are in flight at a time,
    so memory stays bounded however fast the input can be read."""
    pending = collections.deque()
    for texts in batches:
        pending.append(pool.apply_async(tokenize, (texts,)))
        if len(pending) > 2 * num_proc:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()

# -----------------------------------------------------------------------------
# input and output

def load_documents(args):
    """Stream the documents' text in input order, as lists of up to BATCH_DOCS strings."""
    if args.data_files:
        source = f"--data_files {args.data_files}"
        files = sorted(glob.glob(args.data_files, recursive=True))
        if not files:
            raise Error(f"{source}: no file matches")
        kinds = sorted({os.path.splitext(f)[1] for f in files})
        if len(kinds) > 1 or kinds[0] not in BUILDERS:
            raise Error(f"{source}: matches {', '.join(k or 'extensionless' for k in kinds)} files; "
                        f"expected files of one kind among {', '.join(BUILDERS)}")
        path, options = BUILDERS[kinds[0]]
        options = dict(options, data_files=files)
        # local files need nothing from the hub; without this, datasets pings it (a wait of seconds offline)
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    else:
        source = f"--dataset {args.dataset} --name {args.name}"
        path, options = args.dataset, {"name": args.name}
    # datasets would import torch (seconds) just to share a counter with DataLoader workers, which we don't use
    os.environ.setdefault("USE_TORCH", "0")
    import datasets
    try:
        ds = datasets.load_dataset(path, split="train", streaming=True, **options)
        if ds.column_names and "text" in ds.column_names:
            ds = ds.select_columns(["text"])  # skip decoding FineWeb's other columns
        batches = ds.iter(batch_size=BATCH_DOCS)
        first = next(batches, None)
    except StopIteration:  # what datasets' json builder raises for a file without rows
        first = None
    except Exception as e:
        hint = "" if args.data_files else "; without internet, point --data_files at local files instead"
        raise Error(f"{source}: cannot read the dataset: {first_line(e)}{hint}")
    if first is None:
        raise Error(f"{source}: the dataset is empty")
    if "text" not in first:
        raise Error(f"{source}: the dataset has no 'text' column; its columns are: {', '.join(first)}")
    return itertools.chain([first["text"]], (batch["text"] for batch in batches))


def check_out_dir(out_dir, overwrite):
    """Make sure we can write to out_dir; return the shards already there (refused without --overwrite)."""
    try:
        os.makedirs(out_dir, exist_ok=True)
        tempfile.TemporaryFile(dir=out_dir).close()
    except OSError as e:
        raise Error(f"--out_dir {out_dir}: not writable: {e.strerror}")
    existing = shard_paths(out_dir, "*")
    if existing and not overwrite:
        raise Error(f"--out_dir {out_dir}: already holds {len(existing)} shard(s) (e.g. {os.path.basename(existing[0])}); "
                    f"pass --overwrite to replace them, or choose another --out_dir")
    return existing


def write_shards(token_batches, out_dir, shard_size, max_tokens, progress):
    """Pack the token stream into shards of shard_size tokens (the last one the remainder).
    Returns (tokens written, shards written)."""
    shard = np.empty(shard_size, dtype=np.uint16)  # the only large buffer: memory is about one shard
    fill = nshards = total = 0
    for tokens in token_batches:
        if max_tokens is not None:
            tokens = tokens[:max_tokens - total]
        total += len(tokens)
        progress.update(len(tokens))
        while len(tokens):
            n = min(shard_size - fill, len(tokens))
            shard[fill:fill + n] = tokens[:n]
            fill, tokens = fill + n, tokens[n:]
            if fill == shard_size:
                write_shard(shard_path(out_dir, nshards), shard)
                fill, nshards = 0, nshards + 1
        if total == max_tokens:
            break
    if fill:
        write_shard(shard_path(out_dir, nshards), shard[:fill])
        nshards += 1
    return total, nshards

# -----------------------------------------------------------------------------

def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Tokenize FineWeb (or local files) with the GPT-2 BPE into llm.c .bin shards.",
        epilog="An --out_dir that already holds fineweb_*.bin shards is refused unless --overwrite is given, "
               "so that shards of two runs never mix. Offline: set TIKTOKEN_CACHE_DIR to a folder holding "
               "tiktoken's r50k_base file and use --data_files.")
    parser.add_argument("--dataset", default="HuggingFaceFW/fineweb", help="hub dataset (default: %(default)s)")
    parser.add_argument("--name", default="sample-10BT", help="its configuration (default: %(default)s)")
    parser.add_argument("--data_files", metavar="GLOB",
                        help="read local .parquet/.jsonl/.json files with a 'text' column, or .txt files "
                             "(one document per file), instead of --dataset")
    parser.add_argument("--out_dir", default="data/fineweb10B", help="where to write the shards (default: %(default)s)")
    parser.add_argument("--shard_size", type=int, default=100_000_000, help="tokens per shard (default: %(default)s)")
    parser.add_argument("--max_tokens", type=int, help="stop after this many tokens (default: the whole dataset)")
    parser.add_argument("--num_proc", type=int, default=os.cpu_count(),
                        help="tokenizer processes (default: all %(default)s cores)")
    parser.add_argument("--overwrite", action="store_true", help="delete the shards already in --out_dir first")
    args = parser.parse_args(argv)
    if not 1 <= args.shard_size < 2**31:  # the header stores the count as int32
        parser.error("--shard_size must be between 1 and 2**31 - 1")
    if args.max_tokens is not None and args.max_tokens < 1:
        parser.error("--max_tokens must be at least 1")
    if args.num_proc < 1:
        parser.error("--num_proc must be at least 1")
    return args


@script_errors("prepare_fineweb.py")
def main(argv=None):
    args = parse_args(argv)
    existing = check_out_dir(args.out_dir, args.overwrite)
    load_tokenizer()  # fail early, before any work, if it cannot be loaded
    # start the workers before `datasets` is imported, so they fork from a small process without its threads
    with multiprocessing.Pool(args.num_proc, initializer=init_worker) as pool:
        batches = load_documents(args)
        for path in existing:  # only now that the input is known to be readable
            os.remove(path)
        t0 = time.perf_counter()
        with tqdm(total=args.max_tokens, unit="tok", unit_scale=True, desc="tokenizing") as progress:
            tokens = tokenize_in_workers(pool, batches, args.num_proc)
            total, nshards = write_shards(tokens, args.out_dir, args.shard_size, args.max_tokens, progress)
        dt = time.perf_counter() - t0
    print(f"wrote {total:,} tokens in {nshards} shard(s) to {args.out_dir} in {dt:.1f}s ({total / dt:,.0f} tokens/s)")


if __name__ == "__main__":
    main()
