"""provenance.py: every run and every score records the code that made it (the commit, whether tracked
files differed from it and how, torch, the devices, the command line), and a resume by other code says so."""

import json
import shlex
import subprocess
import sys

import pytest
import torch

import provenance
from conftest import run, torch_threads
from tools import evaluate

pytestmark = pytest.mark.usefixtures("one_thread")

COMMON = ["--max_steps=4", "--eval_interval=4", "--ckpt_interval=2"]


def git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=True, text=True).stdout.strip()


@pytest.fixture
def repository(tmp_path, monkeypatch):
    """A git repository of one committed file, standing in for the checkout provenance.py reads."""
    git(tmp_path, "init", "-q")
    (tmp_path / "train.py").write_text("print('step')\n")
    git(tmp_path, "add", "train.py")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first")
    monkeypatch.setattr(provenance, "REPOSITORY", str(tmp_path))
    return tmp_path


def test_a_run_records_the_code_that_made_it(data_dir, tmp_path):
    result = run(data_dir, tmp_path / "out", *COMMON)
    [session] = result["code"]
    repo = provenance.REPOSITORY
    assert session["commit"] == git(repo, "rev-parse", "HEAD")
    assert session["dirty"] == bool(git(repo, "status", "--porcelain", "--untracked-files=no"))
    assert session == {"from_step": 0, "commit": session["commit"], "dirty": session["dirty"],
                       "diff_sha256": session["diff_sha256"], "torch": torch.__version__, "world_size": 1,
                       "devices": ["cpu, 1 thread"], "command": shlex.join(sys.orig_argv)}
    assert torch.load(tmp_path / "out" / "ckpt.pt", weights_only=True)["code"] == result["code"]


def test_the_dirty_flag_and_the_hash_of_the_diff(repository):
    commit = git(repository, "rev-parse", "HEAD")
    assert provenance.git_state() == (commit, False, None)
    (repository / "train.py").write_text("print('another step')\n")
    _, dirty, first = provenance.git_state()
    assert dirty and len(first) == 64
    (repository / "train.py").write_text("print('a third step')\n")
    assert provenance.git_state() == (commit, True, provenance.git_state()[2]) and provenance.git_state()[2] != first
    (repository / "notes.txt").write_text("untracked files are not the code\n")
    (repository / "train.py").write_text("print('step')\n")
    assert provenance.git_state() == (commit, False, None)
    record = provenance.provenance(["cpu, 1 thread"])
    assert provenance.code_name(record) == commit[:10]
    assert provenance.code_name({**record, "dirty": True, "diff_sha256": "ab" * 32}) == commit[:10] + "+dirty:" + "ab" * 5


def test_without_git_the_code_is_unknown_not_a_crash(tmp_path, monkeypatch, repository):
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    assert provenance.git_state() == ("unknown",) * 3


def test_outside_a_repository_the_code_is_unknown_not_a_crash(tmp_path_factory, monkeypatch):
    monkeypatch.setattr(provenance, "REPOSITORY", str(tmp_path_factory.mktemp("installed_copy")))
    record = provenance.provenance(["cpu, 2 threads"])
    assert (record["commit"], record["dirty"], record["diff_sha256"]) == ("unknown",) * 3
    assert provenance.code_name(record) == provenance.code_name(None) == "unknown"


def test_a_resume_by_other_code_warns_in_one_line_naming_both(data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    run(data_dir, out, *COMMON)  # resuming a completed run takes no step, but starts a session
    capsys.readouterr()
    run(data_dir, out, *COMMON, "--resume=True")  # by the code that made it: no warning
    assert "resuming a run made by code" not in capsys.readouterr().out
    ckpt = torch.load(out / "ckpt.pt", weights_only=True)
    ours = provenance.code_name(ckpt["code"][0])
    ckpt["code"][0]["commit"], ckpt["code"][0]["dirty"] = "0123456789abcdef", False  # made by other code
    torch.save(ckpt, out / "ckpt.pt")
    result = run(data_dir, out, *COMMON, "--resume=True")
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("resuming")]
    assert lines == [f"resuming a run made by code 0123456789 with code {ours}"]
    assert [s["from_step"] for s in result["code"]] == [0, 4] and result["code"][0]["commit"] == "0123456789abcdef"


def test_a_checkpoint_without_a_record_resumes_with_an_unknown_code(data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    run(data_dir, out, *COMMON)
    ckpt = torch.load(out / "ckpt.pt", weights_only=True)
    del ckpt["code"]  # as train.py wrote them before it recorded the code
    torch.save(ckpt, out / "ckpt.pt")
    capsys.readouterr()
    result = run(data_dir, out, *COMMON, "--resume=True")
    assert "resuming a run made by code unknown with code" in capsys.readouterr().out
    assert [s["from_step"] for s in result["code"]] == [4]


def test_a_score_records_the_code_that_scored_it(tiny_run, gpt2_encoding):
    record = evaluate.score(tiny_run, "tuning", "cpu")
    assert record["code"]["commit"] == git(provenance.REPOSITORY, "rev-parse", "HEAD")
    assert record["code"]["devices"] == ["cpu, 1 thread"]  # the one_thread fixture's
    assert json.loads(json.dumps(record)) == record


def test_a_cpu_is_described_with_its_thread_count():
    with torch_threads(2):
        assert provenance.device_description("cpu") == "cpu, 2 threads"
    with torch_threads(1):
        assert provenance.device_description("cpu") == "cpu, 1 thread"
