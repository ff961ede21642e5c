"""runs/slurm.sbatch on a real Slurm: a cluster (munged, slurmctld, and two slurmd as two nodes of this
machine) started in a temporary folder, a job of 2 gloo processes on 1 node or 2 stopped the ways Slurm
stops a job, requeued, resumed, and ending with the losses and weights of a run never stopped. Needs Debian's slurm-wlm and munge (.ci/run
installs them) and root (the daemons run as root)."""

import os
import re
import shutil
import socket
import subprocess
import sys
import time

import pytest

from conftest import (COMMON, REPO, SUBPROCESS_ENV, TINY, assert_resumes_exactly, assert_stopped_after_the_same_step,
                      processes_of, torchrun)

SECONDS = 300  # for any one thing a job does here, on 2 busy cores


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A Slurm cluster whose files are all in `folder`, of two nodes on this machine (two slurmd, node1 and
    node2, at 127.0.0.1), each with every core."""

    def __init__(self, folder):
        self.folder, self.daemons = folder, []
        (folder / "state").mkdir()
        (folder / "munge.key").write_bytes(os.urandom(1024))
        os.chmod(folder / "munge.key", 0o600)
        subprocess.run(["munged", "--force", f"--key-file={folder}/munge.key", f"--socket={folder}/munge.sock",
                        f"--pid-file={folder}/munged.pid", f"--seed-file={folder}/munge.seed",
                        f"--log-file={folder}/munged.log"], check=True)
        hostname = socket.gethostname().split(".")[0]
        (folder / "slurm.conf").write_text(f"""
