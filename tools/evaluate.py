"""
Score what train.py runs return on one half of the validation shard, for studies that
choose settings on one half (tuning) and report on the other (test), which no choice sees.

    python -m tools.evaluate results/cpu300/pace_lr0.004_c0.5_k0.5_seed1337 --part tuning
    python -m tools.evaluate results/cpu300/*seed[123] --part test
    python -m tools.evaluate results/cpu300/*seed[123] --part test --bytes_only   # an older eval file: add "bytes"

The validation shard's N tokens are split at N // 2: the tuning half is tokens 0 .. N//2 - 1,
the test half N//2 .. N - 1, each scored on its whole sequences of block_size tokens (the
targets stay inside the half). For each run, the returned model (the EMA for ema and pace,
the last iterate for adamw) and the last iterate are scored from its ckpt.pt, and the mean
loss per token goes into RUN/eval_PART.json, written atomically:

    {"part", "val_file", "first_token", "tokens", "bytes", "returned", "last", "code"}
    + for ema and pace: "blends": {"0": .., "0.25": .., "0.5": .., "0.75": .., "1": ..}
    + for pace: "last_step_gains": {"step": .., "token embedding": {"mean_gain", "clamped_share", "numel"},
                                    "other matrices": {...}, "vectors": {...}}

"code" is the scoring's provenance (provenance.py: commit, dirty, torch, device, command); the
run's own is in its result.json. "bytes" is the UTF-8 length of the text of the scored targets
(GPT-2 tokens; the end-of-text token between documents is no text: 0 bytes), so that a loss
converts to bits per byte: loss * tokens / (bytes * ln 2). "blends" are the losses of the
weights alpha * EMA + (1 - alpha) * last iterate: alpha 1 is the returned model, 0 the last iterate.
"last_step_gains" are PACE's pullback gains of the run's last step, recomputed from the
checkpoint's second moments, per parameter group (the token embedding, tied to the output
layer; the other matrices; the vectors): their mean and the share that was clamped to 1.
--bytes_only adds "bytes" to an eval file written before it existed, from the run's
result.json, without the checkpoint.

The training runs' own evaluations (train.py's eval_tokens) take the first tokens of the
shard, so they lie in the tuning half as long as eval_tokens < N // 2.
"""

import argparse
import functools
import json
import os
import sys

import numpy as np
import torch

import pace
from checkpoint import autocast, get_device, load_run, save_json
from model import mean_loss
from data import EOT, ShardError, load_tokenizer, read_shard, val_shard_path
from errors import Error, first_line, script_errors
from provenance import device_description, provenance
from settings import get_lr

PARTS = ("tuning", "test")
BLENDS = (0, 0.25, 0.5, 0.75, 1)  # alpha: the weight of the EMA
GAIN_GROUPS = ("token embedding", "other matrices", "vectors")


def part_range(n_tokens, part):
    """-> (first, end): the token range of one half of a validation shard of n_tokens tokens."""
    half = n_tokens // 2
    return (0, half) if part == "tuning" else (half, n_tokens)


def read_half(data_dir, block_size, part, out_dir):
    """-> (val_file, its tokens, the half's first token, its whole sequences): what a run in
    out_dir, trained on data_dir, is scored on."""
    val_file = val_shard_path(data_dir)
    try:
        tokens = read_shard(val_file)
    except ShardError as e:
        raise Error(f"{out_dir}: {e}")
    first, end = part_range(len(tokens), part)
    n_seq = (end - first - 1) // block_size
    if n_seq < 1:
        raise Error(f"{val_file}: its {part} half holds {end - first} tokens, not one sequence of {block_size}")
    return val_file, tokens, first, n_seq


@functools.cache  # one table per process: 50,257 look-ups
def token_lengths():
    """The UTF-8 length of every GPT-2 token, indexed by its id; the end-of-text token is no text."""
    enc = load_tokenizer()
    lengths = np.array([len(enc.decode_single_token_bytes(i)) for i in range(enc.n_vocab)], dtype=np.int64)
    lengths[EOT] = 0
    return lengths


def target_bytes(tokens, first, n_seq, block_size, val_file):
    """The UTF-8 bytes of the targets that evaluation predicts: the n_seq * block_size tokens
    after the half's first one. Padding ids (>= 50257) are no text and cannot occur in data."""
    targets = np.asarray(tokens[first + 1:first + 1 + n_seq * block_size])
    lengths = token_lengths()
    if targets.max() >= len(lengths):
        raise Error(f"{val_file}: token id {int(targets.max())} is not a GPT-2 token (ids end at {len(lengths) - 1})")
    return int(lengths[targets].sum())


@torch.no_grad()
def blend_losses(opt, loss):
    """{alpha: loss()} with the parameters set to alpha * EMA + (1 - alpha) * last iterate, for
    the alphas strictly between 0 and 1; the last iterate is back in place afterwards."""
    params = [p for group in opt.param_groups for p in group["params"]]
    last = [p.detach().clone() for p in params]
    losses = {}
    for alpha in BLENDS[1:-1]:
        for p, w in zip(params, last):
            p.copy_(torch.lerp(w, opt.state[p]["ema"].to(w.dtype), alpha))
        losses[alpha] = loss()
    for p, w in zip(params, last):
        p.copy_(w)
    return losses


def gain_group(model, p):
    """Which of GAIN_GROUPS a parameter belongs to: the token embedding (the output layer's
    weight too) sees few gradients for rare tokens, so its gains differ from other matrices'."""
    if p is model.transformer.wte.weight:
        return GAIN_GROUPS[0]
    return GAIN_GROUPS[1] if p.dim() >= 2 else GAIN_GROUPS[2]


