"""
train.py's run itself, with what its training steps cost beyond their computation: over the steps
after the first ones (which compile), tokens/s and MFU, the compilations (recompiles) and, on CUDA,
the host-device synchronizations per step (torch.cuda.set_sync_debug_mode("warn")); over the run,
the graph breaks, the peak memory and whether the optimizer took its compiled step. gpu_check.py's
smoke rows are this.

    torchrun --standalone --nproc_per_node=1 -m bench.train_step --warmup=3 --steps=5 configs/pace.py \\
        --compile=True --max_steps=12 --log_interval=12 --eval_interval=12 --ckpt_interval=12 --data_dir=...

--warmup steps are not measured, the next --steps are; the measured steps must not log, evaluate
or checkpoint (those synchronize by design), and the run must go on for a step after them. The
other arguments are train.py's. At the end rank 0 prints one line: `train_step: {...}` (JSON).
"""

import argparse
import json
import sys
import time
import warnings

import torch
from torch._dynamo.utils import counters, get_compilation_metrics

import train


class StepMeter:
    """Wraps train.micro_batches, which every step calls first: a measured step runs from that call to the next."""

    def __init__(self, warmup, steps):
        self.first, self.last = warmup + 1, warmup + steps
        self.syncs, self.caught, self.report = [], None, {}
        self.micro_batches = train.micro_batches
        train.micro_batches = self.step_starts

    def step_starts(self, run):
        step, cfg = run.step + 1, run.cfg
        if step == self.first:
            measured = [s for s in range(self.first, self.last + 1) if train.due(s, cfg.log_interval, cfg)
                        or train.due(s, cfg.eval_interval, cfg) or train.due(s, cfg.ckpt_interval, cfg)]
            if measured or cfg.max_steps <= self.last:
                raise SystemExit(f"bench.train_step: the measured steps {self.first}-{self.last} must not log, evaluate or "
                                 f"checkpoint (steps {measured}), and max_steps must exceed {self.last}")
            self.sync(run)
            self.start, self.compiles = time.perf_counter(), len(get_compilation_metrics())
        if self.first < step <= self.last + 1:  # the step before has ended
            if run.device_type == "cuda":
                torch.cuda.set_sync_debug_mode("default")
                self.syncs.append(sum("synchroniz" in str(w.message) for w in self.caught))
            self.caught = None
            self.recording.__exit__(None, None, None)
        if step == self.last + 1:
            self.sync(run)
            self.measured(run, time.perf_counter() - self.start)
        if self.first <= step <= self.last:
            self.recording = warnings.catch_warnings(record=True)
            self.caught = self.recording.__enter__()
            warnings.simplefilter("always")
            if run.device_type == "cuda":
                torch.cuda.set_sync_debug_mode("warn")
        return self.micro_batches(run)

    @staticmethod
    def sync(run):
        if run.device_type == "cuda":
            torch.cuda.synchronize()

    def measured(self, run, seconds):
        steps = self.last - self.first + 1
        tokens_per_s = steps * run.cfg.total_batch_size / seconds
        self.report.update({
            "steps": f"{self.first}-{self.last}", "tokens_per_s": tokens_per_s,
            "mfu": run.raw_model.estimate_mfu(tokens_per_s, run.peak_flops * run.procs.world_size) if run.peak_flops else None,
            "compiles_in_measured_steps": len(get_compilation_metrics()) - self.compiles,
            "syncs_per_step": self.syncs if run.device_type == "cuda" else None,
        })

    def finish(self, run):
        """The whole run's counts, into the report."""
        breaks = counters["graph_break"]
        self.report.update({
            "loss": run.cfg.loss, "dtype": run.cfg.dtype, "processes": run.procs.world_size,
            "fused_optimizer": run.opt.param_groups[0]["fused"],
            # the places where dynamo broke the graph, each counted once (every compilation, eval's too, meets it again)
            "graph_breaks": len(breaks), "graph_break_reasons": [" ".join(r.split())[:200] for r in breaks],
            "recompile_reasons": [m.recompile_reason.splitlines()[0] for m in get_compilation_metrics() if m.recompile_reason],
            "peak_memory": torch.cuda.max_memory_allocated(run.device) if run.device_type == "cuda" else None,
        })


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--warmup", type=int, default=3, help="steps not measured (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=5, help="steps measured (default: %(default)s)")
    args, train_args = parser.parse_known_args()
    meter = StepMeter(args.warmup, args.steps)
    train_loop = train.train

    def measured_train(run):
        status = train_loop(run)
        meter.finish(run)
        if run.procs.master:
            print("train_step: " + json.dumps(meter.report), flush=True)
        return status

    train.train = measured_train
    train.main(train_args)


if __name__ == "__main__":
    sys.exit(main())
