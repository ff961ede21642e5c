"""
Score what train.py runs return on one half of the validation shard, for studies that
choose settings on one half (tuning) and report on the other (test), which no choice sees.

    python evaluate.py runs/cpu300/pace_lr0.004_c0.5_k0.5_seed1337 --part tuning
    python evaluate.py runs/cpu300/*seed[123] --part test

The validation shard's N tokens are split at N // 2: the tuning half is tokens 0 .. N//2 - 1,
the test half N//2 .. N - 1, each scored on its whole sequences of block_size tokens (the
targets stay inside the half). For each run, the returned model (the EMA for ema and pace,
the last iterate for adamw) and the last iterate are scored from its ckpt.pt, and the mean
loss per token goes into RUN/eval_PART.json, written atomically:

    {"part", "val_file", "first_token", "tokens", "returned", "last"}

The training runs' own evaluations (train.py's eval_tokens) take the first tokens of the
shard, so they lie in the tuning half as long as eval_tokens < N // 2.
"""

import argparse
import json
import os
import sys

import numpy as np
import torch

import train
from prepare_fineweb import ShardError, read_shard
from sample import autocast, get_device, load_model

PARTS = ("tuning", "test")


def part_range(n_tokens, part):
    """-> (first, end): the token range of one half of a validation shard of n_tokens tokens."""
    half = n_tokens // 2
    return (0, half) if part == "tuning" else (half, n_tokens)


def score(out_dir, part, device):
    """-> the eval_PART.json record of the run in out_dir."""
    model, cfg = load_model(out_dir, "returned")
    val_file = os.path.join(cfg.data_dir, "fineweb_val_000000.bin")
    try:
        tokens = read_shard(val_file)
    except ShardError as e:
        train.die(f"{out_dir}: {e}")
    first, end = part_range(len(tokens), part)
    n_seq = (end - first - 1) // cfg.block_size
    if n_seq < 1:
        train.die(f"{val_file}: its {part} half holds {end - first} tokens, not one sequence of {cfg.block_size}")
    val = torch.from_numpy(tokens[first:end].astype(np.int64)).to(device)

    def loss(m):
        return train.evaluate(m.to(device), val, cfg.batch_size, cfg.block_size, 1, autocast(device))

    returned = loss(model)
    # adamw returns its last iterate: one pass serves both
    last = returned if cfg.optimizer == "adamw" else loss(load_model(out_dir, "last")[0])
    return {"part": part, "val_file": val_file, "first_token": first, "tokens": n_seq * cfg.block_size,
            "returned": returned, "last": last}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0], allow_abbrev=False)
    parser.add_argument("runs", nargs="+", help="run folders (train.py's out_dir), each with its ckpt.pt")
    parser.add_argument("--part", required=True, choices=PARTS, help="which half of the validation shard")
    parser.add_argument("--device", default="auto", help="auto (cuda if available) | cpu | cuda")
    args = parser.parse_args(argv)
    device = get_device(args.device)
    for out_dir in args.runs:
        record = score(out_dir, args.part, device)
        path = os.path.join(out_dir, f"eval_{args.part}.json")
        train.save_atomically(path, lambda f: f.write(json.dumps(record, indent=1).encode()))
        print(f"{out_dir}: {args.part} half, {record['tokens']:,} tokens: {record['returned']:.4f} returned model, "
              f"{record['last']:.4f} last iterate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
