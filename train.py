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
"""

import inspect
import math
import os
import re
import sys
import time
import zlib
from dataclasses import asdict

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from checkpoint import SHAPE, initial_weights, load_checkpoint, save_atomically, save_json, take_shape
from data import DataLoader, read_shard, val_shard_path
from errors import Error
from model import mean_loss
from pace import fused_error
from processes import (EXIT_PREEMPTED, Preemption, agree, agree_on_fused, ending, gather, start_processes,
                       weights_checksum)
from provenance import code_name, device_description, provenance
from settings import (DEFAULTS, RESUMABLE_CHANGES, Settings, auto_choice, check_settings, device_type, get_lr,
                      given_settings, make_model, make_optimizer, precision, resolve_auto)

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


class Run:
    """One process's part of a training run. __init__ checks and opens everything that can fail on
    one process and not on another (settings, device, out_dir, checkpoint, data, model, optimizer),
    before any collective and before anything is written; the loop is train() below."""

    def __init__(self, args, procs):
        # settings
        given = given_settings(args)
        cfg = self.cfg = Settings(**given)
        check_settings(cfg)
        self.procs = procs
        # device
        self.device_type = device_type(cfg)
        self.device = f"cuda:{procs.local_rank}" if self.device_type == "cuda" else "cpu"
        if self.device_type == "cuda":
            torch.cuda.set_device(self.device)
            torch.set_float32_matmul_precision("high")  # TF32 for the float32 matmuls that remain outside autocast
        torch.use_deterministic_algorithms(cfg.deterministic)  # an op without a deterministic kernel then raises
        if cfg.deterministic:  # cuBLAS reduces in a fixed order only with a fixed workspace, read at its first use
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            # nothing here reads memory before writing it: filling every new tensor would cost a write of it
            torch.utils.deterministic.fill_uninitialized_memory = False
        tokens_per_micro_step = cfg.batch_size * cfg.block_size * procs.world_size
        if cfg.total_batch_size % tokens_per_micro_step:
            raise Error(f"total_batch_size ({cfg.total_batch_size}) must be a multiple of batch_size * block_size * processes "
                        f"= {cfg.batch_size} * {cfg.block_size} * {procs.world_size} = {tokens_per_micro_step}")
        self.wandb_module = import_wandb() if cfg.wandb_log and procs.master else None  # the master logs, from start() on
        # out_dir: a new run, or the checkpoint of the one to resume; a new run may start from the weights
        # of init_from, whose shape is the model's
        self.ckpt_path, self.result_path = os.path.join(cfg.out_dir, "ckpt.pt"), os.path.join(cfg.out_dir, "result.json")
        ckpt = self.checkpoint_to_resume()
        # precision and loss: dtype=auto and loss=auto chosen once, when the run starts
        for note in resolve_auto(cfg, self.device_type, ckpt and ckpt["config"]):
            if procs.master:
                print(note)
        self.autocast, self.scaler = precision(cfg, self.device_type)
        start_weights = None
        if cfg.init_from != "scratch" and ckpt is None:
            start_weights = initial_weights(cfg, given)
        elif cfg.init_from != "scratch":
            take_shape(cfg, given, {k: ckpt["config"][k] for k in SHAPE}, f"the run in {cfg.out_dir}")
        self.config = {k: v for k, v in asdict(cfg).items() if k != "resume"}  # resume is an action, not part of the run
        if ckpt is not None:
            self.check_resumable(ckpt)
        # data: the training shards, and this process's share of the validation sequences, on the device once
        self.loader = DataLoader(cfg.data_dir, cfg.batch_size, cfg.block_size,
                                 cfg.total_batch_size // tokens_per_micro_step, procs.rank, procs.world_size)
        val_path = val_shard_path(cfg.data_dir)
        val_tokens = read_shard(val_path)[:cfg.eval_tokens + 1]
        if len(val_tokens) < cfg.eval_tokens + 1:
            raise Error(f"{val_path} holds {len(val_tokens)} tokens, fewer than eval_tokens + 1 = {cfg.eval_tokens + 1}")
        self.val_checksum = f"{zlib.crc32(np.ascontiguousarray(val_tokens).tobytes()):08x}"
        n_seq = cfg.eval_tokens // cfg.block_size
        lo, hi = procs.rank * n_seq // procs.world_size, (procs.rank + 1) * n_seq // procs.world_size
        self.val_share = torch.from_numpy(val_tokens[lo * cfg.block_size:hi * cfg.block_size + 1].astype(np.int64)).to(self.device)
        # model and optimizer, at the checkpoint's state when resuming
        self.raw_model = make_model(cfg).to(self.device)
        if start_weights is not None:
            self.raw_model.load_state_dict(start_weights)  # the EMA starts from them, at the first step
        self.opt = make_optimizer(cfg, self.raw_model)
        self.step, self.eval_logs, self.step_logs, self.past_wall_time, self.eval_time = 0, [], [], 0.0, 0.0
        self.checksum = None  # of the weights in the checkpoint
        self.code = []  # provenance() of each session of the run, this one last (start())
        if ckpt is not None:
            self.restore(ckpt)
        self.session_start = self.bar = self.wandb = None  # set by start()

    def checkpoint_to_resume(self):
        """The checkpoint to resume from, or None for a new run."""
        cfg = self.cfg
        if cfg.resume and os.path.exists(self.ckpt_path):
            return load_checkpoint(self.ckpt_path)
        if not cfg.resume and (os.path.exists(self.ckpt_path) or os.path.exists(self.result_path)):
            raise Error(f"{cfg.out_dir} already holds a run: continue it with --resume=True or choose another out_dir")
        return None

    def check_resumable(self, ckpt):
        """The settings that change what is computed must be the run's."""
        for key, value in self.config.items():
            saved = ckpt["config"].get(key, getattr(DEFAULTS, key))  # a setting newer than the run: its default
            if saved == "auto" and key in ("dtype", "loss"):  # a run older than resolve_auto: auto as it is now
                saved = auto_choice(key, self.device_type)
            if key not in RESUMABLE_CHANGES and saved != value:
                raise Error(f"{key} is {value!r} but the run in {self.cfg.out_dir} has {saved!r}; "
                            f"a resumed run must keep it (or start a new out_dir)")

    def restore(self, ckpt):
        self.raw_model.load_state_dict(ckpt["model"])
        self.opt.load_state_dict(ckpt["optimizer"])
        if self.scaler.is_enabled():
            self.scaler.load_state_dict(ckpt["scaler"])
        self.step, self.loader.pos = ckpt["step"], ckpt["data_pos"]
        self.eval_logs, self.step_logs, self.past_wall_time = ckpt["eval_logs"], ckpt["step_logs"], ckpt["wall_time"]
        self.eval_time = ckpt.get("eval_time", 0.0)
        self.code = ckpt.get("code", [])  # none in checkpoints written before train.py recorded it
        torch.set_rng_state(ckpt["rng"]["torch"])
        if self.device_type == "cuda" and ckpt["rng"]["cuda"] is not None:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"])
        self.checksum = weights_checksum(ckpt["model"])

    def state(self):
        """What every process must hold alike before training: the settings (but the paths, which
        may differ between nodes), the data, and where the run stands."""
        settings = {k: v for k, v in self.config.items() if k not in ("data_dir", "out_dir")}
        return {**settings, "training data": self.loader.fingerprint(), "validation tokens checksum": self.val_checksum,
                "step": self.step, "data position": self.loader.pos, "weights checksum": self.checksum}

    def start(self):
        """Start the clock and result.json, compile and wrap the model, and say what the run will do."""
        cfg, procs = self.cfg, self.procs
        self.session_start = time.time()
        session = {"from_step": self.step, **provenance(gather(procs, device_description(self.device)))}
        if self.checksum is not None and procs.master:
            made_by = code_name(self.code[-1] if self.code else None)
            if made_by != code_name(session):
                print(f"resuming a run made by code {made_by} with code {code_name(session)}")
        self.code.append(session)
        if procs.master:
            os.makedirs(cfg.out_dir, exist_ok=True)
            self.write_result("completed" if self.step == cfg.max_steps else "running")
            print("compiling the optimizer's fused step (now and at the first step; cached on disk for later runs)...", flush=True)
        # probed with the run's hyperparameters, which the kernels compile in: the first step then reuses them
        fused = agree_on_fused(procs, fused_error(self.device, self.opt.param_groups[0]))
        for group in self.opt.param_groups:
            group["fused"] = fused
        use_compile = self.device_type == "cuda" if cfg.compile is None else cfg.compile
        self.eval_model = torch.compile(self.raw_model) if use_compile else self.raw_model  # shares raw_model's parameters
        self.model = DDP(self.eval_model, device_ids=[procs.local_rank] if self.device_type == "cuda" else None) \
            if procs.ddp else self.eval_model
        self.peak_flops = peak_flops(torch.cuda.get_device_name()) if self.device_type == "cuda" else None
        if procs.master:
            print(f"{self.raw_model.num_params(non_embedding=False):,} parameters, {procs.world_size} process(es) on "
                  f"{self.device_type}, {self.loader.grad_accum_steps} accumulation step(s) of {cfg.batch_size} x "
                  f"{cfg.block_size} tokens, optimizer {cfg.optimizer}, out_dir {cfg.out_dir}")
            if cfg.resume and self.checksum is None:
                print(f"no checkpoint in {cfg.out_dir}: starting from step 0")
            passes = cfg.max_steps * cfg.total_batch_size / self.loader.n_tokens
            if passes > 1:
                print(f"max_steps x total_batch_size = {cfg.max_steps * cfg.total_batch_size:,} tokens: {passes:.2f} passes "
                      f"over the {self.loader.n_tokens:,} tokens of the training shards (the data repeats)")
            print(f"evaluation: ~{eval_share(cfg):.1%} of the training compute (an estimate)")
            if self.device_type == "cuda" and self.peak_flops is None:
                print(f"no MFU: the peak FLOP/s of {torch.cuda.get_device_name()} is not in train.py's PEAK_FLOPS")
            if self.wandb_module is not None:
                self.wandb_module.init(project=cfg.wandb_project, config=self.config,
                                       name=cfg.wandb_run_name or os.path.basename(os.path.normpath(cfg.out_dir)))
                self.wandb = self.wandb_module
        self.preemption = Preemption(procs, self.device)  # from here on, SIGTERM and SIGUSR1 stop the run after a step
        self.pending = []  # (step, lr, loss, grad norm, telemetry, skipped) of the steps not yet logged
        self.bar = tqdm(total=cfg.max_steps, initial=self.step, disable=not procs.master, unit="step", dynamic_ncols=True)
        self.last_log_time, self.last_log_step = time.time(), self.step

    def micro_batches(self):
        """This process's (inputs, targets) of the next global batch, on the device."""
        cfg, batches = self.cfg, []
        for tokens in map(torch.from_numpy, self.loader.next_batch()):
            if self.device_type == "cuda":
                tokens = tokens.pin_memory().to(self.device, non_blocking=True)  # the copy overlaps the GPU's work
            batches.append((tokens[:-1].view(cfg.batch_size, cfg.block_size), tokens[1:].view(cfg.batch_size, cfg.block_size)))
        return batches

    def log(self):
        """The steps since the last log into step_logs, read back with one device synchronization."""
        losses = torch.stack([p[2] for p in self.pending])
        if self.procs.ddp:
            dist.all_reduce(losses)
            losses /= self.procs.world_size
        values = torch.stack([losses, torch.stack([p[3] for p in self.pending])], dim=1).tolist()
        for (s, lr, _, _, stats, skipped), (loss, norm) in zip(self.pending, values):
            if not math.isfinite(loss):
                raise Error(f"non-finite training loss {loss} at step {s}; ckpt.pt holds the last checkpoint before it")
            self.step_logs.append({"step": s, "lr": lr, "loss": loss, "grad_norm": norm, **stats,
                                   **({"skipped": True} if skipped else {})})
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
                raise Error(f"non-finite {key} {entry[key]} at step {self.step}; ckpt.pt holds the last checkpoint before it")
        self.eval_logs.append(entry)
        self.to_wandb(entry)
        if self.procs.master:
            self.bar.write(f"step {self.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in entry.items() if k != "step" and v is not None))
            self.write_result("completed" if self.step == cfg.max_steps else "running")

    def val_loss(self):
        return mean_loss(self.eval_model, self.val_share, self.cfg.batch_size, self.cfg.block_size,
                         self.procs.world_size, self.autocast)

    def to_wandb(self, entry):
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in entry.items() if k != "step" and v is not None}, step=entry["step"])

    def save_checkpoint(self):
        if not self.procs.master:
            return
        state = {
            "model": self.raw_model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "data_pos": self.loader.pos,
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state() if self.device_type == "cuda" else None},
            "config": self.config,
            "code": self.code,
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
            "data_passes": step * cfg.total_batch_size / self.loader.n_tokens,
            # the only three fields that change when the same run is repeated
            "wall_time": wall_time,
            "eval_time": self.eval_time,
            "tokens_per_s": step * cfg.total_batch_size / wall_time if step else 0.0,
        }
        if error is not None:
            summary["error"] = error
        save_json(self.result_path, {"config": self.config, "code": self.code, "summary": summary,
                                     "eval_logs": self.eval_logs, "step_logs": self.step_logs})
        return summary

    def finish(self, status="completed", error=None):
        """The last result.json (its final wall time) and the end of the progress bar and of wandb."""
        if self.bar is not None:
            self.bar.close()
            self.preemption.close()
        if self.procs.master:
            summary = self.write_result(status, error)
            if self.wandb is not None:
                self.wandb.summary.update(summary)
                self.wandb.finish(exit_code=int(status != "completed"))

    def record_failure(self, message):
        """result.json says the run failed, and why, once the run has started writing it."""
        if self.session_start is not None:
            self.finish("failed", message)


