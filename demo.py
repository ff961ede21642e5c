"""The whole pipeline at laptop scale: prepare a slice of FineWeb, train configs/cpu.py
with AdamW, EMA-evaluated AdamW and PACE, and compare the models they return: a table,
and their curves in out_dir/curves.png.

    make demo                                   # streams the slice from the hub
    PACE_DATA_FILES='/data/mytext/*.parquet' \\
    TIKTOKEN_CACHE_DIR=/data/tiktoken_cache make demo    # offline, from local files

A rerun reuses the prepared shards and skips (or resumes) the runs already done; the
GPU is used when there is one (train.py's device=auto). Any other --key=value is a
train.py setting for the three runs, after configs/cpu.py (python demo.py --max_steps=20).
"""

import argparse
import json
import os
import subprocess
import sys

from data import shard_paths, val_shard_path
from studies import plots, sweep

METHODS = ("adamw", "ema", "pace")
REPO = os.path.dirname(os.path.abspath(__file__))
CONFIGS = os.path.join(REPO, "configs")


def prepare(data_dir, data_files, max_tokens):
    """Shards in data_dir, reusing those of an earlier run when it completed; prepare_fineweb.py's exit status."""
    if os.path.exists(val_shard_path(data_dir)) and shard_paths(data_dir):
        print(f"demo: reusing the shards in {data_dir}")
        return 0
    source = ["--data_files", data_files] if data_files else []  # default: FineWeb from the hub
    print(f"demo: preparing {max_tokens:,} tokens of {data_files or 'FineWeb (hub)'} into {data_dir}", flush=True)
    # the first shard is validation, the rest training; --overwrite clears an interrupted attempt
    return subprocess.run([sys.executable, os.path.join(REPO, "prepare_fineweb.py"), *source, "--out_dir", data_dir,
                           "--max_tokens", str(max_tokens), "--shard_size", str(max_tokens // 4), "--overwrite"]).returncode


def report(out_dir):
    """A table of each method's returned model and where its files are."""
    print("\n| method | val_loss (returned model) | ema_val_loss | vanilla_val_loss (last iterate) | train_loss |")
    print("|---|---|---|---|---|")
    for method in METHODS:
        with open(os.path.join(out_dir, method, "result.json")) as f:
            summary = json.load(f)["summary"]
        cells = [summary["final_val_loss"], summary["ema_val_loss"], summary["vanilla_val_loss"], summary["final_train_loss"]]
        print(f"| {method} | " + " | ".join("-" if x is None else f"{x:.4f}" for x in cells) + " |")
    print(f"\nresults: {out_dir}/<method>/result.json, checkpoints: {out_dir}/<method>/ckpt.pt")
    print("val_loss is what each method returns: the last iterate for adamw, the EMA for ema and pace.")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--data_files", default=os.environ.get("PACE_DATA_FILES"),
                        help="local parquet/jsonl/txt glob instead of the hub (default: $PACE_DATA_FILES)")
    parser.add_argument("--data_dir", default="data/demo", help="where the shards go (default: %(default)s)")
    parser.add_argument("--max_tokens", type=int, default=2_000_000, help="tokens to prepare (default: %(default)s)")
    parser.add_argument("--out_dir", default="out/demo", help="one run folder per method (default: %(default)s)")
    args, train_settings = parser.parse_known_args(argv)  # studies/sweep.py checks and passes these on

    status = prepare(args.data_dir, args.data_files, args.max_tokens)
    if status != 0:
        return status
    # one run per method: the sweep skips completed runs and resumes interrupted ones
    status = sweep.main(["--method", ",".join(METHODS), "--config", os.path.join(CONFIGS, "cpu.py"),
                         "--config", os.path.join(CONFIGS, "{method}.py"), "--out", args.out_dir,
                         f"--data_dir={args.data_dir}", *train_settings])
    if status != 0:
        return status
    report(args.out_dir)
    # the picture: validation and training losses against tokens seen (and PACE's telemetry when recorded)
    plots.main([*(os.path.join(args.out_dir, m) for m in METHODS), "--out", os.path.join(args.out_dir, "curves.png")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
