"""
The cost per training step of agreeing on a stop signal (processes.Preemption.requested: one
all-reduce of one number per step), against a step that does not ask, in the same processes.

    torchrun --standalone --nproc_per_node=2 -m bench.stop_flag            # CPU processes (gloo)
    torchrun --standalone --nproc_per_node=8 -m bench.stop_flag --device cuda

Each round times --steps steps of a stand-in for a step's work (a matrix product) with and
without the agreement, in alternation; rank 0 prints the median extra time per step.
"""

import argparse
import statistics
import time

import torch

from processes import Preemption, exit_now, leave, start_processes


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--steps", type=int, default=200, help="steps per round (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=7, help="(default: %(default)s)")
    args = parser.parse_args()
    procs = start_processes([f"--device={args.device}"])
    device = f"cuda:{procs.local_rank}" if args.device == "cuda" else "cpu"
    preemption = Preemption(procs, device)
    a = torch.randn(256, 256, device=device)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)

    def round_time(ask):
        sync()
        start = time.perf_counter()
        for _ in range(args.steps):
            a.copy_(torch.tanh(a @ a) * 0.1)
            if ask:
                preemption.requested()
        sync()
        return (time.perf_counter() - start) / args.steps

    extra = []
    for _ in range(args.rounds):
        without, with_ = round_time(False), round_time(True)
        extra.append(with_ - without)
    if procs.master:
        print(f"{procs.world_size} processes on {args.device}: the stop agreement adds "
              f"{statistics.median(extra) * 1e6:.0f} us per step (median of {args.rounds} rounds of {args.steps} steps; "
              f"a step of the stand-in work takes {without * 1e6:.0f} us)")
    preemption.close()
    leave(procs)
    exit_now(0)


if __name__ == "__main__":
    main()
