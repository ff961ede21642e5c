"""
torchrun for a job that a scheduler may stop (Slurm, Kubernetes, spot instances): torchrun's own agent
and options, but a preemption stops the job cleanly whichever of its processes the scheduler signals.

    python launch.py --standalone --nproc_per_node=8 train.py configs/gpu80gb.py configs/pace.py
    python launch.py --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 train.py ...

What differs from torchrun:
- SIGUSR1 to the agent reaches its workers, as SIGTERM does; torchrun dies of it, leaving its workers
  running (and under Slurm a step whose agent has exited is killed, checkpoint written or not). On
  either signal the agent sends it to every worker, waits for them (torchrun's --shutdown_timeout,
  30 s) and exits, restarting none.
- A job stopped so exits 75 (EXIT_PREEMPTED), as each of its processes does; torchrun exits 1, as for
  a crash. So a job script can tell "continue me" (--resume=True) from a failure: runs/slurm.sbatch.
"""

import signal
import sys

from torch.distributed.elastic.multiprocessing import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import main as torchrun

from processes import EXIT_PREEMPTED

PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


def stop_workers(signum, frame):
    """What torchrun's agent does on SIGTERM: this exception stops it, and it stops its workers."""
    raise SignalException(f"launch.py got {signal.Signals(signum).name}", sigval=signal.Signals(signum))


def main():
    signal.signal(signal.SIGUSR1, stop_workers)  # torchrun installs its own handler of SIGTERM
    try:
        torchrun()
    except SignalException as e:  # the agent got the signal and has stopped its workers
        if e.sigval not in PREEMPTION_SIGNALS:
            raise
    except ChildFailedError as e:  # the workers stopped by themselves: the signal reached them, not this agent
        if any(failure.exitcode != EXIT_PREEMPTED for failure in e.failures.values()):
            raise
    else:
        return 0
    print(f"launch.py: preempted (exit status {EXIT_PREEMPTED}): the same command with --resume=True continues the run",
          file=sys.stderr, flush=True)
    return EXIT_PREEMPTED


if __name__ == "__main__":
    sys.exit(main())
