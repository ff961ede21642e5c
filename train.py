"""
Pretrain GPT-2 on FineWeb with AdamW, EMA-evaluated AdamW or PACE, on one process or many.

    python train.py configs/pace.py                      # GPT-2-124M on FineWeb 10B, one GPU
    torchrun --standalone --nproc_per_node=8 train.py configs/gpu80gb.py configs/pace.py
    python train.py configs/cpu.py configs/ema.py        # a small model, a few minutes on a CPU
    python train.py configs/cpu.py --lr=3e-3 --out_dir=out/lr3e-3

Settings (the Settings class below) start at their defaults, which are the GPT-2-124M
recipe. Config files are Python files that assign some of them; --key=value arguments set
one, its value a Python literal (--compile=False, --betas=(0.9,0.95)); a string may be
bare (--out_dir=out/x). Later files and arguments win.

A run writes two files into out_dir:
  result.json  {"config", "summary", "eval_logs", "step_logs"}, rewritten at every evaluation;
               summary.status is "running", "completed" or "failed"; summary.eval_time is the
               seconds spent evaluating, summary.data_passes the passes over the training data;
               for ema and pace, step_logs hold PACE's telemetry every stats_interval steps.
  ckpt.pt      the live weights (ckpt["model"]), the optimizer with its EMA, the step, the
               data position, the RNG states, the config and the logs.
--resume=True continues the run in out_dir from ckpt.pt; a run killed at any moment and
resumed ends exactly as it would have without the interruption. With several nodes, out_dir
must be on a file system they share.

Under torchrun every process checks the settings, out_dir, the checkpoint and the data before
the first collective; then all agree (the same settings, step, data position and weights, and
one implementation of the optimizer step) or all stop, with the failing rank's message.

The model a method returns is the EMA for ema and pace: to get it from ckpt.pt, load
ckpt["model"] into the model and ckpt["optimizer"] into the optimizer, then call opt.eval().
"""

import ast
import glob
import inspect
import json
import math
import os
import re
import runpy
import sys
import time
import types
import typing
import zlib
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from model import GPT, GPTConfig
from pace import PACE, fused_error
from prepare_fineweb import ShardError, read_shard


@dataclass
class Settings:
    # data and output
    data_dir: str = "data/fineweb10B"  # the shards written by prepare_fineweb.py
    out_dir: str = "out"
    resume: bool = False  # continue the run in out_dir from its ckpt.pt
    # system
    device: str = "auto"  # auto (cuda if available) | cpu | cuda
    compile: bool | None = None  # torch.compile the model; None: on for cuda, off for cpu
    seed: int = 1337  # of the model's initialization
    # model: GPT-2-124M
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    block_size: int = 1024
    vocab_size: int = 50304  # GPT-2's 50257 padded to a multiple of 64
    # batch: gradient accumulation steps = total_batch_size / (batch_size * block_size * processes)
    batch_size: int = 16  # sequences per micro-batch per process: as many as fit in memory
    total_batch_size: int = 524288  # tokens per optimizer step: 2**19, about GPT-3 small's 0.5M
    max_steps: int = 19073  # 10B tokens / total_batch_size: one pass over FineWeb 10B
    # optimizer: the three methods are one PACE optimizer at three settings (make_optimizer)
    optimizer: str = "adamw"  # adamw | ema (AdamW, the EMA returned) | pace (AdamW pulled toward the EMA, the EMA returned)
    lr: float = 6e-4  # peak learning rate, GPT-3 small's
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    lambda_pullback: float = 0.15  # c, the pullback strength; used by pace only
    clamp_pullback: bool = True  # clamp each coordinate's pullback gain to at most 1
    ema_kappa: float | None = 0.2  # κ: the EMA decays as (1 + γ·max(0, t − ρ))^(−κ); None: a fixed beta_ema
    ema_rho: float = 0.0  # ρ, steps before the EMA decay starts to shrink
    ema_gamma: float = 1.0  # γ, the rate at which it shrinks
    beta_ema: float = 0.01  # the fixed EMA decay when ema_kappa is None
    ema_update_freq: int = 1  # update the EMA every this many steps
    grad_clip: float = 1.0  # clip the global gradient norm to this; 0 disables clipping
    # learning-rate schedule: linear warmup, then const | cos | wsd
    schedule: str = "cos"  # cos: cosine decay to min_lr_ratio·lr; wsd: lr, then linear decay over the last decay_frac of the steps
    warmup_steps: int = 700
    min_lr_ratio: float = 0.1  # cos and wsd end at min_lr_ratio·lr
    decay_frac: float = 0.2  # wsd only
    # evaluation, logging, checkpoints. With these defaults evaluation costs ~2.1% of the recipe's
    # compute (an estimate; a forward pass costs ~1/3 of a training step per token): training is
    # 19,073 * 524,288 * 3 = 3.0e10 forward-token equivalents; pace and ema evaluate the EMA 39 times
    # (steps 500, 1000, ..., 19000, 19073) and the last iterate 20 times (1000, ..., 19000, 19073):
    # 59 * 10,485,760 = 6.2e8 forward tokens, 2.06% (adamw: 39 passes, 1.36%). eval_share() counts it.
    eval_interval: int = 500  # evaluate the returned model every this many steps, and after the last
    vanilla_eval_interval: int = 1000  # ema, pace: the last iterate too, at evaluations of multiples of this and after the last
    eval_tokens: int = 10_485_760  # the first this many tokens of the validation shard: the community's 10M
    log_interval: int = 10  # read the training loss back from the device every this many steps
    ckpt_interval: int = 1000  # write ckpt.pt every this many steps, and after the last
    # ema, pace: PACE's telemetry (get_step_stats) into step_logs at the multiples of stats_interval; 0: never.
    # Such a step runs pace.py's plain loop instead of the fused kernel, an estimate of its extra cost for
    # GPT-2-124M on a GPU: ~48 eager ops on each of 148 tensors, 7,100 ops at 5-10 us = 36-71 ms, plus
    # ~330 more bytes of memory traffic per parameter (368 against 36), 41 GB at 1.7-3 TB/s = 14-24 ms:
    # <0.1 s. The fastest step, 8 H100s at 50% MFU, is 8.5e8 FLOPs x 524,288 tokens / (8 x 495e12 FLOP/s)
    # = 0.113 s, so every 250 steps costs <0.1 / (250 x 0.113) = 0.35%.
    stats_interval: int = 250
    # Weights & Biases, as nanoGPT: the master process logs step_logs, eval_logs and the summary to it
    wandb_log: bool = False  # needs pip install wandb
    wandb_project: str = "pace"
    wandb_run_name: str | None = None  # None: out_dir's last folder name


