"""
Pretrain GPT-2 on FineWeb with AdamW, EMA-evaluated AdamW or PACE, on one process or many.

    python train.py configs/pace.py                      # GPT-2-124M on FineWeb 10B, one GPU
    torchrun --standalone --nproc_per_node=8 train.py configs/pace.py
    python train.py configs/cpu.py configs/ema.py        # a small model, a few minutes on a CPU
    python train.py configs/cpu.py --lr=3e-3 --out_dir=out/lr3e-3

Settings (the Settings class below) start at their defaults, which are the GPT-2-124M
recipe. Config files are Python files that assign some of them; --key=value arguments set
one, its value a Python literal (--compile=False, --betas=(0.9,0.95)); a string may be
bare (--out_dir=out/x). Later files and arguments win.

A run writes two files into out_dir:
  result.json  {"config", "summary", "eval_logs", "step_logs"}, rewritten at every evaluation;
               summary.status is "running", "completed" or "failed".
  ckpt.pt      the live weights (ckpt["model"]), the optimizer with its EMA, the step, the
               data position, the RNG states, the config and the logs.
--resume=True continues the run in out_dir from ckpt.pt; a run killed at any moment and
resumed ends exactly as it would have without the interruption. With several nodes, out_dir
must be on a file system they share.

The model a method returns is the EMA for ema and pace: to get it from ckpt.pt, load
ckpt["model"] into the model and ckpt["optimizer"] into the optimizer, then call opt.eval().
"""

import ast
import glob
import inspect
import json
import math
import os
import runpy
import sys
import time
import types
import typing
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from model import GPT, GPTConfig
from pace import PACE
from prepare_fineweb import ShardError, first_line, read_shard


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
    # evaluation, logging, checkpoints
    eval_interval: int = 250  # evaluate every this many steps, and after the last
    eval_tokens: int = 10_485_760  # the first this many tokens of the validation shard: the community's 10M
    log_interval: int = 10  # read the training loss back from the device every this many steps
    ckpt_interval: int = 1000  # write ckpt.pt every this many steps, and after the last


# settings a resumed run may change: where files are and how the steps are executed, not what they compute
RESUMABLE_CHANGES = ("data_dir", "out_dir", "resume", "device", "compile", "batch_size",
                     "eval_interval", "log_interval", "ckpt_interval")
# dense bf16 peak FLOP/s of some GPUs, for the MFU in the progress bar
PEAK_FLOPS = {"A100": 312e12, "H100": 989e12}


def die(message):
    raise SystemExit(f"train.py: error: {message}")


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
                "max_steps", "eval_interval", "eval_tokens", "log_interval", "ckpt_interval"):
        if getattr(cfg, key) <= 0:
            die(f"{key} must be positive, got {getattr(cfg, key)}")
    if cfg.n_embd % cfg.n_head:
        die(f"n_embd ({cfg.n_embd}) must be a multiple of n_head ({cfg.n_head})")
    if cfg.eval_tokens % cfg.block_size:
        die(f"eval_tokens ({cfg.eval_tokens}) must be a multiple of block_size ({cfg.block_size})")
    for key in ("warmup_steps", "grad_clip"):
        if getattr(cfg, key) < 0:
            die(f"{key} must not be negative, got {getattr(cfg, key)}")
    if not 0 <= cfg.min_lr_ratio <= 1:
        die(f"min_lr_ratio must be in [0, 1], got {cfg.min_lr_ratio}")
    if not 0 < cfg.decay_frac <= 1:
        die(f"decay_frac must be in (0, 1], got {cfg.decay_frac}")
    if cfg.optimizer == "pace" and cfg.lambda_pullback <= 0:
        die("optimizer=pace needs lambda_pullback > 0 (with 0 it is optimizer=ema)")


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


