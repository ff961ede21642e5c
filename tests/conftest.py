"""What several test files share: fixtures (pytest finds them here) and helpers (`from conftest import ...`).

- threads and the tokenizer: one_thread, gpt2_encoding, no_matplotlib;
- data: data_dir, a learnable stream of VOCAB tokens in three shards; corpus_texts, write_parquet;
- train.py in this process: TINY settings, args_for, run, read_result, without_timings, error_of;
  finished runs made once per session: tiny_run, tiny_run_with_stats;
- train.py in processes of their own, as users and torchrun start it: start, start_ranks, with_fault,
  all_exit, finish, signal_after_first_checkpoint, torchrun; preemption's runs (COMMON) and
  assert_resumes_exactly against the uninterrupted run;
- study folders as studies/sweep.py and tools/evaluate.py leave them: write_result, scored_run, blends,
  and the tables' row and cell.
"""

import builtins
import glob
import json
import os
import random
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

import train
from data import shard_path, write_shard
from errors import Error

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# -----------------------------------------------------------------------------
# threads, the tokenizer, matplotlib


@contextmanager
def torch_threads(n):
    threads = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def one_thread():
    """The models here are tiny: on shared cores a second thread only adds waiting."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def gpt2_encoding():
    """tiktoken's GPT-2 encoding; offline it needs TIKTOKEN_CACHE_DIR (CI sets it)."""
    import tiktoken
    try:
        return tiktoken.get_encoding("r50k_base")
    except Exception as e:
        pytest.skip(f"the GPT-2 tokenizer cannot be loaded offline (set TIKTOKEN_CACHE_DIR): {type(e).__name__}")


@pytest.fixture
def no_matplotlib(monkeypatch):
    """Imports of matplotlib fail, as on a machine without it."""
    real_import = builtins.__import__

    def import_without_matplotlib(name, *args, **kwargs):
        if name.split(".")[0] == "matplotlib":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", import_without_matplotlib)

# -----------------------------------------------------------------------------
# data

VOCAB = 64


def markov_tokens(n, seed):
    """A learnable stream: mostly the next token is (5 * token + 3) % VOCAB, sometimes a random one."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, VOCAB, n)
    keep = rng.random(n) > 0.1
    tokens = np.empty(n, dtype=np.uint16)
    tokens[0] = noise[0]
    for i in range(1, n):
        tokens[i] = (5 * tokens[i - 1] + 3) % VOCAB if keep[i] else noise[i]
    return tokens


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A validation shard and two training shards of a synthetic token stream."""
    d = tmp_path_factory.mktemp("data")
    for index, (n, seed) in enumerate([(8_000, 0), (30_000, 1), (30_000, 2)]):
        write_shard(shard_path(d, index), markov_tokens(n, seed))
    return d


def write_parquet(path, texts, **columns):
    """A parquet file of FineWeb's text column (and the other columns given)."""
    import pyarrow as pa  # (datasets needs it; the tests tools/torch_versions.py runs do not)
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"text": pa.array(texts, pa.string()), **columns}), path)


def corpus_texts(n):
    """n real documents from $PACE_TEST_CORPUS, or n generated ones."""
    pattern = os.environ.get("PACE_TEST_CORPUS")
    if pattern:
        import pyarrow.parquet as pq
        files = sorted(glob.glob(pattern))
        assert files, f"PACE_TEST_CORPUS={pattern} matches no file"
        return pq.read_table(files[0], columns=["text"]).column("text").to_pylist()[:n]
    rng = random.Random(0)
    words = "the of and a to in is you that it he was for on are as with his they I at be this have from " \
            "tokenizer shard value 1024 3.14 naïve café Übung 東京 🙂 — x=f(y); def\n\n".split(" ")
    return [" ".join(rng.choice(words) for _ in range(rng.randint(1, 400))) for _ in range(n)]

# -----------------------------------------------------------------------------
# train.py in this process

TINY = ["--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=32", f"--vocab_size={VOCAB}", "--batch_size=4",
        "--total_batch_size=256", "--lr=1e-2", "--warmup_steps=3", "--eval_tokens=2048", "--log_interval=4"]


def args_for(data_dir, out_dir, *extra):
    return [f"--data_dir={data_dir}", f"--out_dir={out_dir}", *TINY, *extra]


def run(data_dir, out_dir, *extra):
    """Train in this process and return result.json."""
    train.main(args_for(data_dir, out_dir, *extra))
    return read_result(out_dir)


def read_result(out_dir):
    with open(os.path.join(out_dir, "result.json")) as f:
        return json.load(f)


def without_timings(result):
    """result.json less what differs between two runs of the same training: the timings, the out_dir and
    the provenance of its sessions (a resumed run has two, with their own command lines)."""
    summary = {k: v for k, v in result["summary"].items() if k not in ("wall_time", "eval_time", "tokens_per_s")}
    config = {k: v for k, v in result["config"].items() if k != "out_dir"}
    return {**{k: v for k, v in result.items() if k != "code"}, "summary": summary, "config": config}