# settings a resumed run may change: where files are and how the steps are executed, not what they compute
# (stats_interval is not one: its steps take pace.py's plain loop, which rounds differently)
RESUMABLE_CHANGES = ("data_dir", "out_dir", "resume", "device", "compile", "batch_size",
                     "eval_interval", "vanilla_eval_interval", "log_interval", "ckpt_interval",
                     "wandb_log", "wandb_project", "wandb_run_name")
# what a checkpoint holds; eval_time too, except in those written before train.py recorded it
CHECKPOINT_KEYS = ("model", "optimizer", "step", "data_pos", "rng", "config", "eval_logs", "step_logs", "wall_time")
# dense bf16 peak FLOP/s (no sparsity) of some GPUs, for the MFU in the progress bar. The first name
# found as whole words in torch.cuda.get_device_name() wins: "NVIDIA H100 80GB HBM3" is the SXM card.
PEAK_FLOPS = (
    ("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("H200 NVL", 835e12), ("H200", 989e12),
    ("B200", 2.25e15), ("A100", 312e12), ("L40S", 362e12),
    ("RTX 4090", 165e12),  # with float32 accumulation, as under autocast; 330e12 is with float16 accumulation
)
ERROR_PREFIX = "train.py: error: "


def die(message):
    raise SystemExit(f"{ERROR_PREFIX}{message}")


def load_settings(args):
    """Settings from the defaults, then config files and --key=value arguments in order."""
    setting_types = {f.name: f.type for f in fields(Settings)}
    values = {}

    def set_value(key, value, source):
        if key not in setting_types:
            die(f"unknown setting {key!r} ({source}); valid settings: {', '.join(setting_types)}")
        values[key] = typed(key, value, setting_types[key], source)

    for arg in args:
        if arg.startswith("--"):
            key, eq, text = arg[2:].partition("=")
            if not eq:
                die(f"{arg}: expected --key=value")
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                value = text  # a bare string
            if setting_types.get(key) is str and not isinstance(value, str):
                value = text  # --out_dir=1e3 is the folder "1e3"
            set_value(key, value, arg)
        else:
            if not os.path.isfile(arg):
                die(f"config file {arg} not found")
            for key, value in runpy.run_path(arg).items():
                if not key.startswith("_"):
                    set_value(key, value, arg)
    return Settings(**values)


def typed(key, value, typ, source):
    """value as a value of type typ (an int is a float too), or a clear error."""
    expected = typ
    if isinstance(typ, types.UnionType):  # X | None
        if value is None:
            return None
        typ = typing.get_args(typ)[0]
    if typing.get_origin(typ) is tuple:
        items = typing.get_args(typ)
        if isinstance(value, (tuple, list)) and len(value) == len(items):
            return tuple(typed(key, v, t, source) for v, t in zip(value, items))
    elif typ is float and type(value) is int:
        return float(value)
    elif type(value) is typ:
        return value
    die(f"{key} must be {expected.__name__ if isinstance(expected, type) else expected}, got {value!r} ({source})")


def check_settings(cfg):
    """The checks of values that the types alone do not catch."""
    for key, allowed in (("device", ("auto", "cpu", "cuda")), ("optimizer", ("adamw", "ema", "pace")),
                         ("schedule", ("const", "cos", "wsd"))):
        if getattr(cfg, key) not in allowed:
            die(f"{key} must be one of {', '.join(allowed)}, got {getattr(cfg, key)!r}")
    for key in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size", "batch_size", "total_batch_size",
                "max_steps", "eval_interval", "vanilla_eval_interval", "eval_tokens", "log_interval", "ckpt_interval"):
        if getattr(cfg, key) <= 0:
            die(f"{key} must be positive, got {getattr(cfg, key)}")
    if cfg.n_embd % cfg.n_head:
        die(f"n_embd ({cfg.n_embd}) must be a multiple of n_head ({cfg.n_head})")
    if cfg.eval_tokens % cfg.block_size:
        die(f"eval_tokens ({cfg.eval_tokens}) must be a multiple of block_size ({cfg.block_size})")
    for key in ("warmup_steps", "grad_clip", "stats_interval"):
        if getattr(cfg, key) < 0:
            die(f"{key} must not be negative, got {getattr(cfg, key)}")
    if not 0 <= cfg.min_lr_ratio <= 1:
        die(f"min_lr_ratio must be in [0, 1], got {cfg.min_lr_ratio}")
    if not 0 < cfg.decay_frac <= 1:
        die(f"decay_frac must be in (0, 1], got {cfg.decay_frac}")
    if cfg.optimizer == "pace" and cfg.lambda_pullback <= 0:
        die("optimizer=pace needs lambda_pullback > 0 (with 0 it is optimizer=ema)")


