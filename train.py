"""
Pretrain GPT-2 on FineWeb with AdamW, EMA-evaluated AdamW or PACE, on one process or many.

    python train.py configs/pace.py                      # GPT-2-124M on FineWeb 10B, one GPU
    torchrun --standalone --nproc_per_node=8 train.py configs/gpu80gb.py configs/pace.py
    python train.py configs/cpu.py configs/ema.py        # a small model, a few minutes on a CPU
    python train.py configs/cpu.py --lr=3e-3 --out_dir=out/lr3e-3

The settings, their defaults (the GPT-2-124M recipe) and how config files and --key=value
arguments set them: settings.py. A run writes result.json and ckpt.pt into out_dir
(checkpoint.py); summary.status in result.json is "running", "completed", "preempted" or
"failed". --resume=True continues the run in out_dir from ckpt.pt; a run killed at any moment
and resumed ends exactly as it would have without the interruption (on GPUs with deterministic=True;
without it, within rounding: docs/gpus.md). SIGTERM or SIGUSR1 stops
a run after the step in flight, with a checkpoint, and exit status 75. With several nodes,
out_dir must be on a file system they share. Under torchrun the processes agree on the run
before the first step, and stop together (processes.py). docs/training.md tells more.
Below: a run's state (Run), its setup (open_run, start), what the loop calls, the loop (train).
"""

import inspect
import math
import os
import re
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from checkpoint import SHAPE, checkpoint_to_resume, initial_weights, run_files, save_atomically, save_json, with_shape
from data import DataLoader, read_shard, val_shard_path
from errors import Error
from model import mean_loss
from pace import fused_error
from processes import (EXIT_PREEMPTED, Preemption, Processes, agree, agree_on_fused, ending, gather, start_processes,
                       weights_checksum)
from provenance import code_name, device_description, provenance
from settings import (DEFAULTS, Settings, check_resumable, check_settings, device_type, get_lr, given_settings, make_model,
                      make_optimizer, precision, resolve_auto)

