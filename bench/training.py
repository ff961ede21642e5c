"""
Training throughput of AdamW and PACE on the CPU configuration: tokens/s, and the time of
each phase of a step (forward+loss, backward, gradient clipping, optimizer), so that the
bottleneck is visible.

    python -m bench.training                       # configs/cpu.py, 12 timed steps per method
    python -m bench.training --steps=30 --batch_size=8
    python -m bench.training configs/gpu80gb.py --loss=chunked --loss_chunk=4096   # GPT-2-124M, chunks of 4,096 tokens

The two methods train identical models on identical random batches (speed does not depend
on the data) and alternate step by step, so that load from other programs on the machine
falls on both alike (each goes first every other step); the medians over the timed steps are
reported, and the time of each method's first step, which compiles the kernels. Forward+loss
includes the output layer's gradient products: the chunked loss computes them in the forward pass.
Settings and config files as for train.py: configs/cpu.py when no config file is given, else
train.py's defaults (GPT-2-124M) and the files given (configs/gpu80gb.py: GPT-2-124M, 64 x 1,024
tokens a micro-batch). Like train.py it runs on the GPU when there is one (its dtype and loss
settings, torch.compile) and then also reports the peak memory. The first line says what is
measured; --steps=0 prints it and stops.
"""

import argparse
import statistics
import sys
import time

import torch

import model as model_module
from settings import device_type, load_settings, make_model, make_optimizer, precision, resolve_auto

parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
parser.add_argument("--steps", type=int, default=12, help="timed steps per method (default: %(default)s)")
parser.add_argument("--warmup", type=int, default=2, help="untimed first steps, which build kernels (default: %(default)s)")
parser.add_argument("--loss_chunk", type=int, help="tokens per chunk of the chunked loss (default: model.py's for the device)")
parser.add_argument("--methods", default="adamw,pace", help="comma list of adamw, pace (default: %(default)s)")
args, overrides = parser.parse_known_args()
base = [] if any(not o.startswith("--") for o in overrides) else ["configs/cpu.py"]  # a config file given: train.py's defaults
cfg = load_settings([*base, *overrides])
device = device_type(cfg)
cuda = device == "cuda"
cfg, _ = resolve_auto(cfg, device)
autocast, _ = precision(cfg, device)
if args.loss_chunk:
    model_module.LOSS_CHUNK[device] = args.loss_chunk
use_compile = cuda if cfg.compile is None else cfg.compile
grad_accum_steps = cfg.total_batch_size // (cfg.batch_size * cfg.block_size)
methods = tuple(args.methods.split(","))
phases = ("forward+loss", "backward", "clip", "optimizer")


def clock():
    if cuda:
        torch.cuda.synchronize()  # the GPU runs asynchronously: wait for the work queued so far
    return time.perf_counter()


runs = {}
for method in methods:
    model = make_model(cfg).to(device)
    method_cfg = load_settings([*base, f"configs/{method}.py", *overrides])
    runs[method] = {"model": model, "compiled": torch.compile(model) if use_compile else model,
                    "opt": make_optimizer(method_cfg, model), "times": {p: [] for p in phases}, "peak": 0}

torch.manual_seed(0)
print(f"GPT of {cfg.n_layer} layers, {cfg.n_head} heads, {cfg.n_embd} wide, {cfg.vocab_size:,} tokens "
      f"({runs[methods[0]]['model'].num_params(non_embedding=False):,} parameters), "
      f"{cfg.total_batch_size:,} tokens per step, {grad_accum_steps} micro-batch(es) of {cfg.batch_size} x {cfg.block_size}, "
      f"on {device}{f' ({cfg.dtype})' if cuda else f' with {torch.get_num_threads()} threads'}, compile {use_compile}, "
      f"loss {cfg.loss}" + (f" (chunks of {model_module.LOSS_CHUNK[device]:,} tokens)" if cfg.loss == "chunked" else ""), flush=True)
if args.steps == 0:
    sys.exit(0)
for i in range(args.warmup + args.steps):
    batches = torch.randint(0, cfg.vocab_size, (grad_accum_steps, cfg.batch_size, cfg.block_size + 1), device=device)
    for method in methods if i % 2 else reversed(methods):  # neither always goes first
        run = runs[method]
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        times = dict.fromkeys(phases, 0.0)
        t0 = clock()
        for tokens in batches:
            with autocast:
                _, loss = run["compiled"](tokens[:, :-1], tokens[:, 1:])
            t1 = clock()
            (loss / grad_accum_steps).backward()
            t2 = clock()
            times["forward+loss"] += t1 - t0
            times["backward"] += t2 - t1
            t0 = t2
        torch.nn.utils.clip_grad_norm_(run["model"].parameters(), cfg.grad_clip)
        t1 = clock()
        run["opt"].step()
        run["opt"].zero_grad()
        t2 = clock()
        times["clip"], times["optimizer"] = t1 - t0, t2 - t1
        if i == 0:
            run["first_step"] = sum(times.values())
        if i >= args.warmup:
            for p in phases:
                run["times"][p].append(times[p])
        if cuda:
            run["peak"] = max(run["peak"], torch.cuda.max_memory_allocated())

for method in methods:
    run = runs[method]
    run["step_s"] = statistics.median(map(sum, zip(*run["times"].values())))
    run["phase_s"] = {p: statistics.median(run["times"][p]) for p in phases}
    print(f"{method:6s} {cfg.total_batch_size / run['step_s']:8,.0f} tokens/s   step {run['step_s'] * 1e3:7.1f} ms: "
          + ", ".join(f"{p} {s * 1e3:.1f} ms ({s / run['step_s']:.1%})" for p, s in run["phase_s"].items())
          + f"; first step {run['first_step']:.1f} s, compilation included"
          + (f"; peak memory {run['peak'] / 2**30:.2f} GiB ({len(methods)} model(s) resident)" if cuda else ""))
if set(methods) == {"adamw", "pace"}:
    adamw, pace = runs["adamw"], runs["pace"]
    opt_extra = pace["phase_s"]["optimizer"] - adamw["phase_s"]["optimizer"]
    print(f"PACE / AdamW tokens/s: {adamw['step_s'] / pace['step_s']:.4f} measured (noise from other programs included); "
          f"{adamw['step_s'] / (adamw['step_s'] + opt_extra):.4f} "
          f"from the optimizer steps alone (the rest of the step is the same computation)")
