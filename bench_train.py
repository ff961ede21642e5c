"""
Training throughput of AdamW and PACE on the CPU configuration: tokens/s and the share of
each step spent in optimizer.step().

    python bench_train.py                      # configs/cpu.py, 12 timed steps per method
    python bench_train.py --steps=30 --batch_size=8

The two methods train identical models on identical random batches (speed does not depend
on the data) and alternate step by step, so that load from other programs on the machine
falls on both alike (each goes first every other step); the medians over the timed steps are reported. Settings as for
train.py (--key=value) override configs/cpu.py.
"""

import argparse
import statistics
import time

import torch

from model import GPT, GPTConfig
from train import load_settings, make_optimizer

parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
parser.add_argument("--steps", type=int, default=12, help="timed steps per method (default: %(default)s)")
parser.add_argument("--warmup", type=int, default=2, help="untimed first steps, which build kernels (default: %(default)s)")
args, overrides = parser.parse_known_args()
cfg = load_settings(["configs/cpu.py", *overrides])
grad_accum_steps = cfg.total_batch_size // (cfg.batch_size * cfg.block_size)
methods = ("adamw", "pace")

runs = {}
for method in methods:
    torch.manual_seed(cfg.seed)
    model = GPT(GPTConfig(block_size=cfg.block_size, vocab_size=cfg.vocab_size, n_layer=cfg.n_layer,
                          n_head=cfg.n_head, n_embd=cfg.n_embd))
    method_cfg = load_settings(["configs/cpu.py", f"configs/{method}.py", *overrides])
    runs[method] = {"model": model, "opt": make_optimizer(method_cfg, model), "step": [], "opt_step": []}

torch.manual_seed(0)
print(f"{runs['adamw']['model'].num_params(non_embedding=False):,} parameters, {cfg.total_batch_size} tokens per step, "
      f"{grad_accum_steps} micro-batch(es) of {cfg.batch_size} x {cfg.block_size}, {torch.get_num_threads()} threads")
for i in range(args.warmup + args.steps):
    batches = torch.randint(0, cfg.vocab_size, (grad_accum_steps, cfg.batch_size, cfg.block_size + 1))
    for method in methods if i % 2 else reversed(methods):  # neither always goes first
        run = runs[method]
        t0 = time.perf_counter()
        for tokens in batches:
            _, loss = run["model"](tokens[:, :-1], tokens[:, 1:])
            (loss / grad_accum_steps).backward()
        torch.nn.utils.clip_grad_norm_(run["model"].parameters(), cfg.grad_clip)
        t1 = time.perf_counter()
        run["opt"].step()
        run["opt"].zero_grad()
        t2 = time.perf_counter()
        if i >= args.warmup:
            run["step"].append(t2 - t0)
            run["opt_step"].append(t2 - t1)

for method in methods:
    run = runs[method]
    run["step_s"], run["opt_s"] = statistics.median(run["step"]), statistics.median(run["opt_step"])
    print(f"{method:6s} {cfg.total_batch_size / run['step_s']:8,.0f} tokens/s   step {run['step_s'] * 1e3:7.1f} ms   "
          f"optimizer.step() {run['opt_s'] * 1e3:6.2f} ms = {run['opt_s'] / run['step_s']:.2%} of the step")
adamw, pace = runs["adamw"], runs["pace"]
print(f"PACE / AdamW tokens/s: {adamw['step_s'] / pace['step_s']:.4f} measured (noise from other programs included); "
      f"{adamw['step_s'] / (adamw['step_s'] + pace['opt_s'] - adamw['opt_s']):.4f} "
      f"from the optimizer steps alone (the rest of the step is the same computation)")