# dense bf16 peak FLOP/s (no sparsity) of some GPUs, for the MFU in the progress bar. The first name
# found as whole words in torch.cuda.get_device_name() wins: "NVIDIA H100 80GB HBM3" is the SXM card.
PEAK_FLOPS = (
    ("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("H200 NVL", 835e12), ("H200", 989e12),
    ("B200", 2.25e15), ("A100", 312e12), ("L40S", 362e12),
    ("RTX 4090", 165e12),  # with float32 accumulation, as under autocast; 330e12 is with float16 accumulation
)


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


class PendingStep(NamedTuple):
    """A step taken but not yet logged: its loss and gradient norm stay on the device until log_steps()."""
    step: int
    lr: float
    loss: torch.Tensor  # this process's mean over its micro-batches
    grad_norm: torch.Tensor  # before clipping
    stats: dict  # PACE's telemetry, on the steps that record it
    skipped: bool  # float16: the gradients overflowed and the step left the weights as they were


@dataclass
class Run:
    """One process's part of a training run: what open_run() opens and start() starts, and what the
    training loop steps, logs, evaluates and checkpoints."""
    cfg: Settings  # final: dtype and loss resolved, the shape of the weights it starts from or resumes
    procs: Processes
    device: str  # cuda:LOCAL_RANK or cpu
    device_type: str  # cuda or cpu
    autocast: object  # the dtype's autocast context
    scaler: torch.amp.GradScaler  # float16's; a disabled one for the other dtypes
    loader: DataLoader
    val_share: torch.Tensor  # this process's share of the validation sequences, on the device
    val_checksum: str  # of the validation tokens, which every process must read alike
    raw_model: torch.nn.Module  # the GPT itself: its parameters are the optimizer's
    opt: torch.optim.Optimizer
    # where the run stands: the checkpoint's state when it is resumed
    step: int = 0
    eval_logs: list = field(default_factory=list)
    step_logs: list = field(default_factory=list)
    past_wall_time: float = 0.0  # of the sessions before this one
    eval_time: float = 0.0
    checksum: str | None = None  # of the weights in the checkpoint resumed
    code: list = field(default_factory=list)  # provenance() of each session of the run, this one last (start())
    # set by start()
    model: torch.nn.Module | None = None  # what the loop calls: compiled, in DDP under torchrun
    eval_model: torch.nn.Module | None = None  # compiled, without DDP: evaluation's forward passes
    peak_flops: float | None = None
    session_start: float | None = None
    wandb: object = None  # the wandb module once the master has started it (wandb_log)
    bar: tqdm | None = None
    preemption: Preemption | None = None
    pending: list = field(default_factory=list)  # PendingStep of the steps not yet logged
    last_log_time: float = 0.0
    last_log_step: int = 0

    @property
    def config(self):
        """The settings as the run records them: resume is an action, not part of the run."""
        return {k: v for k, v in asdict(self.cfg).items() if k != "resume"}

    def state(self):
        """What every process must hold alike before training (processes.agree): the settings (but the paths,
        which may differ between nodes), the data, and where the run stands."""
        settings = {k: v for k, v in self.config.items() if k not in ("data_dir", "out_dir")}
        return {**settings, "training data": self.loader.fingerprint(), "validation tokens checksum": self.val_checksum,
                "step": self.step, "data position": self.loader.pos, "weights checksum": self.checksum}

    def wall_time(self):
        return self.past_wall_time + time.time() - self.session_start

# -----------------------------------------------------------------------------
# opening a run: everything that can fail on one process and not on another, checked before any
# collective and before anything is written


def open_run(given, procs):
    """This process's part of the run of the given settings ({key: value}), opened and checked, at its
    checkpoint's state when it is resumed."""
    cfg = Settings(**given)
    check_settings(cfg)
    device = set_up_device(cfg, procs)
    tokens_per_micro_step = cfg.batch_size * cfg.block_size * procs.world_size
    if cfg.total_batch_size % tokens_per_micro_step:
        raise Error(f"total_batch_size ({cfg.total_batch_size}) must be a multiple of batch_size * block_size * "
                    f"processes = {cfg.batch_size} * {cfg.block_size} * {procs.world_size} = {tokens_per_micro_step}")
    if cfg.wandb_log and procs.master:
        import_wandb()  # the master logs to it, from start() on
    ckpt = checkpoint_to_resume(cfg.out_dir, cfg.resume)
    cfg, start_weights = final_settings(cfg, given, ckpt, procs)
    autocast, scaler = precision(cfg, device_type(cfg))
    # data: the training shards, and this process's share of the validation sequences, on the device once
    loader = DataLoader(cfg.data_dir, cfg.batch_size, cfg.block_size, cfg.total_batch_size // tokens_per_micro_step,
                        procs.rank, procs.world_size)
    val_share, val_checksum = validation_share(cfg, procs, device)
    # model and optimizer, at the checkpoint's state when resuming
    raw_model = make_model(cfg).to(device)
    if start_weights is not None:
        raw_model.load_state_dict(start_weights)  # the EMA starts from them, at the first step
    opt = make_optimizer(cfg, raw_model)
    run = Run(cfg, procs, device, device_type(cfg), autocast, scaler, loader, val_share, val_checksum, raw_model, opt)
    if ckpt is not None:
        restore(run, ckpt)
    return run


def final_settings(cfg, given, ckpt, procs):
    """(the run's Settings, the weights a new run from init_from starts from, else None): cfg with dtype=auto
    and loss=auto chosen once, when the run starts, and the shape of the weights it starts from or resumes
    (given: the settings given, which those weights must not contradict); a resumed run's must be its own."""
    cfg, notes = resolve_auto(cfg, device_type(cfg), ckpt and ckpt["config"])
    for note in notes if procs.master else ():
        print(note)
    start_weights = None
    if cfg.init_from != "scratch" and ckpt is None:
        cfg, start_weights = initial_weights(cfg, given)
    elif cfg.init_from != "scratch":
        cfg = with_shape(cfg, given, {k: ckpt["config"][k] for k in SHAPE}, f"the run in {cfg.out_dir}")
    if ckpt is not None:
        check_resumable(cfg, ckpt["config"], device_type(cfg))
    return cfg, start_weights


def set_up_device(cfg, procs):
    """This process's device (its GPU under torchrun), and torch's settings for it."""
    if device_type(cfg) == "cpu":
        device = "cpu"
    else:
        device = f"cuda:{procs.local_rank}"
        torch.cuda.set_device(device)
        torch.set_float32_matmul_precision("high")  # TF32 for the float32 matmuls that remain outside autocast
    torch.use_deterministic_algorithms(cfg.deterministic)  # an op without a deterministic kernel then raises
    if cfg.deterministic:  # cuBLAS reduces in a fixed order only with a fixed workspace, read at its first use
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        # nothing here reads memory before writing it: filling every new tensor would cost a write of it
        torch.utils.deterministic.fill_uninitialized_memory = False
    return device


def import_wandb():
    """wandb, imported only when wandb_log is on."""
    try:
        import wandb
    except ImportError:
        raise Error("wandb_log=True but wandb is not installed: pip install wandb, or set wandb_log=False")
    return wandb


def validation_share(cfg, procs, device):
    """(this process's share of the validation sequences of the first eval_tokens + 1 tokens, on the device;
    a checksum of those tokens)."""
    val_path = val_shard_path(cfg.data_dir)
    val_tokens = read_shard(val_path)[:cfg.eval_tokens + 1]
    if len(val_tokens) < cfg.eval_tokens + 1:
        raise Error(f"{val_path} holds {len(val_tokens)} tokens, fewer than eval_tokens + 1 = {cfg.eval_tokens + 1}")
    n_seq = cfg.eval_tokens // cfg.block_size
    lo, hi = procs.rank * n_seq // procs.world_size, (procs.rank + 1) * n_seq // procs.world_size
    share = torch.from_numpy(val_tokens[lo * cfg.block_size:hi * cfg.block_size + 1].astype(np.int64)).to(device)
    return share, f"{zlib.crc32(np.ascontiguousarray(val_tokens).tobytes()):08x}"


def restore(run, ckpt):
    """The run at the state of its checkpoint."""
    run.raw_model.load_state_dict(ckpt["model"])
    run.opt.load_state_dict(ckpt["optimizer"])
    if run.scaler.is_enabled():
        run.scaler.load_state_dict(ckpt["scaler"])
    run.step, run.loader.pos = ckpt["step"], ckpt["data_pos"]
    run.eval_logs, run.step_logs, run.past_wall_time = ckpt["eval_logs"], ckpt["step_logs"], ckpt["wall_time"]
    run.eval_time = ckpt.get("eval_time", 0.0)
    run.code = ckpt.get("code", [])  # none in checkpoints written before train.py recorded it
    torch.set_rng_state(ckpt["rng"]["torch"])
    if run.device_type == "cuda" and ckpt["rng"]["cuda"] is not None:
        torch.cuda.set_rng_state(ckpt["rng"]["cuda"])
    run.checksum = weights_checksum(ckpt["model"])


def start(run):
    """Start the clock and result.json, compile and wrap the model, and say what the run will do."""
    cfg, procs = run.cfg, run.procs
    run.session_start = time.time()
    session = {"from_step": run.step, **provenance(gather(procs, device_description(run.device)))}
    if run.checksum is not None and procs.master:
        made_by = code_name(run.code[-1] if run.code else None)
        if made_by != code_name(session):
            print(f"resuming a run made by code {made_by} with code {code_name(session)}")
    run.code.append(session)
    if procs.master:
        os.makedirs(cfg.out_dir, exist_ok=True)
        write_result(run, "completed" if run.step == cfg.max_steps else "running")
        print("compiling the optimizer's fused step (now and at the first step; cached on disk for later runs)...", flush=True)
    # probed with the run's hyperparameters, which the kernels compile in: the first step then reuses them
    fused = agree_on_fused(procs, fused_error(run.device, run.opt.param_groups[0]))
    for group in run.opt.param_groups:
        group["fused"] = fused
    use_compile = run.device_type == "cuda" if cfg.compile is None else cfg.compile
    run.eval_model = torch.compile(run.raw_model) if use_compile else run.raw_model  # shares raw_model's parameters
    run.model = DDP(run.eval_model, device_ids=[procs.local_rank] if run.device_type == "cuda" else None) \
        if procs.ddp else run.eval_model
    run.peak_flops = peak_flops(torch.cuda.get_device_name()) if run.device_type == "cuda" else None
    if procs.master:
        announce(run)
    if cfg.wandb_log and procs.master:
        run.wandb = import_wandb()
        run.wandb.init(project=cfg.wandb_project, config=run.config,
                       name=cfg.wandb_run_name or os.path.basename(os.path.normpath(cfg.out_dir)))
    run.preemption = Preemption(procs, run.device)  # from here on, SIGTERM and SIGUSR1 stop the run after a step
    run.bar = tqdm(total=cfg.max_steps, initial=run.step, disable=not procs.master, unit="step", dynamic_ncols=True)
    run.last_log_time, run.last_log_step = time.time(), run.step


def announce(run):
    """What the run will do, printed by the master."""
    cfg, loader = run.cfg, run.loader
    print(f"{run.raw_model.num_params(non_embedding=False):,} parameters, {run.procs.world_size} process(es) on "
          f"{run.device_type}, {loader.grad_accum_steps} accumulation step(s) of {cfg.batch_size} x "
          f"{cfg.block_size} tokens, optimizer {cfg.optimizer}, out_dir {cfg.out_dir}")
    if cfg.resume and run.checksum is None:
        print(f"no checkpoint in {cfg.out_dir}: starting from step 0")
    passes = cfg.max_steps * cfg.total_batch_size / loader.n_tokens
    if passes > 1:
        print(f"max_steps x total_batch_size = {cfg.max_steps * cfg.total_batch_size:,} tokens: {passes:.2f} passes "
              f"over the {loader.n_tokens:,} tokens of the training shards (the data repeats)")
    print(f"evaluation: ~{eval_share(cfg):.1%} of the training compute (an estimate)")
    if run.device_type == "cuda" and run.peak_flops is None:
        print(f"no MFU: the peak FLOP/s of {torch.cuda.get_device_name()} is not in train.py's PEAK_FLOPS")

# -----------------------------------------------------------------------------
# what the training loop calls


def micro_batches(run):
    """This process's (inputs, targets) of the next global batch, on the device."""
    cfg, batches = run.cfg, []
    for tokens in map(torch.from_numpy, run.loader.next_batch()):
        if run.device_type == "cuda":
            tokens = tokens.pin_memory().to(run.device, non_blocking=True)  # the copy overlaps the GPU's work
        batches.append((tokens[:-1].view(cfg.batch_size, cfg.block_size), tokens[1:].view(cfg.batch_size, cfg.block_size)))
    return batches


def log_steps(run):
    """The steps since the last log into step_logs, read back with one device synchronization."""
    losses = torch.stack([p.loss for p in run.pending])
    if run.procs.ddp:
        dist.all_reduce(losses)
        losses /= run.procs.world_size
    values = torch.stack([losses, torch.stack([p.grad_norm for p in run.pending])], dim=1).tolist()
    for p, (loss, norm) in zip(run.pending, values):
        if not math.isfinite(loss):
            raise Error(f"non-finite training loss {loss} at step {p.step}; ckpt.pt holds the last checkpoint before it")
        run.step_logs.append({"step": p.step, "lr": p.lr, "loss": loss, "grad_norm": norm, **p.stats,
                              **({"skipped": True} if p.skipped else {})})
        to_wandb(run, run.step_logs[-1])
    run.pending.clear()
    now = time.time()
    tokens_per_s = (run.step - run.last_log_step) * run.cfg.total_batch_size / (now - run.last_log_time)
    run.last_log_time, run.last_log_step = now, run.step
    postfix = {"loss": f"{run.step_logs[-1]['loss']:.4f}", "lr": f"{run.step_logs[-1]['lr']:.2e}", "tok/s": f"{tokens_per_s:,.0f}"}
    if run.peak_flops:
        postfix["mfu"] = f"{run.raw_model.estimate_mfu(tokens_per_s, run.peak_flops * run.procs.world_size):.1%}"
    run.bar.set_postfix(postfix, refresh=False)


def evaluate(run):
    """The returned model's validation loss, and the last iterate's when it is due, into eval_logs."""
    cfg, start_time = run.cfg, time.time()
    last = ema = None
    if cfg.optimizer == "adamw" or due(run.step, cfg.vanilla_eval_interval, cfg):
        last = val_loss(run)
    if cfg.optimizer != "adamw":
        run.opt.eval()  # the EMA into the model's parameters
        ema = val_loss(run)
        run.opt.train()  # the last iterate back, bit for bit
    run.eval_time += time.time() - start_time
    entry = {"step": run.step, "val_loss": last if ema is None else ema, "ema_val_loss": ema, "vanilla_val_loss": last}
    for key in ("val_loss", "vanilla_val_loss"):
        if entry[key] is not None and not math.isfinite(entry[key]):
            raise Error(f"non-finite {key} {entry[key]} at step {run.step}; ckpt.pt holds the last checkpoint before it")
    run.eval_logs.append(entry)
    to_wandb(run, entry)
    if run.procs.master:
        run.bar.write(f"step {run.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in entry.items() if k != "step" and v is not None))
        write_result(run, "completed" if run.step == cfg.max_steps else "running")


def val_loss(run):
    return mean_loss(run.eval_model, run.val_share, run.cfg.batch_size, run.cfg.block_size, run.procs.world_size,
                     run.autocast)


def to_wandb(run, entry):
    if run.wandb is not None:
        run.wandb.log({k: v for k, v in entry.items() if k != "step" and v is not None}, step=entry["step"])


def save_checkpoint(run):
    cfg = run.cfg
    if not run.procs.master:
        return
    state = {
        "model": run.raw_model.state_dict(),
        "optimizer": run.opt.state_dict(),
        "scaler": run.scaler.state_dict(),
        "step": run.step,
        "data_pos": run.loader.pos,
        "rng": {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if run.device_type == "cuda" else None},
        "config": run.config,
        "code": run.code,
        "eval_logs": run.eval_logs,
        "step_logs": run.step_logs,
        "wall_time": run.wall_time(),
        "eval_time": run.eval_time,
    }
    save_atomically(run_files(cfg.out_dir)[0], lambda f: torch.save(state, f))


def write_result(run, status, error=None):
    cfg, step, wall_time = run.cfg, run.step, run.wall_time()
    last_eval = run.eval_logs[-1] if run.eval_logs else {}
    summary = {
        "status": status,
        "final_val_loss": last_eval.get("val_loss"),  # the returned model's: the number to compare
        "final_train_loss": run.step_logs[-1]["loss"] if run.step_logs else None,
        "vanilla_val_loss": last_eval.get("vanilla_val_loss"),  # the last iterate's
        "ema_val_loss": last_eval.get("ema_val_loss"),
        "steps": step,
        "tokens_seen": step * cfg.total_batch_size,
        "data_passes": step * cfg.total_batch_size / run.loader.n_tokens,
        # the only three fields that change when the same run is repeated
        "wall_time": wall_time,
        "eval_time": run.eval_time,
        "tokens_per_s": step * cfg.total_batch_size / wall_time if step else 0.0,
    }
    if error is not None:
        summary["error"] = error
    save_json(run_files(cfg.out_dir)[1], {"config": run.config, "code": run.code, "summary": summary,
                               "eval_logs": run.eval_logs, "step_logs": run.step_logs})
    return summary


def finish(run, status="completed", error=None):
    """The last result.json (its final wall time) and the end of the progress bar and of wandb."""
    if run.bar is not None:
        run.bar.close()
        run.preemption.close()
    if run.procs.master:
        summary = write_result(run, status, error)
        if run.wandb is not None:
            run.wandb.summary.update(summary)
            run.wandb.finish(exit_code=int(status != "completed"))


def record_failure(run, message):
    """result.json says the run failed, and why, once the run has started writing it."""
    if run.session_start is not None:
        finish(run, "failed", message)

# -----------------------------------------------------------------------------


def train(run):
    """The training loop: one optimizer step over a global batch at a time, then its logging,
    evaluation and checkpoint when they are due."""
    cfg, model, opt, scaler = run.cfg, run.model, run.opt, run.scaler
    while run.step < cfg.max_steps:
        # the learning rate of this step, and whether it records PACE's telemetry (read-only: ema, pace)
        lr = get_lr(run.step, cfg)
        stats_step = cfg.stats_interval > 0 and (run.step + 1) % cfg.stats_interval == 0 and cfg.optimizer != "adamw"
        for group in opt.param_groups:
            group["lr"], group["log_stats"] = lr, stats_step
        # forward and backward passes over this process's micro-batches: their gradients add up
        batches = micro_batches(run)
        loss_sum = torch.zeros((), device=run.device)
        for micro_step, (x, y) in enumerate(batches):
            if run.procs.ddp:  # all-reduce the gradients in the last backward pass only; DDP reads this in forward()
                model.require_backward_grad_sync = micro_step == len(batches) - 1
            with run.autocast:
                _, loss = model(x, y)
            loss = loss / len(batches)  # the mean over the micro-batches
            loss_sum += loss.detach()
            scaler.scale(loss).backward()  # float16 only: the loss scaled up, so that small gradients survive
        # the gradients' global norm clipped (with grad_clip 0 only measured), then the optimizer step
        scaler.unscale_(opt)
        grad_norm = torch.nn.utils.clip_grad_norm_(run.raw_model.parameters(), cfg.grad_clip or float("inf"))
        scale = scaler.get_scale()
        scaler.step(opt)  # float16: skipped when a gradient overflowed, leaving weights and state untouched
        scaler.update()
        skipped = scaler.get_scale() < scale
        stats = opt.get_step_stats() if stats_step and not skipped else {}
        opt.zero_grad()
        run.step += 1
        run.bar.update()
        # logging (one read-back from the device per log_interval steps), evaluation, checkpoint; a signal
        # to stop (preemption) stops every process after this step, with a checkpoint
        run.pending.append(PendingStep(run.step, lr, loss_sum, grad_norm, stats, skipped))
        eval_due, ckpt_due = due(run.step, cfg.eval_interval, cfg), due(run.step, cfg.ckpt_interval, cfg)
        preempted = run.preemption.requested() and run.step < cfg.max_steps
        if run.step % cfg.log_interval == 0 or eval_due or ckpt_due or preempted:
            log_steps(run)
        if eval_due:
            evaluate(run)
        if ckpt_due or preempted:
            save_checkpoint(run)
        if preempted:
            finish(run, "preempted")
            return EXIT_PREEMPTED
        if eval_due or ckpt_due:
            run.last_log_time = time.time()  # tokens/s measures training, not evaluations and checkpoints
    finish(run)
    return 0


def main(args):
    if "-h" in args or "--help" in args:
        print(__doc__ + "\n" + inspect.getsource(Settings))
        return
    try:
        given, bad_settings = given_settings(args), None  # the settings, parsed once
    except Error as error:
        given, bad_settings = {}, error  # this process joins the others all the same, to stop with them (agree)
    procs = start_processes(given.get("device", DEFAULTS.device))  # torchrun's processes, or this one alone
    run = None  # until every process has opened it, nothing is written
    with ending(procs, "train.py", lambda message: run and record_failure(run, message)) as end:  # all complete, or all stop
        run = agree(procs, lambda: open_run(given, procs), bad_settings)  # every process opens the same run, or every one stops
        start(run)
        end.status = train(run)  # 0, or EXIT_PREEMPTED


if __name__ == "__main__":
    main(sys.argv[1:])