def import_wandb():
    """wandb, imported only when wandb_log is on."""
    try:
        import wandb
    except ImportError:
        die("wandb_log=True but wandb is not installed: pip install wandb, or set wandb_log=False")
    return wandb


def make_optimizer(cfg, model):
    """adamw: no pullback, no EMA; ema: no pullback, the EMA returned; pace: pullback, the EMA returned."""
    try:
        return PACE(model.optim_groups(cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                    lambda_pullback=cfg.lambda_pullback if cfg.optimizer == "pace" else 0.0,
                    use_ema_eval=cfg.optimizer != "adamw", clamp_pullback=cfg.clamp_pullback,
                    ema_kappa=cfg.ema_kappa, ema_rho=cfg.ema_rho, ema_gamma=cfg.ema_gamma,
                    beta_ema=cfg.beta_ema, ema_update_freq=cfg.ema_update_freq)
    except ValueError as e:  # PACE names the bad argument, which is also the setting's name
        die(e)


def get_lr(step, cfg):
    """The learning rate of the step that follows `step` completed steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "const":
        return cfg.lr
    decay_start = cfg.warmup_steps
    if cfg.schedule == "wsd":
        decay_start = max(decay_start, cfg.max_steps - round(cfg.decay_frac * cfg.max_steps))
        if step < decay_start:
            return cfg.lr
    progress = (step - decay_start) / (cfg.max_steps - decay_start)  # from 0 to almost 1
    decay = 0.5 * (1 + math.cos(math.pi * progress)) if cfg.schedule == "cos" else 1 - progress
    min_lr = cfg.min_lr_ratio * cfg.lr
    return min_lr + decay * (cfg.lr - min_lr)


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
        files = sorted(glob.glob(os.path.join(glob.escape(data_dir), "fineweb_train_*.bin")))
        if not files:
            die(f"no training shards {os.path.join(data_dir, 'fineweb_train_*.bin')}: write them with prepare_fineweb.py")
        self.shards = [read_shard(f) for f in files]  # checks every header now, not hours into the run
        self.starts = np.cumsum([0] + [len(s) for s in self.shards])  # the stream position of each shard
        self.micro_tokens = batch_size * block_size
        self.total_batch_size = self.micro_tokens * grad_accum_steps * world_size
        if self.starts[-1] < self.total_batch_size + 1:
            die(f"the training shards in {data_dir} hold {self.starts[-1]} tokens, "
                f"fewer than one batch of total_batch_size + 1 = {self.total_batch_size + 1}")
        self.grad_accum_steps, self.rank, self.world_size = grad_accum_steps, rank, world_size
        self.pos = 0  # where the next global batch starts: part of the checkpoint

    def next_batch(self):
        """This process's micro-batches of the next global batch: tensors of batch_size * block_size + 1 tokens."""
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
        return torch.from_numpy(np.concatenate(parts).astype(np.int64))


def due(step, interval, cfg):
    """Whether an event of this interval (evaluation, checkpoint) follows step `step`: at its multiples and at the last."""
    return step % interval == 0 or step == cfg.max_steps


def eval_share(cfg):
    """Evaluation's forward passes over the training compute, an estimate: a forward pass costs
    ~1/3 of a training step per token."""
    evaluations = [s for s in range(1, cfg.max_steps + 1) if due(s, cfg.eval_interval, cfg)]
    passes = len(evaluations)
    if cfg.optimizer != "adamw":  # adamw returns the last iterate: one pass serves both
        passes += sum(due(s, cfg.vanilla_eval_interval, cfg) for s in evaluations)
    return passes * cfg.eval_tokens / (3 * cfg.max_steps * cfg.total_batch_size)


def peak_flops(device_name):
    """The dense bf16 peak FLOP/s of the GPU called device_name, or None for a GPU not in PEAK_FLOPS."""
    return next((flops for name, flops in PEAK_FLOPS if re.search(rf"\b{re.escape(name)}\b", device_name)), None)


@torch.no_grad()
def evaluate(model, val_share, batch_size, block_size, world_size, autocast):
    """Mean loss per token over every process's share of the validation sequences. val_share is this
    process's share, already on the device; the sums stay there until the one read-back at the end."""
    model.eval()
    n_seq = (len(val_share) - 1) // block_size
    total = torch.tensor([0.0, n_seq * block_size], dtype=torch.float64, device=val_share.device)  # loss summed over tokens, token count
    for i in range(0, n_seq, batch_size):
        j = min(i + batch_size, n_seq)
        x = val_share[i * block_size:j * block_size].view(-1, block_size)
        y = val_share[i * block_size + 1:j * block_size + 1].view(-1, block_size)
        with autocast:
            _, loss = model(x, y)
        total[0] += loss.double() * y.numel()
    if world_size > 1:
        dist.all_reduce(total)
    model.train()
    loss_sum, count = total.tolist()
    return loss_sum / count


def save_atomically(path, save):
    """Write path through a temporary file: a crash at any moment leaves the old file or the new one, whole."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        save(f)
    os.replace(tmp, path)


def load_checkpoint(path):
    """The checkpoint train.py wrote at path, its tensors on the CPU. weights_only=True on every torch
    version: tensors and plain containers only, so a tampered file cannot run code."""
    what_to_do = "restore a good copy of it, or start a new run in another out_dir"
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        die(f"{path} not found")
    except Exception as e:  # truncated, not a torch file, objects that need code: all unreadable alike
        lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [""]
        # torch names a refused object (GLOBAL module.name) on a line of its own, after advice to load it anyway
        reason = next((line for line in lines if "GLOBAL" in line), lines[0].split(". ")[0])
        die(f"cannot read the checkpoint {path} ({type(e).__name__}: {reason[:200]}); it is truncated, "
            f"not a checkpoint or holds objects other than tensors; {what_to_do}")
    missing = [key for key in CHECKPOINT_KEYS if not isinstance(ckpt, dict) or key not in ckpt]
    if missing:
        die(f"{path} is not a checkpoint of train.py: it lacks {', '.join(missing)}; {what_to_do}")
    return ckpt


def weights_checksum(state_dict):
    """A CRC-32 of the tensors' bytes, in order: equal weights give equal checksums on every machine."""
    crc = 0
    for tensor in state_dict.values():
        crc = zlib.crc32(tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy(), crc)
    return f"{crc:08x}"


@dataclass
class Processes:
    """This process among those torchrun started; without torchrun, rank 0 of 1."""
    ddp: bool = False
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def master(self):
        return self.rank == 0  # the process that writes files and shows progress


def start_processes():
    """This process's place, from torchrun's RANK, LOCAL_RANK and WORLD_SIZE, and the process group."""
    if "RANK" not in os.environ:
        return Processes()
    procs = Processes(True, *(int(os.environ[k]) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE")))
    # joined before the settings are read, so that a rank whose settings fail still takes part in the
    # agreement: gloo for CPU tensors (the agreement, runs on CPUs), nccl for CUDA tensors
    dist.init_process_group(backend="cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")
    return procs


def gather(procs, value):
    """value (any picklable object) of every process, in rank order."""
    if not procs.ddp:
        return [value]
    values = [None] * procs.world_size
    dist.all_gather_object(values, value)
    return values


def leave(procs):
    """Leave the process group: a process that exits with gloo's threads still running may abort."""
    if procs.ddp:
        dist.destroy_process_group()


def exit_now(code):
    """Exit without running C++ destructors. After a multi-process run, gloo's threads can make a
    normal exit abort in them (SIGABRT, "terminate called without an active exception"), so that
    torchrun reports a failure for a run that completed, or a signal for one that stopped with a message."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def by_rank(values):
    """'rank 1: x; ranks 0, 2: y': the processes' values (in rank order), grouped; None left out."""
    ranks = {}
    for rank, value in enumerate(values):
        if value is not None:
            ranks.setdefault(value, []).append(rank)
    return "; ".join(f"rank{'s' if len(r) > 1 else ''} {', '.join(map(str, r))}: {value}" for value, r in ranks.items())


class Run:
    """One process's part of a training run: its settings, data, model, optimizer and logs."""

    def __init__(self, args, procs):
        """Open a new run in out_dir or resume the one there. All that can fail on one process and
        not on another is checked here, before any collective and before anything is written."""
        cfg = self.cfg = load_settings(args)
        check_settings(cfg)
        self.procs = procs
        self.config = {k: v for k, v in asdict(cfg).items() if k != "resume"}  # resume is an action, not part of the run
        self.device_type = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
        if self.device_type == "cuda" and not torch.cuda.is_available():
            die("device=cuda but no CUDA device is available")
        self.device = f"cuda:{procs.local_rank}" if self.device_type == "cuda" else "cpu"
        if self.device_type == "cuda":
            torch.cuda.set_device(self.device)
            torch.set_float32_matmul_precision("high")  # TF32 for the float32 matmuls that remain outside autocast
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16) if self.device_type == "cuda" else nullcontext()
        tokens_per_micro_step = cfg.batch_size * cfg.block_size * procs.world_size
        if cfg.total_batch_size % tokens_per_micro_step:
            die(f"total_batch_size ({cfg.total_batch_size}) must be a multiple of batch_size * block_size * processes "
                f"= {cfg.batch_size} * {cfg.block_size} * {procs.world_size} = {tokens_per_micro_step}")
        self.wandb = import_wandb() if cfg.wandb_log and procs.master else None  # the master logs, from build() on
        ckpt = self.open_out_dir()
        self.open_data(grad_accum_steps=cfg.total_batch_size // tokens_per_micro_step)
        self.make_model(ckpt)

    def open_out_dir(self):
        """The checkpoint to resume from, or None for a new run."""
        cfg = self.cfg
        self.ckpt_path, self.result_path = os.path.join(cfg.out_dir, "ckpt.pt"), os.path.join(cfg.out_dir, "result.json")
        ckpt = None
        if cfg.resume and os.path.exists(self.ckpt_path):
            ckpt = load_checkpoint(self.ckpt_path)
            for key, value in self.config.items():
                if key not in RESUMABLE_CHANGES and ckpt["config"].get(key) != value:
                    die(f"{key} is {value!r} but the run in {cfg.out_dir} has {ckpt['config'].get(key)!r}; "
                        f"a resumed run must keep it (or start a new out_dir)")
        elif not cfg.resume and (os.path.exists(self.ckpt_path) or os.path.exists(self.result_path)):
            die(f"{cfg.out_dir} already holds a run: continue it with --resume=True or choose another out_dir")
        return ckpt

    def open_data(self, grad_accum_steps):
        """The training shards, and this process's share of the validation sequences, on the device once."""
        cfg, procs = self.cfg, self.procs
        try:
            self.loader = DataLoader(cfg.data_dir, cfg.batch_size, cfg.block_size, grad_accum_steps, procs.rank, procs.world_size)
            val_path = os.path.join(cfg.data_dir, "fineweb_val_000000.bin")
            val_tokens = read_shard(val_path)[:cfg.eval_tokens + 1]
        except ShardError as e:
            die(e)
        if len(val_tokens) < cfg.eval_tokens + 1:
            die(f"{val_path} holds {len(val_tokens)} tokens, fewer than eval_tokens + 1 = {cfg.eval_tokens + 1}")
        n_seq = cfg.eval_tokens // cfg.block_size
        lo, hi = procs.rank * n_seq // procs.world_size, (procs.rank + 1) * n_seq // procs.world_size
        self.val_share = torch.from_numpy(val_tokens[lo * cfg.block_size:hi * cfg.block_size + 1].astype(np.int64)).to(self.device)

    def make_model(self, ckpt):
        """The model and the optimizer, at their state in ckpt when there is one."""
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        self.raw_model = GPT(GPTConfig(block_size=cfg.block_size, vocab_size=cfg.vocab_size, n_layer=cfg.n_layer,
                                       n_head=cfg.n_head, n_embd=cfg.n_embd)).to(self.device)
        self.opt = make_optimizer(cfg, self.raw_model)
        self.step, self.eval_logs, self.step_logs, self.past_wall_time, self.eval_time = 0, [], [], 0.0, 0.0
        self.checksum = None  # of the weights in the checkpoint
        if ckpt is not None:
            self.raw_model.load_state_dict(ckpt["model"])
            self.opt.load_state_dict(ckpt["optimizer"])
            self.step, self.loader.pos = ckpt["step"], ckpt["data_pos"]
            self.eval_logs, self.step_logs, self.past_wall_time = ckpt["eval_logs"], ckpt["step_logs"], ckpt["wall_time"]
            self.eval_time = ckpt.get("eval_time", 0.0)
            torch.set_rng_state(ckpt["rng"]["torch"])
            if self.device_type == "cuda" and ckpt["rng"]["cuda"] is not None:
                torch.cuda.set_rng_state(ckpt["rng"]["cuda"])
            self.checksum = weights_checksum(ckpt["model"])

    def state(self):
        """What every process must hold alike before training: the settings (but the paths, which
        may differ between nodes) and where the run stands."""
        settings = {k: v for k, v in self.config.items() if k not in ("data_dir", "out_dir")}
        return {**settings, "step": self.step, "data position": self.loader.pos, "weights checksum": self.checksum}

    def use_fused(self, fused):
        # the path every process agreed on; a loaded state_dict brings the choice of the run that saved it
        for group in self.opt.param_groups:
            group["fused"] = fused

    def build(self):
        """Compile and wrap the model, say what the run will do, and start the clock."""
        cfg, procs = self.cfg, self.procs
        use_compile = self.device_type == "cuda" if cfg.compile is None else cfg.compile
        self.eval_model = torch.compile(self.raw_model) if use_compile else self.raw_model  # shares raw_model's parameters
        self.model = DDP(self.eval_model, device_ids=[procs.local_rank] if self.device_type == "cuda" else None) \
            if procs.ddp else self.eval_model
        self.peak_flops = peak_flops(torch.cuda.get_device_name()) if self.device_type == "cuda" else None
        self.train_tokens = int(self.loader.starts[-1])
        self.session_start = time.time()
        if procs.master:
            print(f"{self.raw_model.num_params(non_embedding=False):,} parameters, {procs.world_size} process(es) on "
                  f"{self.device_type}, {self.loader.grad_accum_steps} accumulation step(s) of {cfg.batch_size} x "
                  f"{cfg.block_size} tokens, optimizer {cfg.optimizer}, out_dir {cfg.out_dir}")
            if cfg.resume and self.checksum is None:
                print(f"no checkpoint in {cfg.out_dir}: starting from step 0")
            passes = cfg.max_steps * cfg.total_batch_size / self.train_tokens
            if passes > 1:
                print(f"max_steps x total_batch_size = {cfg.max_steps * cfg.total_batch_size:,} tokens: {passes:.2f} passes "
                      f"over the {self.train_tokens:,} tokens of the training shards (the data repeats)")
            print(f"evaluation: ~{eval_share(cfg):.1%} of the training compute (an estimate)")
            if self.device_type == "cuda" and self.peak_flops is None:
                print(f"no MFU: the peak FLOP/s of {torch.cuda.get_device_name()} is not in train.py's PEAK_FLOPS")
            os.makedirs(cfg.out_dir, exist_ok=True)
            self.write_result("completed" if self.step == cfg.max_steps else "running")
            if self.wandb is not None:
                self.wandb.init(project=cfg.wandb_project, config=self.config,
                                name=cfg.wandb_run_name or os.path.basename(os.path.normpath(cfg.out_dir)))
        self.pending = []  # (step, lr, loss, grad norm, telemetry) of the steps not yet logged; loss and norm on the device
        self.bar = tqdm(total=cfg.max_steps, initial=self.step, disable=not procs.master, unit="step", dynamic_ncols=True)
        self.last_log_time, self.last_log_step = time.time(), self.step

    def train_step(self):
        """One optimizer step: the micro-batches of a global batch, gradient clipping, the update."""
        cfg = self.cfg
        lr = get_lr(self.step, cfg)
        # log_stats runs pace.py's plain loop, which rounds differently from the fused kernel: every
        # process takes it on the same steps, and adamw too (recording nothing), so that its iterate
        # stays bit-identical to ema's, whose steps differ only by updating the EMA
        stats_step = cfg.stats_interval > 0 and (self.step + 1) % cfg.stats_interval == 0
        for group in self.opt.param_groups:
            group["lr"] = lr
            group["log_stats"] = stats_step
        loss_accum = torch.zeros((), device=self.device)
        micro_batches = self.loader.next_batch()
        for micro_step, tokens in enumerate(micro_batches):
            if self.device_type == "cuda":
                tokens = tokens.pin_memory().to(self.device, non_blocking=True)  # the copy overlaps the GPU's work
            x, y = tokens[:-1].view(cfg.batch_size, cfg.block_size), tokens[1:].view(cfg.batch_size, cfg.block_size)
            if self.procs.ddp:
                # all-reduce the gradients in the last backward pass only; DDP reads this flag in forward()
                self.model.require_backward_grad_sync = micro_step == len(micro_batches) - 1
            with self.autocast:
                _, loss = self.model(x, y)
            loss = loss / len(micro_batches)  # the gradients add up over micro-steps: make them a mean
            loss_accum += loss.detach()
            loss.backward()
        # with grad_clip 0 this measures the norm only (it scales the gradients by 1)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), cfg.grad_clip or float("inf"))
        self.opt.step()
        # reads back from the device on these steps only
        stats = self.opt.get_step_stats() if stats_step and cfg.optimizer != "adamw" else {}
        self.opt.zero_grad()
        self.step += 1
        self.bar.update()
        self.pending.append((self.step, lr, loss_accum, grad_norm, stats))

    def log(self):
        """The steps since the last log into step_logs, read back with one device synchronization."""
        losses = torch.stack([p[2] for p in self.pending])
        if self.procs.ddp:
            dist.all_reduce(losses)
            losses /= self.procs.world_size
        values = torch.stack([losses, torch.stack([p[3] for p in self.pending])], dim=1).tolist()
        for (s, lr, _, _, stats), (loss, norm) in zip(self.pending, values):
            if not math.isfinite(loss):
                self.fail(f"non-finite training loss {loss} at step {s}")
            self.step_logs.append({"step": s, "lr": lr, "loss": loss, "grad_norm": norm, **stats})
            self.to_wandb(self.step_logs[-1])
        self.pending.clear()
        now = time.time()
        tokens_per_s = (self.step - self.last_log_step) * self.cfg.total_batch_size / (now - self.last_log_time)
        self.last_log_time, self.last_log_step = now, self.step
        postfix = {"loss": f"{self.step_logs[-1]['loss']:.4f}", "lr": f"{self.step_logs[-1]['lr']:.2e}",
                   "tok/s": f"{tokens_per_s:,.0f}"}
        if self.peak_flops:
            postfix["mfu"] = f"{self.raw_model.estimate_mfu(tokens_per_s, self.peak_flops * self.procs.world_size):.1%}"
        self.bar.set_postfix(postfix, refresh=False)

    def evaluate(self):
        """The returned model's validation loss, and the last iterate's when it is due, into eval_logs."""
        cfg, start = self.cfg, time.time()
        vanilla = ema = None
        if cfg.optimizer == "adamw" or due(self.step, cfg.vanilla_eval_interval, cfg):
            vanilla = self.val_loss()
        if cfg.optimizer != "adamw":
            self.opt.eval()  # the EMA into the model's parameters
            ema = self.val_loss()
            self.opt.train()  # the live weights back, bit for bit
        self.eval_time += time.time() - start
        entry = {"step": self.step, "val_loss": vanilla if ema is None else ema, "ema_val_loss": ema, "vanilla_val_loss": vanilla}
        for key in ("val_loss", "vanilla_val_loss"):
            if entry[key] is not None and not math.isfinite(entry[key]):
                self.fail(f"non-finite {key} {entry[key]} at step {self.step}")
        self.eval_logs.append(entry)
        self.to_wandb(entry)
        if self.procs.master:
            self.bar.write(f"step {self.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in entry.items() if k != "step" and v is not None))
            self.write_result("completed" if self.step == cfg.max_steps else "running")

    def to_wandb(self, entry):
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in entry.items() if k != "step" and v is not None}, step=entry["step"])

    def val_loss(self):
        return evaluate(self.eval_model, self.val_share, self.cfg.batch_size, self.cfg.block_size, self.procs.world_size, self.autocast)

    def save_checkpoint(self):
        if not self.procs.master:
            return
        state = {
            "model": self.raw_model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "step": self.step,
            "data_pos": self.loader.pos,
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state() if self.device_type == "cuda" else None},
            "config": self.config,
            "eval_logs": self.eval_logs,
            "step_logs": self.step_logs,
            "wall_time": self.wall_time(),
            "eval_time": self.eval_time,
        }
        save_atomically(self.ckpt_path, lambda f: torch.save(state, f))

    def wall_time(self):
        return self.past_wall_time + time.time() - self.session_start

    def write_result(self, status, error=None):
        cfg, step, wall_time = self.cfg, self.step, self.wall_time()
        last_eval = self.eval_logs[-1] if self.eval_logs else {}
        summary = {
            "status": status,
            "final_val_loss": last_eval.get("val_loss"),  # the returned model's: the number to compare
            "final_train_loss": self.step_logs[-1]["loss"] if self.step_logs else None,
            "vanilla_val_loss": last_eval.get("vanilla_val_loss"),
            "ema_val_loss": last_eval.get("ema_val_loss"),
            "steps": step,
            "tokens_seen": step * cfg.total_batch_size,
            "data_passes": step * cfg.total_batch_size / self.train_tokens,
            # the only three fields that change when the same run is repeated
            "wall_time": wall_time,
            "eval_time": self.eval_time,
            "tokens_per_s": step * cfg.total_batch_size / wall_time if step else 0.0,
        }
        if error is not None:
            summary["error"] = error
        result = {"config": self.config, "summary": summary, "eval_logs": self.eval_logs, "step_logs": self.step_logs}
        save_atomically(self.result_path, lambda f: f.write(json.dumps(result, indent=1).encode()))
        return summary

    def fail(self, message):
        self.bar.close()
        if self.procs.master:
            self.close_wandb(self.write_result("failed", message), exit_code=1)
        self.close()
        die(f"{message}; ckpt.pt holds the last checkpoint before it")

    def finish(self):
        self.bar.close()
        if self.procs.master:
            self.close_wandb(self.write_result("completed"), exit_code=0)  # again, for the final wall time
        self.close()

    def close_wandb(self, summary, exit_code):
        if self.wandb is not None:
            self.wandb.summary.update(summary)
            self.wandb.finish(exit_code=exit_code)

    def close(self):
        if self.procs.ddp:
            # free DDP before the process group: if DDP's reducer held the last reference, the group
            # would be destroyed while the GIL is held, which can deadlock with gloo's threads
            del self.model
            leave(self.procs)


def open_run(args, procs):
    """The run, opened by every process; all go on together, or all stop with the message of the
    process whose check failed, or with what the processes disagree on."""
    try:
        run, error = Run(args, procs), None
    except SystemExit as e:
        run, error = None, str(e.code).removeprefix(ERROR_PREFIX)
    reports = gather(procs, (error, run and run.state()))
    errors = [error for error, _ in reports]
    if any(errors):
        leave(procs)
        die(errors[0] if procs.world_size == 1 else by_rank(errors))
    states = [state for _, state in reports]
    differences = [f"{key}: {by_rank([repr(s[key]) for s in states])}" for key in states[0]
                   if any(s[key] != states[0][key] for s in states)]
    if differences:
        leave(procs)
        die(f"the processes do not hold the same run ({'; '.join(differences)}): out_dir must be on a file system "
            f"they all share, and their settings the same")

    # one implementation of the optimizer step for all: rounding differs between them
    if procs.master:
        print("compiling the optimizer's fused step (now and at the first step; cached on disk for later runs)...", flush=True)
    # probed with the run's hyperparameters, which the kernels compile in: the first step then reuses them
    fused_errors = gather(procs, fused_error(run.device, run.opt.param_groups[0]))  # None where the compiled step works
    failed = [rank for rank, e in enumerate(fused_errors) if e is not None]
    if failed and procs.master:
        where = "here" if procs.world_size == 1 else f"on rank{'s' if len(failed) > 1 else ''} {', '.join(map(str, failed))}"
        reason = fused_errors[failed[0]].splitlines()[0][:200]
        print(f"the optimizer's fused step does not compile {where} ({reason}); every process uses foreach")
    run.use_fused(not failed)
    return run


def main(args):
    if "-h" in args or "--help" in args:
        print(__doc__ + "\n" + inspect.getsource(Settings))
        return
    procs = start_processes()
    try:
        run_training(args, procs)
    except SystemExit as stop:
        if not procs.ddp:
            raise
        print(stop.code, file=sys.stderr)
        exit_now(1)
    if procs.ddp:
        exit_now(0)


def run_training(args, procs):
    """The run's outline: open or resume it, build, then step, log, evaluate and checkpoint until the end."""
    run = open_run(args, procs)  # every process checks everything, then all go on or all stop
    run.build()
    cfg = run.cfg
    while run.step < cfg.max_steps:
        run.train_step()
        eval_due, ckpt_due = due(run.step, cfg.eval_interval, cfg), due(run.step, cfg.ckpt_interval, cfg)
        if run.step % cfg.log_interval == 0 or eval_due or ckpt_due:
            run.log()
        if eval_due:
            run.evaluate()
        if ckpt_due:
            run.save_checkpoint()
        if eval_due or ckpt_due:
            run.last_log_time = time.time()  # tokens/s measures training, not evaluations and checkpoints
    run.finish()


if __name__ == "__main__":
    main(sys.argv[1:])