@torch.no_grad()
def evaluate(model, val_tokens, batch_size, block_size, rank, world_size, device, autocast):
    """Mean loss per token over val_tokens; each process takes a contiguous share of the sequences."""
    model.eval()
    n_seq = (len(val_tokens) - 1) // block_size
    lo, hi = rank * n_seq // world_size, (rank + 1) * n_seq // world_size
    total = torch.zeros(2, dtype=torch.float64, device=device)  # loss summed over tokens, token count
    for i in range(lo, hi, batch_size):
        j = min(i + batch_size, hi)
        buf = torch.from_numpy(val_tokens[i * block_size:j * block_size + 1].astype(np.int64)).to(device)
        x, y = buf[:-1].view(-1, block_size), buf[1:].view(-1, block_size)
        with autocast:
            _, loss = model(x, y)
        total += torch.stack([loss.double() * y.numel(), torch.tensor(y.numel(), dtype=torch.float64, device=device)])
    if world_size > 1:
        dist.all_reduce(total)
    model.train()
    return (total[0] / total[1]).item()


def save_atomically(path, save):
    """Write path through a temporary file: a crash at any moment leaves the old file or the new one, whole."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        save(f)
    os.replace(tmp, path)


def load_checkpoint(path):
    """The checkpoint train.py wrote at path, on the CPU, or a one-line error naming the file."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        die(f"{path} not found")
    except Exception as e:  # truncated, not a torch file, or pickled code that weights_only refuses
        die(f"cannot read {path}: {first_line(e)}")
    missing = [k for k in ("model", "optimizer", "config") if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        die(f"{path} is not a train.py checkpoint: no {', '.join(map(repr, missing))}")
    return ckpt


def main(args):
    if "-h" in args or "--help" in args:
        print(__doc__ + "\n" + inspect.getsource(Settings))
        return
    cfg = load_settings(args)
    check_settings(cfg)
    config = {k: v for k, v in asdict(cfg).items() if k != "resume"}  # resume is an action, not part of the run

    # processes and devices: torchrun sets RANK, LOCAL_RANK and WORLD_SIZE
    ddp = "RANK" in os.environ
    rank, local_rank, world_size = (int(os.environ[k]) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE")) if ddp else (0, 0, 1)
    master = rank == 0  # the process that writes files and shows progress
    device_type = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    if device_type == "cuda" and not torch.cuda.is_available():
        die("device=cuda but no CUDA device is available")
    device = f"cuda:{local_rank}" if device_type == "cuda" else "cpu"
    if device_type == "cuda":
        torch.cuda.set_device(device)
        torch.set_float32_matmul_precision("high")  # TF32 for the float32 matmuls that remain outside autocast
    if ddp:
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo",
                                device_id=torch.device(device) if device_type == "cuda" else None)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device_type == "cuda" else nullcontext()
    tokens_per_micro_step = cfg.batch_size * cfg.block_size * world_size
    if cfg.total_batch_size % tokens_per_micro_step:
        die(f"total_batch_size ({cfg.total_batch_size}) must be a multiple of batch_size * block_size * processes "
            f"= {cfg.batch_size} * {cfg.block_size} * {world_size} = {tokens_per_micro_step}")
    grad_accum_steps = cfg.total_batch_size // tokens_per_micro_step

    # out_dir: a new run, or the continuation of the one there
    ckpt_path, result_path = os.path.join(cfg.out_dir, "ckpt.pt"), os.path.join(cfg.out_dir, "result.json")
    ckpt = None
    if cfg.resume and os.path.exists(ckpt_path):
        ckpt = torch.load(ckpt_path, map_location="cpu")
        for key, value in config.items():
            if key not in RESUMABLE_CHANGES and ckpt["config"].get(key) != value:
                die(f"{key} is {value!r} but the run in {cfg.out_dir} has {ckpt['config'].get(key)!r}; "
                    f"a resumed run must keep it (or start a new out_dir)")
    elif not cfg.resume and (os.path.exists(ckpt_path) or os.path.exists(result_path)):
        die(f"{cfg.out_dir} already holds a run: continue it with --resume=True or choose another out_dir")
    if ddp:
        dist.barrier()  # every process has looked at out_dir before the master writes to it
    if master:
        os.makedirs(cfg.out_dir, exist_ok=True)

    # data
    try:
        loader = DataLoader(cfg.data_dir, cfg.batch_size, cfg.block_size, grad_accum_steps, rank, world_size)
        val_path = os.path.join(cfg.data_dir, "fineweb_val_000000.bin")
        val_tokens = read_shard(val_path)[:cfg.eval_tokens + 1]
    except ShardError as e:
        die(e)
    if len(val_tokens) < cfg.eval_tokens + 1:
        die(f"{val_path} holds {len(val_tokens)} tokens, fewer than eval_tokens + 1 = {cfg.eval_tokens + 1}")

    # model and optimizer
    torch.manual_seed(cfg.seed)
    raw_model = GPT(GPTConfig(block_size=cfg.block_size, vocab_size=cfg.vocab_size, n_layer=cfg.n_layer,
                              n_head=cfg.n_head, n_embd=cfg.n_embd)).to(device)
    opt = make_optimizer(cfg, raw_model)
    step, eval_logs, step_logs, past_wall_time = 0, [], [], 0.0
    if ckpt is not None:
        raw_model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        step, loader.pos, eval_logs, step_logs = ckpt["step"], ckpt["data_pos"], ckpt["eval_logs"], ckpt["step_logs"]
        past_wall_time = ckpt["wall_time"]
        torch.set_rng_state(ckpt["rng"]["torch"])
        if device_type == "cuda" and ckpt["rng"]["cuda"] is not None:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"])
    elif cfg.resume and master:
        print(f"no checkpoint in {cfg.out_dir}: starting from step 0")
    use_compile = device_type == "cuda" if cfg.compile is None else cfg.compile
    eval_model = torch.compile(raw_model) if use_compile else raw_model  # shares raw_model's parameters
    model = DDP(eval_model, device_ids=[local_rank] if device_type == "cuda" else None) if ddp else eval_model
    peak_flops = next((f for name, f in PEAK_FLOPS.items() if name in torch.cuda.get_device_name()), None) \
        if device_type == "cuda" else None
    if master:
        print(f"{raw_model.num_params(non_embedding=False):,} parameters, {world_size} process(es) on {device_type}, "
              f"{grad_accum_steps} accumulation step(s) of {cfg.batch_size} x {cfg.block_size} tokens, "
              f"optimizer {cfg.optimizer}, out_dir {cfg.out_dir}")

    def write_result(status, error=None):
        wall_time = past_wall_time + time.time() - session_start
        last_eval = eval_logs[-1] if eval_logs else {}
        summary = {
            "status": status,
            "final_val_loss": last_eval.get("val_loss"),  # the returned model's: the number to compare
            "final_train_loss": step_logs[-1]["loss"] if step_logs else None,
            "vanilla_val_loss": last_eval.get("vanilla_val_loss"),
            "ema_val_loss": last_eval.get("ema_val_loss"),
            "steps": step,
            "tokens_seen": step * cfg.total_batch_size,
            # the only two fields that change when the same run is repeated
            "wall_time": wall_time,
            "tokens_per_s": step * cfg.total_batch_size / wall_time if step else 0.0,
        }
        if error is not None:
            summary["error"] = error
        result = {"config": config, "summary": summary, "eval_logs": eval_logs, "step_logs": step_logs}
        save_atomically(result_path, lambda f: f.write(json.dumps(result, indent=1).encode()))

    def val_loss():
        return evaluate(eval_model, val_tokens, cfg.batch_size, cfg.block_size, rank, world_size, device, autocast)

    def fail(message):
        bar.close()
        if master:
            write_result("failed", message)
        die(f"{message}; ckpt.pt holds the last checkpoint before it")

    # training loop
    session_start = time.time()
    if master:
        write_result("completed" if step == cfg.max_steps else "running")
    pending = []  # (step, lr, loss, grad norm) of the steps not yet logged, the last two on the device
    bar = tqdm(total=cfg.max_steps, initial=step, disable=not master, unit="step", dynamic_ncols=True)
    last_log_time, last_log_step = time.time(), step
    while step < cfg.max_steps:
        lr = get_lr(step, cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        loss_accum = torch.zeros((), device=device)
        for micro_step, tokens in enumerate(loader.next_batch()):
            if device_type == "cuda":
                tokens = tokens.pin_memory().to(device, non_blocking=True)  # the copy overlaps the GPU's work
            x, y = tokens[:-1].view(cfg.batch_size, cfg.block_size), tokens[1:].view(cfg.batch_size, cfg.block_size)
            if ddp:
                # all-reduce the gradients in the last backward pass only; DDP reads this flag in forward()
                model.require_backward_grad_sync = micro_step == grad_accum_steps - 1
            with autocast:
                _, loss = model(x, y)
            loss = loss / grad_accum_steps  # the gradients add up over micro-steps: make them a mean
            loss_accum += loss.detach()
            loss.backward()
        # with grad_clip 0 this measures the norm only (it scales the gradients by 1)
        grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), cfg.grad_clip or float("inf"))
        opt.step()
        opt.zero_grad()
        step += 1
        bar.update()
        pending.append((step, lr, loss_accum, grad_norm))

        eval_due = step % cfg.eval_interval == 0 or step == cfg.max_steps
        ckpt_due = step % cfg.ckpt_interval == 0 or step == cfg.max_steps
        if step % cfg.log_interval == 0 or eval_due or ckpt_due:
            # one device synchronization for all the steps since the last log
            losses = torch.stack([p[2] for p in pending])
            if ddp:
                dist.all_reduce(losses)
                losses /= world_size
            values = torch.stack([losses, torch.stack([p[3] for p in pending])], dim=1).tolist()
            for (s, lr_s, _, _), (loss_s, norm_s) in zip(pending, values):
                if not math.isfinite(loss_s):
                    fail(f"non-finite training loss {loss_s} at step {s}")
                step_logs.append({"step": s, "lr": lr_s, "loss": loss_s, "grad_norm": norm_s})
            pending.clear()
            now = time.time()
            tokens_per_s = (step - last_log_step) * cfg.total_batch_size / (now - last_log_time)
            last_log_time, last_log_step = now, step
            postfix = {"loss": f"{step_logs[-1]['loss']:.4f}", "lr": f"{lr:.2e}", "tok/s": f"{tokens_per_s:,.0f}"}
            if peak_flops:
                postfix["mfu"] = f"{raw_model.estimate_mfu(tokens_per_s, peak_flops * world_size):.1%}"
            bar.set_postfix(postfix, refresh=False)

        if eval_due:
            vanilla, ema = val_loss(), None
            if cfg.optimizer != "adamw":
                opt.eval()  # the EMA into the model's parameters
                ema = val_loss()
                opt.train()  # the live weights back, bit for bit
            entry = {"step": step, "val_loss": vanilla if ema is None else ema, "ema_val_loss": ema, "vanilla_val_loss": vanilla}
            for key in ("val_loss", "vanilla_val_loss"):
                if not math.isfinite(entry[key]):
                    fail(f"non-finite {key} {entry[key]} at step {step}")
            eval_logs.append(entry)
            if master:
                bar.write(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in entry.items() if k != "step" and v is not None))
                write_result("completed" if step == cfg.max_steps else "running")

        if ckpt_due and master:
            state = {
                "model": raw_model.state_dict(),
                "optimizer": opt.state_dict(),
                "step": step,
                "data_pos": loader.pos,
                "rng": {"torch": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state() if device_type == "cuda" else None},
                "config": config,
                "eval_logs": eval_logs,
                "step_logs": step_logs,
                "wall_time": past_wall_time + time.time() - session_start,
            }
            save_atomically(ckpt_path, lambda f: torch.save(state, f))
        if eval_due or ckpt_due:
            last_log_time = time.time()  # tokens/s measures training, not evaluations and checkpoints
    bar.close()
    if master:
        write_result("completed")  # again, for the final wall time
    if ddp:
        # free DDP before the process group: if DDP's reducer held the last reference, the group
        # would be destroyed while the GIL is held, which can deadlock with gloo's threads
        del model
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
