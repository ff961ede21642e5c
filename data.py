"""
The data: token shards in llm.c's format, their file names, GPT-2's tokenizer, and the
DataLoader that serves training its batches. prepare_fineweb.py writes the shards; train.py,
the tools and the studies read them. Depends on numpy (tiktoken once the tokenizer is loaded).

A shard is a header of 256 little-endian int32 (magic 20240520, version 1, the number of
tokens, the rest 0), then the tokens as little-endian uint16. A data folder holds the
validation shard fineweb_val_000000.bin and the training shards fineweb_train_000001.bin,
fineweb_train_000002.bin, ...; in that order they are one stream of documents, each preceded
by the end-of-text token EOT, continuing across shard boundaries. Shards from llm.c and
modded-nanogpt (e.g. kjj0/fineweb10B-gpt2 on the hub) are in the same format.
"""

import glob
import os
import zlib

import numpy as np

from errors import Error, first_line

MAGIC = 20240520
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = 4 * HEADER_INTS
EOT = 50256  # GPT-2's <|endoftext|>
# tiktoken caches r50k_base under the sha1 of its download URL; tell offline users that name
R50K_CACHE_FILE = "0ea1e91bbb3a60f729a8dc8f777fd2fc07cd8df4"
FINGERPRINT_TOKENS = 1 << 20  # the tokens of each shard that DataLoader.fingerprint covers

# -----------------------------------------------------------------------------
# the shards: their names, writing and reading them


class ShardError(Error):
    """A shard file that is missing, truncated or not in llm.c's format."""


def shard_path(data_dir, index):
    """Shard `index` of data_dir: 0 is the validation shard, 1, 2, ... are the training shards."""
    split = "val" if index == 0 else "train"
    return os.path.join(data_dir, f"fineweb_{split}_{index:06d}.bin")


def val_shard_path(data_dir):
    return shard_path(data_dir, 0)


def shard_pattern(data_dir, split="train"):
    """The glob of data_dir's shards of a split: "train", "val", or "*" for every shard."""
    return os.path.join(data_dir, f"fineweb_{split}_*.bin")


def shard_paths(data_dir, split="train"):
    """The files of data_dir that shard_pattern matches, in shard order."""
    return sorted(glob.glob(shard_pattern(glob.escape(data_dir), split)))


