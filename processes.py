"""
The processes of a run under torchrun: they start together, agree on what they train, and
stop together, whatever stops one of them.

- start_processes: this process's rank, and the process group (NCCL when the run is on
  GPUs, gloo on CPUs: the agreement goes over the same backend as the training).
- agree: every process opens the run and checks everything that can differ between
  processes or nodes (settings, data, checkpoint, device, model) before the first
  collective; then all go on with the same run, or all stop with the message of the
  process that failed, or with what they disagree on.
- ending: an error on any process after that (a failed check, an exception, a peer that
  died) makes every process exit non-zero, after the master has recorded the error.
"""

import os
import signal
import sys
import traceback
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace

import torch
import torch.distributed as dist

from errors import Error, error_line, first_line


@dataclass
class Processes:
    """This process among those torchrun started; without torchrun, rank 0 of 1."""
    ddp: bool = False
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def master(self):
        return self.rank == 0  # the process that writes files and shows progress


def start_processes(device):
    """This process's place, from torchrun's RANK, LOCAL_RANK and WORLD_SIZE, and the process group (device:
    the device setting), joined before the settings are checked, so that a process whose checks fail still
    takes part in the agreement."""
    if "RANK" not in os.environ:
        return Processes()
    procs = Processes(True, *(int(os.environ[k]) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE")))
    on_gpus = torch.cuda.is_available() and device != "cpu"
    if on_gpus:
        torch.cuda.set_device(procs.local_rank)  # NCCL's object collectives go through the current device
    # torchrun --max_restarts starts the group again in the store of the first attempt: each attempt's keys
    # under a prefix of its own, or a restarted process would dial a peer that is gone (gloo's "connectFullMesh
    # failed ... Connection refused")
    store, _, _ = next(dist.rendezvous("env://"))
    store = dist.PrefixStore(f"attempt{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)
    # device_id: NCCL connects the processes now, on this GPU, rather than at the first collective
    dist.init_process_group(backend="nccl" if on_gpus else "gloo", store=store, rank=procs.rank,
                            world_size=procs.world_size, device_id=torch.device("cuda", procs.local_rank) if on_gpus else None)
    return procs


def gather(procs, value):
    """value (any picklable object) of every process, in rank order."""
    if not procs.ddp:
        return [value]
    values = [None] * procs.world_size
    dist.all_gather_object(values, value)
    return values


def by_rank(values):
    """'rank 1: x; ranks 0, 2: y': the processes' values (in rank order), grouped; None left out."""
    ranks = {}
    for rank, value in enumerate(values):
        if value is not None:
            ranks.setdefault(value, []).append(rank)
    return "; ".join(f"rank{'s' if len(r) > 1 else ''} {', '.join(map(str, r))}: {value}" for value, r in ranks.items())


def error_message(error):
    """The one line that says what stopped a process: a failed check's message, or the exception."""
    if isinstance(error, (Error, SystemExit)):
        return str(error)
    return f"{type(error).__name__}: {first_line(error)[:300]}"


def agree(procs, open_run, failed=None):
    """open_run() on every process (but one that has failed already: failed, the Error of its settings),
    then the same run everywhere or a stop everywhere. The run's state() is what every process must hold alike."""
    try:
        if failed is not None:
            raise failed
        run, error = open_run(), None
    except Exception as e:  # a failed check, or anything else, on this process only
        if procs.ddp and not isinstance(e, Error):
            traceback.print_exc()
        run, error = None, e
    if not procs.ddp:
        if error is not None:
            raise error
        return run
    reports = gather(procs, (error and error_message(error), run and run.state()))
    errors = [e for e, _ in reports]
    if any(errors):
        leave(procs)
        raise Error(by_rank(errors))
    states = [state for _, state in reports]
    differences = [f"{key}: {by_rank([repr(s[key]) for s in states])}" for key in states[0]
                   if any(s[key] != states[0][key] for s in states)]
    if differences:
        leave(procs)
        raise Error(f"the processes do not hold the same run ({'; '.join(differences)}): out_dir must be on a file system "
                    f"they all share, and their settings and data the same")
    return run


def agree_on_fused(procs, fused_error):
    """One implementation of the optimizer step for every process (rounding differs between them):
    the compiled one where it runs on every process. fused_error: None where it runs here, else why not."""
    errors = gather(procs, fused_error)
    failed = [rank for rank, e in enumerate(errors) if e is not None]
    if failed and procs.master:
        where = "here" if procs.world_size == 1 else f"on rank{'s' if len(failed) > 1 else ''} {', '.join(map(str, failed))}"
        reason = errors[failed[0]].splitlines()[0][:200]
        print(f"the optimizer's fused step does not compile {where} ({reason}); every process uses foreach")
    return not failed


@contextmanager
def ending(procs, script, record_failure):
    """How the processes of the script end. Completed: each leaves with the status the block sets
    (end.status: 0, or EXIT_PREEMPTED). Stopped by an error on any process (a peer's failure reaches the
    others as an error of their next collective): record_failure(message) (result.json: failed), then
    exit status 1, with "script: error: message" for an Error (errors.py), else the exception: in one
    process through SystemExit or the exception itself, under torchrun at once, without waiting for
    peers that may be gone."""
    end = SimpleNamespace(status=0)
    try:
        yield end
    except BaseException as error:
        try:
            record_failure(error_message(error))
        except Exception:
            traceback.print_exc()  # the original error matters more; it follows
        if not procs.ddp:
            if isinstance(error, Error):
                sys.exit(error_line(script, error))
            raise
        if isinstance(error, Error):
            print(error_line(script, error), file=sys.stderr)
        elif isinstance(error, SystemExit):
            print(error.code, file=sys.stderr)
        else:
            traceback.print_exc()
        exit_now(1)
    if procs.ddp:
        leave(procs)
        exit_now(end.status)
    if end.status:
        sys.exit(end.status)


EXIT_PREEMPTED = 75  # sysexits' EX_TEMPFAIL: stopped by a signal after a checkpoint; resume it with --resume=True


class Preemption:
    """SIGTERM or SIGUSR1, which SLURM, Kubernetes, spot instances and torchrun send before they stop a
    job, ask the run to stop: it finishes the step in flight, writes its checkpoint and result.json
    ("preempted") and exits with EXIT_PREEMPTED. A second signal changes nothing. Under torchrun one
    process's signal stops every process after the same step: each step all-reduces the flag, one
    number, and reads the previous step's, which is complete by then (on a GPU nothing waits for it)."""

    def __init__(self, procs, device):
        self.procs, self.device, self.received, self.pending = procs, device, None, None
        self.previous = {signum: signal.signal(signum, self.receive) for signum in (signal.SIGTERM, signal.SIGUSR1)}

    def close(self):
        """The handlers from before, once the run has ended."""
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def receive(self, signum, frame):
        if self.received is None:
            self.received = signal.Signals(signum).name
            print(f"{self.received}: stopping after the step in flight, with a checkpoint", file=sys.stderr, flush=True)

    def requested(self):
        """Whether this process stops after the step just taken (every process answers alike)."""
        if not self.procs.ddp:
            return self.received is not None
        if self.pending is None:  # the first step: the flag on the device and its copy on the host (0: go on), kept
            flag = torch.zeros(1, device=self.device)  # (a new tensor from the host each step would wait for the GPU)
            self.pending = flag, torch.zeros(1, pin_memory=flag.is_cuda), torch.cuda.Event() if flag.is_cuda else None
        flag, host, copied = self.pending
        if copied is not None:  # the previous step's flag: its all-reduce is done by now (not yet recorded: no wait)
            copied.synchronize()
        agreed = host.item() > 0
        flag.fill_(float(self.received is not None))  # on a GPU a kernel with the number as its argument: no copy
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)  # on a GPU queued on the stream: this process does not wait
        host.copy_(flag, non_blocking=True)  # on a GPU behind this step's work, read at the next step
        if copied is not None:
            copied.record()
        return agreed


def leave(procs):
    """Leave the process group: a process that exits with gloo's threads still running may abort."""
    if procs.ddp:
        dist.destroy_process_group()


def exit_now(code):
    """Exit without running C++ destructors. After a multi-process run, gloo's threads can make a
    normal exit abort in them (SIGABRT, "terminate called without an active exception"), so that
    torchrun reports a failure for a run that completed, or a signal for one that stopped with a message."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def weights_checksum(state_dict):
    """A CRC-32 of the tensors' bytes, in order: equal weights give equal checksums on every machine."""
    crc = 0
    for tensor in state_dict.values():
        crc = zlib.crc32(tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy(), crc)
    return f"{crc:08x}"
