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
On CUDA a step's time is the GPU's, by CUDA events: a sleeping kernel holds the GPU
while this process queues the whole step, whose kernels then run back to back, as in
training, where their launches overlap the backward pass. The CPU time of the launches
is shown beside it. On a CPU the two are the same clock.
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


def measure(device, repeats, config=None):
    """{optimizer: {"time": [s per round], "launch": [s], "beside": [the mean of the two fused AdamW steps
    around it, s], "ratio": [time / beside], "state": bytes per parameter, "first step": s, "peak": bytes or
    None}} for the optimizers of make_optimizers, on GPT(config) (None: GPT-2-124M), and a line saying what
    was measured."""
    torch.manual_seed(0)
    model = GPT(config or GPTConfig()).to(device)  # GPT-2-124M: the tensors a real run steps
    params = list(model.parameters())
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    optimizers = make_optimizers(params)
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    results, launches = {}, []
    for name, opt in optimizers.items():  # warm-up: state allocation and compilation
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        for group in opt.param_groups:
            group["lr"] *= 1.01  # a changing lr must not recompile
        start = time.perf_counter()
        opt.step()
        sync()
        first_step = time.perf_counter() - start
        start = time.perf_counter()
        opt.step()
        launches.append(time.perf_counter() - start)
        sync()
        results[name] = {"time": [], "launch": [], "beside": [], "ratio": [], "first step": first_step,
                         # state and temporaries, beyond the model and the other optimizers
                         "peak": torch.cuda.max_memory_allocated() - before if cuda else None}
    # on CUDA, a sleep long enough for this process to queue the slowest step seen so far, thrice over
    cycles = sleep_cycles(3 * max(launches)) if cuda else 0

    def timed_step(opt, i):
        """(the step's time, the CPU time of its launches)"""
        for group in opt.param_groups:
            group["lr"] = 6e-4 * (1 + 0.01 * i)
        sync()
        if not cuda:
            start = time.perf_counter()
            opt.step()
            return (time.perf_counter() - start,) * 2
        torch.cuda._sleep(cycles)
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        start = time.perf_counter()
        opt.step()
        launch = time.perf_counter() - start
        end.record()
        end.synchronize()
        return begin.elapsed_time(end) / 1e3, launch

    # Each timed step sits between two steps of fused AdamW, so that the ratio of a
    # round compares steps taken under the same load of this (shared) machine.
    baseline = optimizers.pop("AdamW fused")
    for i in range(repeats):
        for name, opt in optimizers.items():
            before = timed_step(baseline, i)
            step_time, launch = timed_step(opt, i)
            after = timed_step(baseline, i)
            results[name]["time"].append(step_time)
            results[name]["launch"].append(launch)
            results[name]["beside"].append((before[0] + after[0]) / 2)
            results[name]["ratio"].append(step_time / results[name]["beside"][-1])
            for t, l in (before, after):
                results["AdamW fused"]["time"].append(t)
                results["AdamW fused"]["launch"].append(l)
    results["AdamW fused"]["ratio"] = [1.0]
    for name, opt in [("AdamW fused", baseline), *optimizers.items()]:
        results[name]["state"] = state_bytes_per_param(opt, params)
    n = sum(p.numel() for p in params)
    what = (f"{n / 1e6:.1f}M parameters in {len(params)} tensors on {device}, "
            f"{torch.get_num_threads()} threads, {repeats} rounds" + (", GPU time by CUDA events" if cuda else ""))
    return results, what


def sleep_cycles(seconds):
    """The argument of torch.cuda._sleep that keeps the GPU busy for about `seconds`."""
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    begin.record()
    torch.cuda._sleep(10 ** 7)
    end.record()
    end.synchronize()
    return int(10 ** 7 * seconds / (begin.elapsed_time(end) / 1e3)) + 1


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=20, help="rounds: timed steps per optimizer")
    args = parser.parse_args()
    results, what = measure(args.device, args.repeats)
    print(what)
    print(f"  {'optimizer':24s} {'min':>8s} {'median':>9s}   {'x fused AdamW: median of rounds (min/min)':43s}"
          f"{'state':>6s}   first step   CPU launch   peak memory")
    adamw = results["AdamW fused"]
    for name, r in results.items():
        peak = f"{r['peak'] / 2**20:7.0f} MiB" if r["peak"] is not None else "-"
        print(f"  {name:24s} {min(r['time']) * 1e3:6.1f} ms {statistics.median(r['time']) * 1e3:6.1f} ms"
              f"   {statistics.median(r['ratio']):5.2f}x ({min(r['time']) / min(adamw['time']):4.2f}x){'':29s}"
              f"{r['state']:4.1f} B   {r['first step']:6.1f} s   {statistics.median(r['launch']) * 1e3:7.1f} ms   {peak}")


if __name__ == "__main__":
    main()