def error_of(fn, *args):
    """The one-line message of what fn stops with: a failed check's Error (errors.py), or the SystemExit of
    a script's main, which names the script ("train.py: error: ...") and exits with status 1."""
    with pytest.raises((Error, SystemExit)) as e:
        fn(*args)
    message = str(e.value) if isinstance(e.value, Error) else e.value.code
    assert isinstance(message, str) and "\n" not in message
    return message


def train_tiny(tmp_path_factory, name, *settings):
    """The folder of a finished run of a tiny GPT with GPT-2's padded vocabulary, trained for 6 steps
    on random tokens below 512, with these train.py settings on top."""
    data = tmp_path_factory.mktemp(f"{name}_data")
    rng = np.random.default_rng(0)
    write_shard(shard_path(data, 0), rng.integers(0, 512, 2_000).astype(np.uint16))
    write_shard(shard_path(data, 1), rng.integers(0, 512, 5_000).astype(np.uint16))
    out_dir = tmp_path_factory.mktemp(name) / "run"
    with torch_threads(1):
        train.main([f"--data_dir={data}", f"--out_dir={out_dir}", "--n_layer=2", "--n_head=2", "--n_embd=32",
                    "--block_size=32", "--batch_size=4", "--total_batch_size=128", "--max_steps=6", "--lr=1e-2",
                    "--warmup_steps=2", "--eval_interval=6", "--eval_tokens=1024", "--ckpt_interval=6", *settings])
    return out_dir


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A PACE run with a fixed EMA decay: its EMA (the returned model) and last iterate differ."""
    return train_tiny(tmp_path_factory, "tiny_run", "--optimizer=pace", "--ema_kappa=None", "--beta_ema=0.3")


@pytest.fixture(scope="session")
def tiny_run_with_stats(tmp_path_factory):
    """A PACE run with the decaying EMA schedule whose last step (the 6th) recorded PACE's telemetry
    in step_logs; its vocabulary is the 512 tokens of its data, so that the token embedding, whose rows
    of unseen tokens have no gradient and clamped gains, does not make up most of the parameters."""
    return train_tiny(tmp_path_factory, "tiny_run_with_stats", "--optimizer=pace", "--ema_kappa=0.5",
                      "--stats_interval=3", "--vocab_size=512")

# -----------------------------------------------------------------------------
# train.py in processes of their own

# one thread, like this process (torchrun sets the same for its workers)
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def start(log, *command, env=SUBPROCESS_ENV):
    """command run in the repository, its output (stdout and stderr) going to the file log."""
    with open(log, "w") as f:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
    proc.log = log
    return proc


def torchrun(*options):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *options]


def start_ranks(tmp_path, *ranks, fault=None):
    """Processes of train.py as torchrun starts them, but each with its own (arguments, environment),
    as processes on different nodes may differ; with a fault planted (tests/train_with_fault.py)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank, (args, env) in enumerate(ranks):
        env = {**SUBPROCESS_ENV, **env, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(len(ranks)),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        procs.append(start(tmp_path / f"rank{rank}.log", *with_fault(fault, env), *args, env=env))
    return procs


def with_fault(fault, env):
    """The command that runs train.py, with the fault planted when there is one (env gains what it needs)."""
    if fault is None:
        return sys.executable, "train.py"
    env.update(FAULT=fault, PYTHONPATH=REPO)
    return sys.executable, os.path.join("tests", "train_with_fault.py")


def all_exit(procs, returncode, timeout=240):
    """The outputs of processes that must all exit with returncode; one left waiting fails the test."""
    deadline = time.time() + timeout
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
                p.wait()
            pytest.fail(f"{proc.args} still running after {timeout} s:\n{open(proc.log).read()[-3000:]}")
    outputs = [open(p.log).read() for p in procs]
    assert [p.returncode for p in procs] == [returncode] * len(procs), "\n---\n".join(o[-3000:] for o in outputs)
    return outputs


def finish(proc, timeout=240):
    """proc's output once it has succeeded, or a failure that shows it."""
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()  # torchrun passes it on to its workers
        proc.wait()
        pytest.fail(f"{proc.args} still running after {timeout} s:\n{open(proc.log).read()[-3000:]}")
    output = open(proc.log).read()
    assert proc.returncode == 0, output[-3000:]
    return output


def signal_after_first_checkpoint(proc, out_dir, signum, pid=None):
    """signum to proc (or to the process pid, one of proc's) right after the run in out_dir has written its
    first checkpoint; the time sent."""
    deadline = time.time() + 240
    while not (out_dir / "ckpt.pt").exists():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"no checkpoint before the run ended or timed out:\n{open(proc.log).read()[-3000:]}")
        time.sleep(0.002)
    os.kill(pid or proc.pid, signum)
    return time.time()


