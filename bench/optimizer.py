"""Times PACE.step() against torch.optim.AdamW on GPT-2-124M's parameters, in one
process, and prints the ratios, the optimizer-state bytes per parameter, the time of
the first step (which compiles the fused kernels) and, on CUDA, the peak memory a step
adds to the model's.

    python -m bench.optimizer                 # CUDA when available, else CPU; all PACE paths
    python -m bench.optimizer --device cpu

The floor is memory traffic: fused AdamW reads and writes ~28 bytes per float32
parameter per step, PACE at least 36 (it also reads and writes the EMA): 1.29x.
Every timed step of PACE or foreach AdamW sits between two steps of fused AdamW, and
the ratio is taken per round, so that a busy moment of the machine hits both sides.
"""

import argparse
import statistics
import time

import torch

from model import GPT, GPTConfig
from pace import PACE


def make_optimizers(params):
    hyper = dict(lr=6e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    pace = dict(hyper, lambda_pullback=0.15, ema_kappa=0.2, use_ema_eval=True)
    return {
        "AdamW fused": torch.optim.AdamW(params, **hyper, fused=True),
        "AdamW foreach": torch.optim.AdamW(params, **hyper, foreach=True),
        "PACE fused": PACE(params, **pace, fused=True),
        "PACE foreach": PACE(params, **pace, fused=False, foreach=True),
        "PACE ema-only fused": PACE(params, **dict(pace, lambda_pullback=0.0), fused=True),
        "PACE adamw-mode fused": PACE(params, **dict(hyper), fused=True),
    }


def state_bytes_per_param(opt, params):
    tensors = [t for s in opt.state.values() for t in s.values() if torch.is_tensor(t)]
    return sum(t.numel() * t.element_size() for t in tensors) / sum(p.numel() for p in params)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=20, help="rounds: timed steps per optimizer")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = GPT(GPTConfig()).to(args.device)  # GPT-2-124M: the tensors a real run steps
    params = list(model.parameters())
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    optimizers = make_optimizers(params)
    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    first_step, peak_memory = {}, {}
    for name, opt in optimizers.items():  # warm-up: state allocation and compilation
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        for group in opt.param_groups:
            group["lr"] *= 1.01  # a changing lr must not recompile
        start = time.perf_counter()
        opt.step()
        sync()
        first_step[name] = time.perf_counter() - start
        opt.step()
        if cuda:  # state and temporaries, beyond the model and the other optimizers
            peak_memory[name] = f"{(torch.cuda.max_memory_allocated() - before) / 2**20:7.0f} MiB"

    def timed_step(opt, i):
        for group in opt.param_groups:
            group["lr"] = 6e-4 * (1 + 0.01 * i)
        sync()
        start = time.perf_counter()
        opt.step()
        sync()
        return time.perf_counter() - start

    # Each timed step sits between two steps of fused AdamW, so that the ratio of a
    # round compares steps taken under the same load of this (shared) machine.
    baseline = optimizers.pop("AdamW fused")
    times, ratios, baseline_times = {name: [] for name in optimizers}, {name: [] for name in optimizers}, []
    for i in range(args.repeats):
        for name, opt in optimizers.items():
            before = timed_step(baseline, i)
            times[name].append(timed_step(opt, i))
            after = timed_step(baseline, i)
            ratios[name].append(times[name][-1] / ((before + after) / 2))
            baseline_times += [before, after]

    n = sum(p.numel() for p in params)
    print(f"{n / 1e6:.1f}M parameters in {len(params)} tensors on {args.device}, "
          f"{torch.get_num_threads()} threads, {args.repeats} rounds")
    print(f"  {'optimizer':24s} {'min':>8s} {'median':>9s}   {'x fused AdamW: median of rounds (min/min)':43s}"
          f"{'state':>6s}   first step   peak memory")
    print(f"  {'AdamW fused':24s} {min(baseline_times) * 1e3:6.1f} ms {statistics.median(baseline_times) * 1e3:6.1f} ms"
          f"   {1:5.2f}x{'':37s}{state_bytes_per_param(baseline, params):4.1f} B   {first_step['AdamW fused']:6.1f} s"
          f"   {peak_memory.get('AdamW fused', '-')}")
    for name, opt in optimizers.items():
        print(f"  {name:24s} {min(times[name]) * 1e3:6.1f} ms {statistics.median(times[name]) * 1e3:6.1f} ms"
              f"   {statistics.median(ratios[name]):5.2f}x ({min(times[name]) / min(baseline_times):4.2f}x){'':29s}"
              f"{state_bytes_per_param(opt, params):4.1f} B   {first_step[name]:6.1f} s   {peak_memory.get(name, '-')}")


if __name__ == "__main__":
    main()