def write_shard(path, tokens):
    """Write tokens as an llm.c shard; via a temporary file so `path` is either complete or absent."""
    tokens = np.asarray(tokens)
    if tokens.dtype != np.uint16 and tokens.size and (tokens.min() < 0 or tokens.max() >= 2**16):
        raise ValueError(f"{path}: token ids must fit in uint16")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = MAGIC, VERSION, len(tokens)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(header)
        f.write(np.ascontiguousarray(tokens, dtype="<u2"))  # no copy of a uint16 shard: memory stays one shard
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_shard(path):
    """Validate an llm.c shard's header and memory-map its tokens (uint16)."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(HEADER_BYTES)
    except OSError as e:
        raise ShardError(f"{path}: cannot read shard: {e.strerror}") from None
    if len(head) < HEADER_BYTES:
        raise ShardError(f"{path}: truncated shard: {size} bytes, less than the {HEADER_BYTES}-byte header")
    magic, version, ntok = (int(x) for x in np.frombuffer(head, dtype="<i4")[:3])
    if magic != MAGIC:
        raise ShardError(f"{path}: bad magic number {magic} (expected {MAGIC}): not an llm.c token shard")
    if version != VERSION:
        raise ShardError(f"{path}: unsupported shard version {version} (expected {VERSION})")
    expected = HEADER_BYTES + 2 * ntok
    if size != expected:
        what = "truncated shard" if size < expected else "shard size does not match its header"
        raise ShardError(f"{path}: {what}: header says {ntok} tokens ({expected} bytes), file has {size} bytes")
    return np.memmap(path, dtype="<u2", mode="r", offset=HEADER_BYTES, shape=(ntok,))

# -----------------------------------------------------------------------------
# the tokenizer


def load_tokenizer():
    """GPT-2's BPE. r50k_base rather than "gpt2": same ids, but one file, which tiktoken can load from
    TIKTOKEN_CACHE_DIR without touching the network."""
    import tiktoken
    try:
        enc = tiktoken.get_encoding("r50k_base")
    except Exception as e:
        raise Error(f"cannot load the GPT-2 tokenizer (tiktoken r50k_base): {first_line(e)}. Without internet, set "
                    f"TIKTOKEN_CACHE_DIR to a folder holding the r50k_base file (named {R50K_CACHE_FILE})")
    if enc.encode_ordinary("hello world") != [31373, 995] or enc.eot_token != EOT:
        raise Error("tiktoken's r50k_base does not give GPT-2 token ids (\"hello world\" should be [31373, 995])")
    return enc

# -----------------------------------------------------------------------------
# training's batches


class DataLoader:
    """The training shards read as one stream of tokens, a global batch at a time.

    Global batch k is the total_batch_size + 1 tokens from position k * total_batch_size
    (the extra token is the last target); when the stream has too few tokens left, it
    starts over from position 0. Micro-batch a (0 <= a < grad_accum_steps) of process r
    holds batch_size sequences, the (a * world_size + r)-th such share of the global batch.
    So the global batches do not depend on the number of processes (one process with two
    accumulation steps sees exactly the tokens two processes with one step see), and each
    process reads only its own tokens from the memory-mapped shards.
    """

    def __init__(self, data_dir, batch_size, block_size, grad_accum_steps, rank, world_size):
        files = shard_paths(data_dir)
        if not files:
            raise Error(f"no training shards {shard_pattern(data_dir)}: write them with prepare_fineweb.py")
        self.shards = [read_shard(f) for f in files]  # checks every header now, not hours into the run
        self.starts = np.cumsum([0] + [len(s) for s in self.shards])  # the stream position of each shard
        self.micro_tokens = batch_size * block_size
        self.total_batch_size = self.micro_tokens * grad_accum_steps * world_size
        if self.starts[-1] < self.total_batch_size + 1:
            raise Error(f"the training shards in {data_dir} hold {self.starts[-1]} tokens, "
                        f"fewer than one batch of total_batch_size + 1 = {self.total_batch_size + 1}")
        self.n_tokens = int(self.starts[-1])
        self.grad_accum_steps, self.rank, self.world_size = grad_accum_steps, rank, world_size
        self.pos = 0  # where the next global batch starts: part of the checkpoint

    def next_batch(self):
        """This process's micro-batches of the next global batch: int64 arrays of batch_size * block_size + 1 tokens."""
        if self.pos + self.total_batch_size + 1 > self.starts[-1]:
            self.pos = 0  # the next pass over the data
        batch = [self.read(self.pos + (a * self.world_size + self.rank) * self.micro_tokens, self.micro_tokens + 1)
                 for a in range(self.grad_accum_steps)]
        self.pos += self.total_batch_size
        return batch

    def read(self, start, n):
        """n tokens from stream position start on, across shard boundaries (documents continue across them)."""
        i = int(np.searchsorted(self.starts, start, side="right")) - 1
        parts = []
        while n > 0:
            part = self.shards[i][start - self.starts[i]:][:n]
            parts.append(part)
            n, start, i = n - len(part), start + len(part), i + 1
        return np.concatenate(parts).astype(np.int64)

    def fingerprint(self):
        """The shards' token counts and a CRC-32 of the first FINGERPRINT_TOKENS of each: nodes whose
        copies of the data differ would read other batches at the same positions."""
        crc = 0
        for shard in self.shards:
            crc = zlib.crc32(np.ascontiguousarray(shard[:FINGERPRINT_TOKENS]).tobytes(), zlib.crc32(np.int64(len(shard)).tobytes(), crc))
        return f"{self.n_tokens} tokens in {len(self.shards)} shards, checksum {crc:08x}"