STEPS = 48  # of ~25 ms each: a signal sent at the first checkpoint (step 8) has ~1 s to arrive before the end
COMMON = ["--optimizer=pace", f"--max_steps={STEPS}", "--eval_interval=8", "--ckpt_interval=8", "--log_interval=1"]


@pytest.fixture(scope="module")
def uninterrupted(data_dir, tmp_path_factory):
    """launcher -> (result.json, ckpt.pt) of the run of COMMON never stopped, made once per launcher and module."""
    made = {}

    def of(launcher):
        key = " ".join(launcher)
        if key not in made:
            out = tmp_path_factory.mktemp("uninterrupted")
            finish(start(out / "log", *launcher, *args_for(data_dir, out / "run", *COMMON)))
            made[key] = read_result(out / "run"), torch.load(out / "run" / "ckpt.pt")
        return made[key]

    return of


def assert_resumes_exactly(data_dir, tmp_path, stopped, launcher, uninterrupted):
    """Resume the stopped run (unless it completed) and compare it with the run never stopped:
    losses, weights, optimizer state."""
    if read_result(stopped)["summary"]["status"] != "completed":
        finish(start(tmp_path / "resume.log", *launcher, *args_for(data_dir, stopped, *COMMON, "--resume=True")))
    (whole, whole_ckpt), resumed = uninterrupted(launcher), read_result(stopped)
    assert without_timings(resumed) == without_timings(whole) and resumed["summary"]["status"] == "completed"
    assert_same_state(torch.load(stopped / "ckpt.pt"), whole_ckpt)


def assert_same_state(a, b):
    """Two checkpoints hold the same weights and optimizer state, bit for bit."""
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for i, state in a["optimizer"]["state"].items():
        for k, v in state.items():
            assert torch.equal(v, b["optimizer"]["state"][i][k]) if torch.is_tensor(v) else v == b["optimizer"]["state"][i][k]


def assert_stopped_after_the_same_step(out_dir, log):
    """A run of COMMON preempted after a step past its first checkpoint, whose checkpoint and logs end there."""
    result = read_result(out_dir)
    assert result["summary"]["status"] == "preempted" and 8 <= result["summary"]["steps"] < STEPS, open(log).read()[-3000:]
    assert torch.load(out_dir / "ckpt.pt")["step"] == result["summary"]["steps"] == result["step_logs"][-1]["step"]


def processes_of(out_dir):
    """The processes whose command line names out_dir (from /proc: Linux, as Slurm)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f"--out_dir={out_dir}".encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass  # ended meanwhile
    return found

# -----------------------------------------------------------------------------
# study folders, as studies/sweep.py leaves them, and the tables of studies/analysis.py

BASE = {"lr": 0.001, "schedule": "cos", "max_steps": 100, "lambda_pullback": 0.15, "ema_kappa": 0.2, "seed": 0}


def write_result(path, optimizer, status="completed", loss=3.0, error=None, evals=(), code=None, **config):
    """A result.json as train.py writes it (only the fields the studies read matter); code: the commit that made it."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    summary = {"status": status, "final_val_loss": loss if status == "completed" else None}
    if error is not None:
        summary["error"] = error
    result = {"config": {**BASE, "optimizer": optimizer, "out_dir": str(path), **config}, "summary": summary,
              "eval_logs": [{"step": s, "val_loss": v, "ema_val_loss": v, "vanilla_val_loss": v} for s, v in evals],
              "step_logs": []}
    if code is not None:
        result["code"] = [{"from_step": 0, "commit": code, "dirty": False, "diff_sha256": None}]
    (path / "result.json").write_text(json.dumps(result))


def row(text, first_cell):
    """The markdown table row whose first cell is first_cell, as a list of cells."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in\n{text}")


def cell(mean, std, n):
    return f"{mean:.4f} ± {std:.4f} (n={n})"


def scored_run(folder, method, lr, seed, part, returned, last=None, scores=(), code=None, **config):
    """A completed run with its eval_PART.json (scores: more of its keys); its final_val_loss (1.0) is
    lower than any score, so a choice made from result.json instead of the half's score shows."""
    path = folder / f"{method}_lr{lr}_{'_'.join(f'{k}{v}' for k, v in config.items())}_seed{seed}"
    write_result(path, method, loss=1.0, lr=lr, seed=seed, code=code, **config)
    (path / f"eval_{part}.json").write_text(json.dumps({"returned": returned, "last": returned if last is None else last,
                                                        **dict(scores)}))
    return path


def blends(*losses):
    """An eval file's losses of the blends alpha * EMA + (1 - alpha) * last iterate, alpha 0 to 1."""
    return {"blends": dict(zip(["0", "0.25", "0.5", "0.75", "1"], losses))}