def import_wandb():
    """wandb, imported only when wandb_log is on."""
    try:
        import wandb
    except ImportError:
        raise Error("wandb_log=True but wandb is not installed: pip install wandb, or set wandb_log=False")
    return wandb


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
        micro_batches = run.micro_batches()
        loss_sum = torch.zeros((), device=run.device)
        for micro_step, (x, y) in enumerate(micro_batches):
            if run.procs.ddp:  # all-reduce the gradients in the last backward pass only; DDP reads this in forward()
                model.require_backward_grad_sync = micro_step == len(micro_batches) - 1
            with run.autocast:
                _, loss = model(x, y)
            loss = loss / len(micro_batches)  # the mean over the micro-batches
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
        run.pending.append((run.step, lr, loss_sum, grad_norm, stats, skipped))
        eval_due, ckpt_due = due(run.step, cfg.eval_interval, cfg), due(run.step, cfg.ckpt_interval, cfg)
        preempted = run.preemption.requested() and run.step < cfg.max_steps
        if run.step % cfg.log_interval == 0 or eval_due or ckpt_due or preempted:
            run.log()
        if eval_due:
            run.evaluate()
        if ckpt_due or preempted:
            run.save_checkpoint()
        if preempted:
            run.finish("preempted")
            return EXIT_PREEMPTED
        if eval_due or ckpt_due:
            run.last_log_time = time.time()  # tokens/s measures training, not evaluations and checkpoints
    run.finish()
    return 0


def main(args):
    if "-h" in args or "--help" in args:
        print(__doc__ + "\n" + inspect.getsource(Settings))
        return
    procs = start_processes(args)  # torchrun's processes, or this one alone
    run = None  # until every process has opened it, nothing is written
    with ending(procs, "train.py", lambda message: run and run.record_failure(message)) as end:  # all complete, or all stop
        run = agree(procs, lambda: Run(args, procs))  # every process opens the same run, or every one stops
        run.start()
        end.status = train(run)  # 0, or EXIT_PREEMPTED


if __name__ == "__main__":
    main(sys.argv[1:])
