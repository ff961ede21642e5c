"""
What made a result: the code, torch, the devices and the command line, recorded beside every
run (result.json and ckpt.pt: "code", a record per session of the run) and every score
(tools/evaluate.py's eval files), so that a number can be traced to what computed it.
Reading the records needs no torch: the studies' tables (studies/) check them without it.
"""

import hashlib
import os
import shlex
import subprocess
import sys

REPOSITORY = os.path.dirname(os.path.abspath(__file__))
UNKNOWN = "unknown"  # a commit or a command that cannot be read here (no git, no /proc)


def git_state():
    """(commit, dirty, diff_sha256) of the checkout that holds this file: dirty when tracked files
    differ from the commit, the diff's hash telling one such state from another; UNKNOWN for all
    three where there is no git or no repository (an installed copy, a tarball)."""
    def git(*args):
        return subprocess.run(["git", "-C", REPOSITORY, *args], capture_output=True, timeout=30, check=True).stdout

    try:
        commit = git("rev-parse", "HEAD").decode().strip()
        diff = git("diff", "HEAD", "--binary", "--no-ext-diff")
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN, UNKNOWN, UNKNOWN
    return commit, bool(diff), hashlib.sha256(diff).hexdigest() if diff else None


def launch_command():
    """The command line that started this process; for torchrun's workers, torchrun's (what a user typed)."""
    if "TORCHELASTIC_RUN_ID" in os.environ:
        try:
            with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
                return shlex.join(arg.decode(errors="replace") for arg in f.read().split(b"\0")[:-1])
        except OSError:
            return UNKNOWN
    return shlex.join(sys.orig_argv)


def provenance(devices):
    """The record of what makes a result now. devices: device_description() of each process, in rank order."""
    import torch  # its callers have it loaded; the tables that read records do not need it

    commit, dirty, diff_sha256 = git_state()
    return {"commit": commit, "dirty": dirty, "diff_sha256": diff_sha256, "torch": str(torch.__version__),  # a str: TorchVersion would not load with weights_only
            "world_size": len(devices), "devices": devices, "command": launch_command()}


def device_description(device):
    """A process's device: the GPU's name, or the CPU with its thread count, which changes the order of
    floating-point sums and so the last bits of a CPU run."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return f"{device}: {torch.cuda.get_device_name(device)}"
    threads = torch.get_num_threads()
    return f"cpu, {threads} thread{'s' if threads > 1 else ''}"


def code_name(record):
    """A record's code in one word: the commit's first 10 digits, with +dirty: and the diff's hash when
    tracked files differed from it; UNKNOWN for a record without a commit (or no record: None)."""
    if not record or record.get("commit", UNKNOWN) == UNKNOWN:
        return UNKNOWN
    return record["commit"][:10] + (f"+dirty:{record['diff_sha256'][:10]}" if record.get("dirty") else "")