@torch.no_grad()
def last_step_gains(model, opt, cfg):
    """PACE's pullback gains of the last step, per GAIN_GROUPS: {"mean_gain", "clamped_share",
    "numel"}, recomputed from the checkpoint's second moments (Adam's v after that step) with the
    scalars pace.py used (_step_scalars at that step's index and lr) and the per-coordinate
    formula of pace._pace_tensor_step, in the same floating-point operations, so that the
    telemetry of a step that recorded it is reproduced."""
    sums = {name: {"gain": 0.0, "clamped": 0, "numel": 0} for name in GAIN_GROUPS}
    steps = set()
    for group in opt.param_groups:
        for p in group["params"]:
            state = opt.state[p]
            t = state["step"] - 1  # the last step's index: state["step"] counts the completed steps
            steps.add(state["step"])
            const, per_step = pace._step_scalars({**group, "lr": get_lr(t, cfg)}, t)
            inv_denom = (state["exp_avg_sq"].sqrt() * per_step.inv_bias_correction2_sqrt).add_(const.eps).reciprocal_()
            raw_gain = inv_denom * per_step.pull_scale
            gain = raw_gain.clamp(max=const.max_gain)
            group_sums = sums[gain_group(model, p)]
            group_sums["gain"] += gain.sum(dtype=torch.float64).item()
            group_sums["clamped"] += int((raw_gain > gain).sum())
            group_sums["numel"] += gain.numel()
    gains = {"step": max(steps)}
    for name, group_sums in sums.items():
        gains[name] = {"mean_gain": group_sums["gain"] / group_sums["numel"],
                       "clamped_share": group_sums["clamped"] / group_sums["numel"], "numel": group_sums["numel"]}
    return gains


def score(out_dir, part, device):
    """-> the eval_PART.json record of the run in out_dir."""
    model, opt, cfg = load_run(out_dir)
    model.eval()
    val_file, tokens, first, n_seq = read_half(cfg.data_dir, cfg.block_size, part, out_dir)
    record = {"part": part, "val_file": val_file, "first_token": first, "tokens": n_seq * cfg.block_size,
              "bytes": target_bytes(tokens, first, n_seq, cfg.block_size, val_file),
              "code": provenance([device_description(device)])}
    val = torch.from_numpy(tokens[first:first + n_seq * cfg.block_size + 1].astype(np.int64)).to(device)
    model.to(device)

    def loss():
        return mean_loss(model, val, cfg.batch_size, cfg.block_size, autocast=autocast(cfg, device))

    last = loss()
    if cfg.optimizer == "adamw":  # adamw returns its last iterate: one pass serves both
        return {**record, "returned": last, "last": last}
    opt.eval()  # the EMA into the model, as the method returns it
    returned = loss()
    opt.train()  # the last iterate back, bit for bit
    blends = {0: last, **blend_losses(opt, loss), 1: returned}
    record.update(returned=returned, last=last, blends={f"{alpha:g}": blends[alpha] for alpha in BLENDS})
    if cfg.optimizer == "pace":
        record["last_step_gains"] = last_step_gains(model, opt, cfg)
    return record


def read_json(path):
    """The JSON object in path, or a one-line error naming it."""
    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, ValueError) as e:
        raise Error(f"{path}: cannot read it ({type(e).__name__}: {first_line(e)})")
    if not isinstance(value, dict):
        raise Error(f"{path}: not a JSON object")
    return value


def add_bytes(out_dir, part):
    """-> the run's eval_PART.json record with "bytes" added, from its result.json's config
    alone (for eval files written before "bytes" was, whose checkpoints may be gone); the
    record's token range must be the one the config gives."""
    path, result_path = (os.path.join(out_dir, name) for name in (f"eval_{part}.json", "result.json"))
    record, config = read_json(path), read_json(result_path).get("config")
    if not isinstance(config, dict) or not {"data_dir", "block_size"} <= config.keys():
        raise Error(f"{result_path}: its config lacks data_dir or block_size")
    block_size = config["block_size"]
    val_file, tokens, first, n_seq = read_half(config["data_dir"], block_size, part, out_dir)
    scored = (record.get("first_token"), record.get("tokens"))
    if scored != (first, n_seq * block_size):
        raise Error(f"{path}: scored {scored[1]} tokens from {scored[0]}, but {val_file}'s {part} half has "
                    f"{n_seq * block_size} from {first}")
    return {**record, "bytes": target_bytes(tokens, first, n_seq, block_size, val_file)}


@script_errors("evaluate.py")
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0], allow_abbrev=False)
    parser.add_argument("runs", nargs="+", help="run folders (train.py's out_dir), each with its ckpt.pt")
    parser.add_argument("--part", required=True, choices=PARTS, help="which half of the validation shard")
    parser.add_argument("--device", default="auto", help="auto (cuda if available) | cpu | cuda")
    parser.add_argument("--bytes_only", action="store_true",
                        help="add the byte count to each run's existing eval_PART.json (from result.json; no ckpt.pt)")
    args = parser.parse_args(argv)
    device = get_device(args.device)
    for out_dir in args.runs:
        record = add_bytes(out_dir, args.part) if args.bytes_only else score(out_dir, args.part, device)
        path = os.path.join(out_dir, f"eval_{args.part}.json")
        save_json(path, record)
        print(f"{out_dir}: {args.part} half, {record['tokens']:,} tokens, {record['bytes']:,} bytes: "
              f"{record['returned']:.4f} returned model, {record['last']:.4f} last iterate"
              + "".join(f", {loss:.4f} at α={alpha}" for alpha, loss in record.get("blends", {}).items()
                        if alpha not in ("0", "1")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