ClusterName=test
SlurmctldHost={hostname}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={folder}/munge.sock
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool-%n
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd-%n.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
MpiDefault=none
ReturnToService=2
NodeName=node1 NodeHostname={hostname} NodeAddr=127.0.0.1 Port={free_port()} CPUs={os.cpu_count()} State=UNKNOWN
NodeName=node2 NodeHostname={hostname} NodeAddr=127.0.0.1 Port={free_port()} CPUs={os.cpu_count()} State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
        self.env = {**SUBPROCESS_ENV, "SLURM_CONF": str(folder / "slurm.conf"),
                    "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}  # the job's python is this one
        for daemon in (["slurmctld", "-D", "-i"], ["slurmd", "-D", "-N", "node1"], ["slurmd", "-D", "-N", "node2"]):
            with open(folder / f"{daemon[0]}-{daemon[-1]}.out", "w") as log:
                self.daemons.append(subprocess.Popen(daemon, env=self.env, stdout=log, stderr=subprocess.STDOUT))
            self.daemons[-1].log = log.name
        try:
            self.wait_for(self.idle, "idle nodes")
        except BaseException:
            self.stop()
            raise

    def idle(self):
        for daemon in self.daemons:
            if daemon.poll() is not None:
                pytest.fail(f"{' '.join(daemon.args)} ended:\n{(self.folder / daemon.log).read_text()[-2000:]}")
        return self.run("sinfo", "-h", "-o", "%D %T", check=False).strip() == "2 idle"

    def run(self, *command, check=True):
        return subprocess.run(command, env=self.env, capture_output=True, text=True, check=check).stdout

    def wait_for(self, condition, what, log=None):
        deadline = time.time() + SECONDS
        while not condition():
            if time.time() > deadline:
                shown = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
                pytest.fail(f"no {what} after {SECONDS} s\n{shown}")
            time.sleep(0.2)

    def job(self, job_id):
        """The job's fields (JobState, Restarts, ...) as scontrol shows them."""
        return dict(re.findall(r"(\w+)=(\S*)", self.run("scontrol", "show", "job", job_id)))

    def stop(self):
        """Cancel what still runs (a failed test's job), let Slurm end it, then stop the daemons."""
        for job in self.run("squeue", "-h", "-o", "%i", check=False).split():
            self.run("scancel", job, check=False)
        deadline = time.time() + 60
        while self.run("squeue", "-h", check=False).strip() and time.time() < deadline:
            time.sleep(0.5)
        for daemon in self.daemons:
            daemon.terminate()
            daemon.wait(60)
        with open(self.folder / "munged.pid") as f:
            os.kill(int(f.read()), 15)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    missing = [p for p in ("munged", "slurmctld", "slurmd", "sbatch") if shutil.which(p) is None]
    if missing:
        pytest.skip(f"Slurm is not installed (no {', '.join(missing)}): apt-get install slurm-wlm munge, as .ci/run does")
    if os.geteuid() != 0:
        pytest.skip("Slurm's daemons need root here")
    cluster = Cluster(tmp_path_factory.mktemp("slurm"))
    yield cluster
    cluster.stop()


def submit(slurm, data_dir, out, log, nodes):
    """runs/slurm.sbatch as a user submits it, with the tiny CPU run of 2 processes (on 1 node or 2) instead of
    the GPU one; the job's id, once the run has written its first checkpoint."""
    env = {**slurm.env, "NPROC_PER_NODE": str(2 // nodes), "CONFIGS": "", "OUT_DIR": str(out),
           "RDZV_PORT": str(free_port()), "ARGS": " ".join([f"--data_dir={data_dir}", *TINY, *COMMON])}
    job = subprocess.run(["sbatch", "--parsable", f"--nodes={nodes}", "--gpus-per-node=0",
                          f"--chdir={REPO}", f"--output={log}", "runs/slurm.sbatch"], env=env, capture_output=True,
                         text=True, check=True).stdout.strip()
    slurm.wait_for(lambda: (out / "ckpt.pt").exists(), "first checkpoint", log)
    return job


def assert_stopped_cleanly(slurm, out, log):
    """Every process stopped after the same step with a checkpoint, and the job's srun exited 75."""
    slurm.wait_for(lambda: "srun exited" in log.read_text(errors="replace") and not processes_of(out), "stop", log)
    output = log.read_text(errors="replace")
    assert "srun exited with status 75" in output, output[-3000:]
    assert_stopped_after_the_same_step(out, log)


@pytest.mark.parametrize("stop, nodes", [("time limit's warning", 1), ("scontrol requeue", 2)])
def test_a_job_stopped_by_slurm_is_requeued_and_ends_as_if_never_stopped(slurm, data_dir, tmp_path, stop, nodes,
                                                                          uninterrupted):
    out, log = tmp_path / "run", tmp_path / "slurm.out"
    job = submit(slurm, data_dir, out, log, nodes)
    if stop == "time limit's warning":  # what --signal=B:USR1@120 sends at 120 s before the time limit: to the script
        for _ in range(2):  # twice: the script waits for the job's processes through any number of signals
            slurm.run("scancel", "--batch", "--signal=USR1", job)
    else:  # Slurm's own requeue: SIGTERM to every process, then SIGKILL after KillWait
        slurm.run("scontrol", "requeue", job)
    assert_stopped_cleanly(slurm, out, log)
    slurm.wait_for(lambda: slurm.job(job)["JobState"] not in ("RUNNING", "COMPLETING"), "end of the first attempt", log)
    assert slurm.job(job)["JobState"] == "PENDING", log.read_text(errors="replace")[-3000:]  # requeued
    # Slurm holds a requeued job for 2 minutes; in the second it ended, a node refuses it ("credential revoked")
    slurm.run("scontrol", "update", f"jobid={job}", "StartTime=now+3")
    slurm.wait_for(lambda: slurm.job(job)["JobState"] not in ("PENDING", "RUNNING", "COMPLETING"), "end of the job", log)
    output = log.read_text(errors="replace")
    assert slurm.job(job)["JobState"] == "COMPLETED" and slurm.job(job)["Restarts"] == "1", output[-3000:]
    assert re.findall(r"srun exited with status (\d+)", output) == ["75", "0"], output[-3000:]
    assert ("on node[1-2]" in output) == (nodes == 2)
    assert not processes_of(out)
    assert_resumes_exactly(data_dir, tmp_path, out, [*torchrun(), "train.py"], uninterrupted)


def test_a_cancelled_job_stops_cleanly_and_is_not_requeued(slurm, data_dir, tmp_path):
    out, log = tmp_path / "run", tmp_path / "slurm.out"
    job = submit(slurm, data_dir, out, log, nodes=1)
    slurm.run("scancel", job)  # SIGTERM to every process, as for a preemption, but the job is over
    assert_stopped_cleanly(slurm, out, log)
    slurm.wait_for(lambda: slurm.job(job)["JobState"] not in ("RUNNING", "COMPLETING"), "end of the job", log)
    time.sleep(2)  # a requeue would show by now
    assert slurm.job(job)["JobState"] == "CANCELLED" and slurm.job(job)["Restarts"] == "0"
