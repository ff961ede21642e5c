"""train.py with one fault planted, for the tests of what a run does when something goes wrong:

    FAULT=model@1 python tests/train_with_fault.py ARGS...     # rank 1 fails to build the model
    FAULT=load@1      rank 1 fails to load the checkpoint's optimizer state
    FAULT=step@0:3    rank 0 raises in step 3
    FAULT=overflow:3  every rank's gradients overflow in step 3 (a float16 scaler skips it)
    FAULT=kill@1:5    rank 1 is SIGKILLed in step 5, once (a marker file in out_dir remembers it)
    FAULT=save@2      the 2nd checkpoint write fails half way: "No space left on device"
    FAULT=slow_save:2 every checkpoint write after the first takes 2 s longer (a large checkpoint, a slow disk)

Everything else is train.py's own code (run with PYTHONPATH set to the repository).
"""

import errno
import os
import signal
import sys
import time

import torch

import pace
import settings
import train

where, _, rest = os.environ["FAULT"].partition("@")
rank = int(os.environ.get("RANK", 0))


def at_step(fault_rank, step, action):
    """action(run) before step `step` (1-based) on rank fault_rank."""
    micro_batches = train.micro_batches

    def planted(run):
        if rank == fault_rank and run.step + 1 == step:
            action(run)
        return micro_batches(run)

    train.micro_batches = planted


def fail(*args, **kwargs):
    raise RuntimeError(f"planted on rank {rank}")


def kill_once(run):
    marker = os.path.join(run.cfg.out_dir, f"killed_rank{rank}")
    if not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)


if where == "model" and rank == int(rest):
    settings.GPT.__init__ = fail
elif where == "load" and rank == int(rest):
    pace.PACE.load_state_dict = fail
elif where == "step":
    fault_rank, step = map(int, rest.split(":"))
    at_step(fault_rank, step, fail)
elif where == "kill":
    fault_rank, step = map(int, rest.split(":"))
    at_step(fault_rank, step, kill_once)
elif where == "save":
    torch_save, saves = torch.save, []

    def save_then_fail(obj, f):
        saves.append(1)
        if len(saves) < int(rest):
            return torch_save(obj, f)
        f.write(b"\x00" * 1000)  # half a checkpoint
        raise OSError(errno.ENOSPC, "No space left on device")

    torch.save = save_then_fail
elif where.startswith("slow_save:"):
    torch_save, saves = torch.save, []

    def slow_save(obj, f):
        saves.append(1)
        if len(saves) > 1:
            time.sleep(float(where.split(":")[1]))
        return torch_save(obj, f)

    torch.save = slow_save
elif where.startswith("overflow:"):
    step = int(where.split(":")[1])

    def overflow(run):
        run.raw_model.transformer.wpe.weight.register_hook(lambda g: g * float("inf") if run.step + 1 == step else g)

    at_step(rank, 1, overflow)

train.main(sys.argv[1:])
