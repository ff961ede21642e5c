"""launch.py: the signals schedulers send stop a torchrun job cleanly whichever of its processes gets
them (the agent, or one worker), and the job exits 75; two nodes (two agents, c10d rendezvous on
127.0.0.1) train as one and stop and resume together. The job script that signals the batch shell is
runs/slurm.sbatch, tested on a real Slurm in tests/test_slurm.py. Each run here is 2 gloo processes
started by torchrun's own agent."""

import signal
import socket
import sys
import time

from conftest import (COMMON, SUBPROCESS_ENV, args_for, assert_resumes_exactly, assert_stopped_after_the_same_step, finish,
                      processes_of, signal_after_first_checkpoint, start, torchrun, with_fault)
from processes import EXIT_PREEMPTED

SECONDS = 30  # a signalled run exits within this of the step in flight


def launch(*options):
    return [sys.executable, "launch.py", *options]


def test_signals_to_the_agent_stop_every_worker_after_the_same_step_and_the_job_exits_75(data_dir, tmp_path):
    # SIGUSR1 (which kills torchrun's agent), then SIGTERM while the stopped run writes its checkpoint, as
    # Slurm signals an agent twice (directly and through srun): the agent waits for its workers all the same
    env, out = dict(SUBPROCESS_ENV), tmp_path / "stopped"
    command = with_fault("slow_save:2", env)  # the checkpoint of the stop takes 2 s
    agent = start(tmp_path / "stopped.log", *launch("--standalone", "--nproc_per_node=2"), *command[1:],
                  *args_for(data_dir, out, *COMMON), env=env)
    signal_after_first_checkpoint(agent, out, signal.SIGUSR1)
    time.sleep(1)
    agent.send_signal(signal.SIGTERM)
    agent.wait(SECONDS)
    assert agent.returncode == EXIT_PREEMPTED, open(agent.log).read()[-3000:]
    assert not processes_of(out)  # no worker outlived the agent
    assert_stopped_after_the_same_step(out, agent.log)


def test_a_signal_to_one_worker_stops_every_worker_after_the_same_step_and_the_job_exits_75(data_dir, tmp_path):
    out = tmp_path / "stopped"
    agent = start(tmp_path / "stopped.log", *launch("--standalone", "--nproc_per_node=2"), "train.py",
                  *args_for(data_dir, out, *COMMON))
    deadline = time.time() + SECONDS
    while len(processes_of(out)) < 3:  # the agent and its two workers
        assert agent.poll() is None and time.time() < deadline, open(agent.log).read()[-3000:]
        time.sleep(0.05)
    worker = max(set(processes_of(out)) - {agent.pid})
    signal_after_first_checkpoint(agent, out, signal.SIGUSR1, pid=worker)
    agent.wait(SECONDS)
    assert agent.returncode == EXIT_PREEMPTED, open(agent.log).read()[-3000:]
    assert not processes_of(out)
    assert_stopped_after_the_same_step(out, agent.log)


def two_nodes(data_dir, tmp_path, out, name, *extra):
    """The agents of a job on two nodes of one process each, rendezvous on 127.0.0.1 (node 0 started first)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    options = ["--nnodes=2", "--nproc_per_node=1", "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}",
               f"--rdzv_id={name}"]
    agents = []
    for node in (0, 1):
        agents.append(start(tmp_path / f"{name}_node{node}.log", *launch(*options), "train.py",
                            *args_for(data_dir, out, *COMMON, *extra)))
        time.sleep(0.5)
    return agents


def test_two_nodes_train_as_one_process_group_and_resume_together_after_one_node_is_preempted(data_dir, tmp_path,
                                                                                            uninterrupted):
    # OMP_NUM_THREADS=1 everywhere (SUBPROCESS_ENV), as torchrun sets it for a node of several processes only.
    # The run, stopped and resumed on two nodes, ends as the uninterrupted one on one node of two processes.
    stopped = tmp_path / "stopped"
    node_0, node_1 = two_nodes(data_dir, tmp_path, stopped, "stopped")
    signal_after_first_checkpoint(node_0, stopped, signal.SIGUSR1)  # one node's agent alone
    for agent in (node_0, node_1):
        agent.wait(SECONDS)
        assert agent.returncode == EXIT_PREEMPTED, open(agent.log).read()[-3000:]
    assert not processes_of(stopped)
    assert_stopped_after_the_same_step(stopped, node_0.log)
    for agent in two_nodes(data_dir, tmp_path, stopped, "resumed", "--resume=True"):
        finish(agent)
    assert_resumes_exactly(data_dir, tmp_path, stopped, [*torchrun(), "train.py"], uninterrupted)
