"""
Score the model a train.py run returns on HellaSwag's validation set (10,042 items), in
completion style as build-nanogpt and llm.c do.

    python -m tools.hellaswag --out_dir=out/demo/pace                   # downloads the data once
    python -m tools.hellaswag --out_dir=out/demo/pace --data_file=hellaswag_val.jsonl --limit=500
    torchrun --standalone --nproc_per_node=8 -m tools.hellaswag --out_dir=out/gpt2

Each of an item's 4 endings is appended to its context (" " + ending, GPT-2 BPE) and
scored by the cross-entropy of its own tokens: the ending with the lowest mean is the
acc_norm prediction, the one with the lowest sum the acc prediction. Prints both
accuracies and writes {"n", "acc", "acc_norm", "model", "pred_norm"} to
out_dir/hellaswag.json. Under torchrun the items are split across the processes.
"""

import argparse
import json
import os
import sys
import urllib.request
from contextlib import nullcontext

import torch
import torch.distributed as dist
from torch.nn import functional as F
from tqdm import tqdm

from checkpoint import MODELS, autocast, get_device, load_model, save_atomically
from data import load_tokenizer
from errors import Error, first_line, script_errors
from processes import exit_now

URL = "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl"


def download(path):
    """The official validation file into path, unless it is there already."""
    if not os.path.exists(path):
        print(f"hellaswag: downloading {URL} to {path}")
        try:
            with urllib.request.urlopen(URL, timeout=60) as response:
                data = response.read()
        except OSError as e:
            raise Error(f"cannot download {URL}: {first_line(e)}; offline, pass --data_file")
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        save_atomically(path, lambda f: f.write(data))


def read_items(path):
    """The items of a HellaSwag jsonl file: each needs ctx, 4 endings and a label in 0..3."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except (OSError, UnicodeDecodeError) as e:
        raise Error(f"cannot read {path}: {first_line(e)}")
    items = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            valid = (isinstance(item["ctx"], str) and len(item["endings"]) == 4
                     and all(isinstance(e, str) for e in item["endings"]) and item["label"] in range(4))
        except (ValueError, KeyError, TypeError):
            valid = False
        if not valid:
            raise Error(f"{path}, line {number}: not a HellaSwag item (ctx, 4 endings, label 0-3)")
        items.append(item)
    if not items:
        raise Error(f"{path} holds no items")
    return items


def render(enc, item, block_size):
    """Context + ending token ids, one row per ending, and the number of ending tokens in each.
    A row longer than the model reads loses the start of its context."""
    context = enc.encode(item["ctx"])
    rows, lengths = [], []
    for ending in item["endings"]:
        tokens = enc.encode(" " + ending)
        if len(tokens) > block_size:
            raise Error(f"item {item.get('ind', item['ctx'][:40])!r}: an ending of {len(tokens)} tokens "
                        f"is longer than the model's block_size {block_size}")
        rows.append((context + tokens)[-(block_size + 1):])  # block_size inputs, each with its target
        lengths.append(len(tokens))
    return rows, lengths


@torch.no_grad()
def ending_losses(model, rows, lengths, device, precision=nullcontext()):
    """The cross-entropy of each row's last lengths[i] tokens, each given the tokens before
    it: summed over the ending, and its mean per token. precision: the run's autocast."""
    width = max(map(len, rows))
    tokens = torch.zeros(len(rows), width, dtype=torch.long)  # padded at the end, where causality ignores it
    mask = torch.zeros(len(rows), width - 1)  # 1 where the target is an ending token
    for i, (row, n) in enumerate(zip(rows, lengths)):
        tokens[i, :len(row)] = torch.tensor(row)
        mask[i, len(row) - 1 - n:len(row) - 1] = 1
    tokens, mask = tokens.to(device), mask.to(device)
    with precision:
        logits, _ = model(tokens[:, :-1])
    losses = F.cross_entropy(logits.float().transpose(1, 2), tokens[:, 1:], reduction="none")
    summed = (losses * mask).sum(1)
    return summed, summed / mask.sum(1)


@script_errors("hellaswag.py")
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out_dir", default="out", help="the run's folder, holding ckpt.pt (default: %(default)s)")
    parser.add_argument("--model", choices=MODELS, default="returned", help="(default: %(default)s)")
    parser.add_argument("--data_file", help="a local copy of hellaswag_val.jsonl (default: download it)")
    parser.add_argument("--cache_dir", default="data/hellaswag",
                        help="where the download is kept (default: %(default)s); with several nodes, a shared folder")
    parser.add_argument("--limit", type=int, help="score the first this many items only")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit must be at least 1, got {args.limit}")

    # processes and devices: torchrun sets RANK, LOCAL_RANK and WORLD_SIZE
    ddp = "RANK" in os.environ
    rank, local_rank, world_size = (int(os.environ[k]) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE")) if ddp else (0, 0, 1)
    device = get_device(args.device)
    if ddp and device == "cuda":
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
    if ddp:
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")

    model, cfg = load_model(args.out_dir, args.model)
    model.to(device)
    enc = load_tokenizer()
    if cfg.vocab_size < enc.n_vocab:
        raise Error(f"the run in {args.out_dir} has vocab_size {cfg.vocab_size}, fewer than GPT-2's {enc.n_vocab} tokens")
    path = args.data_file
    if path is None:
        path = os.path.join(args.cache_dir, os.path.basename(URL))
        if rank == 0:
            download(path)
        if ddp:
            dist.barrier()  # the file is complete before the other processes read it
    items = read_items(path)[:args.limit]

    preds = torch.zeros(2, len(items), dtype=torch.long, device=device)  # acc, acc_norm; 0 for other ranks' items
    for i in tqdm(range(rank, len(items), world_size), disable=rank != 0, unit="item", dynamic_ncols=True):
        summed, mean = ending_losses(model, *render(enc, items[i], cfg.block_size), device, autocast(cfg, device))
        preds[0, i], preds[1, i] = summed.argmin(), mean.argmin()
    if ddp:
        dist.all_reduce(preds)
    if rank == 0:
        labels = torch.tensor([item["label"] for item in items], device=device)
        acc, acc_norm = ((p == labels).double().mean().item() for p in preds)
        result = {"n": len(items), "acc": acc, "acc_norm": acc_norm, "model": args.model,
                  "pred_norm": preds[1].tolist()}
        result_path = os.path.join(args.out_dir, "hellaswag.json")
        save_atomically(result_path, lambda f: f.write(json.dumps(result).encode()))
        print(f"hellaswag: {len(items)} items, acc {acc:.4f}, acc_norm {acc_norm:.4f} "
              f"({args.model} model of {args.out_dir}); written to {result_path}")
    if ddp:
        dist.destroy_process_group()
        exit_now(0)


if __name__ == "__main__":
    sys.exit(main())
