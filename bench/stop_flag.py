"""
The collectives a training run makes besides DDP's, as torchrun runs them: an all-reduce, and the
agreement on a stop signal (processes.Preemption.requested: one all-reduce of one number per
step); that a signal to one process stops every process after the same step; on CUDA the
host-device synchronizations the agreement makes (torch.cuda.set_sync_debug_mode); and its cost
per step against a step that does not ask, in the same processes.

    torchrun --standalone --nproc_per_node=2 -m bench.stop_flag            # CPU processes (gloo)
    torchrun --standalone --nproc_per_node=1 -m bench.stop_flag --device cuda   # one GPU: NCCL still runs

Each round times --steps steps of a stand-in for a step's work (a matrix product) with and
without the agreement, in alternation; rank 0 prints the median extra time per step. The
signal (SIGUSR1) goes to the last rank.
"""

import argparse
import signal
import statistics
import time
import warnings

import torch
import torch.distributed as dist

from processes import Preemption, exit_now, leave, start_processes


def first_stop(preemption, procs, signal_step, steps=5):
    """The first step after which requested() says stop, SIGUSR1 sent to the last rank before step
    signal_step's question: under the rule, signal_step + 1 on every rank."""
    for step in range(1, steps + 1):
        if step == signal_step and procs.rank == procs.world_size - 1:
            signal.raise_signal(signal.SIGUSR1)
        if preemption.requested():
            return step
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--steps", type=int, default=200, help="steps per round (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=7, help="(default: %(default)s)")
    args = parser.parse_args()
    procs = start_processes(args.device)
    cuda = args.device == "cuda"
    device = f"cuda:{procs.local_rank}" if cuda else "cpu"

    total = torch.full((1,), float(procs.rank + 1), device=device)
    dist.all_reduce(total)
    expected = procs.world_size * (procs.world_size + 1) / 2
    if procs.master:
        print(f"all-reduce over {procs.world_size} process(es) ({dist.get_backend()}): {total.item():g}, "
              f"expected {expected:g}: {'correct' if total.item() == expected else 'WRONG'}", flush=True)

    preemption = Preemption(procs, device)
    a = torch.randn(256, 256, device=device)
    sync = torch.cuda.synchronize if cuda else (lambda: None)

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
    if cuda:  # the agreement's synchronizations of this process with its GPU, over as many steps
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            for _ in range(args.steps):
                preemption.requested()
            torch.cuda.set_sync_debug_mode("default")
        syncs = sum("synchroniz" in str(w.message) for w in caught)
    everyone = [None] * procs.world_size
    dist.all_gather_object(everyone, first_stop(preemption, procs, signal_step=2))
    if procs.master:
        right = all(s == 3 for s in everyone)
        print(f"stop: SIGUSR1 to rank {procs.world_size - 1} in step 2; the ranks stopped after steps {everyone}: "
              f"{'every rank after step 3, as the rule says' if right else 'WRONG: expected 3 on every rank'}")
        if cuda:
            print(f"host-device synchronizations in {args.steps} agreements: {syncs}")
        print(f"{procs.world_size} processes on {args.device}: the stop agreement adds "
              f"{statistics.median(extra) * 1e6:.0f} us per step (median of {args.rounds} rounds of {args.steps} steps; "
              f"a step of the stand-in work takes {without * 1e6:.0f} us)", flush=True)
    preemption.close()
    leave(procs)
    exit_now(0)


if __name__ == "__main__":
    main()
