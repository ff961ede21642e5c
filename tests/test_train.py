"""train.py run as users run it, in this process or as a command: the settings that need a run, the
data's errors, each method training, one process against two, a killed run resumed exactly, the
protected out_dir, a non-finite loss, the optimizer's compiled graph, unreadable checkpoints, data
passes, the evaluations and their cost, and the peak FLOP/s of the GPUs the MFU knows."""

import math
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

import checkpoint
import pace
import train
from conftest import (REPO, VOCAB, args_for, assert_same_state, error_of, finish, markov_tokens, read_result, run,
                      signal_after_first_checkpoint, start, without_timings)
from data import shard_path, write_shard
from model import GPT, GPTConfig, mean_loss
from settings import Settings

pytestmark = pytest.mark.usefixtures("one_thread")


# settings that need a run


def test_total_batch_size_must_divide(data_dir, tmp_path):
    message = error_of(train.main, args_for(data_dir, tmp_path / "out", "--total_batch_size=200"))
    assert "total_batch_size (200) must be a multiple of batch_size * block_size * processes = 4 * 32 * 1 = 128" in message
    assert not (tmp_path / "out").exists()


def test_bad_optimizer_argument_is_named(data_dir, tmp_path):
    assert "ema_gamma" in error_of(train.main, args_for(data_dir, tmp_path / "out", "--ema_gamma=-1", "--max_steps=1"))


def test_help_lists_the_settings(capsys):
    train.main(["--help"])
    out = capsys.readouterr().out
    assert "python train.py configs/pace.py" in out and "total_batch_size: int = 524288" in out


def test_command_line_error_exits_nonzero():
    p = subprocess.run([sys.executable, "train.py", "--nope=1"], cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 1 and p.stderr.startswith("train.py: error: unknown setting 'nope'")
    assert p.stderr.count("\n") == 1


# data

def test_missing_or_corrupt_shards_are_named(data_dir, tmp_path):
    broken = tmp_path / "data"
    shutil.copytree(data_dir, broken)
    train_shard = shard_path(broken, 2)
    with open(train_shard, "r+b") as f:
        f.write(np.array([12345], dtype="<i4").tobytes())  # a wrong magic number
    message = error_of(train.main, args_for(broken, tmp_path / "a", "--max_steps=1"))
    assert train_shard in message and "magic" in message
    os.remove(train_shard)
    val_shard = shard_path(broken, 0)
    os.truncate(val_shard, 3000)
    message = error_of(train.main, args_for(broken, tmp_path / "b", "--max_steps=1"))
    assert val_shard in message
    os.remove(val_shard)
    assert val_shard in error_of(train.main, args_for(broken, tmp_path / "c", "--max_steps=1"))
    message = error_of(train.main, args_for(tmp_path / "empty", tmp_path / "d", "--max_steps=1"))
    assert "no training shards" in message and "empty" in message


def test_too_few_validation_tokens(data_dir, tmp_path):
    message = error_of(train.main, args_for(data_dir, tmp_path / "out", "--eval_tokens=8192", "--max_steps=1"))
    assert f"{shard_path(data_dir, 0)} holds 8000 tokens, fewer than eval_tokens + 1 = 8193" in message


# training

def test_each_method_trains(data_dir, tmp_path):
    results = {m: run(data_dir, tmp_path / m, f"--optimizer={m}", "--max_steps=24", "--eval_interval=12", "--ckpt_interval=12")
               for m in ("adamw", "ema", "pace")}
    for method, r in results.items():
        s = r["summary"]
        assert s["status"] == "completed" and s["steps"] == 24 and s["tokens_seen"] == 24 * 256
        losses = [log["loss"] for log in r["step_logs"]]
        assert [log["step"] for log in r["step_logs"]] == list(range(1, 25))
        assert losses[0] == pytest.approx(math.log(VOCAB), abs=0.1) and s["final_train_loss"] < losses[0] - 1.5
        assert [e["step"] for e in r["eval_logs"]] == [12, 24]
        assert r["eval_logs"][1]["val_loss"] < r["eval_logs"][0]["val_loss"] < math.log(VOCAB) - 1
        assert s["final_val_loss"] == r["eval_logs"][-1]["val_loss"]
        assert s["vanilla_val_loss"] == r["eval_logs"][-1]["vanilla_val_loss"]
        if method == "adamw":
            assert s["ema_val_loss"] is None and s["final_val_loss"] == s["vanilla_val_loss"]
        else:
            assert s["ema_val_loss"] is not None and s["final_val_loss"] == s["ema_val_loss"] != s["vanilla_val_loss"]
        ckpt = torch.load(tmp_path / method / "ckpt.pt")
        assert ckpt["step"] == 24 and ckpt["data_pos"] == 24 * 256 and ckpt["config"]["optimizer"] == method
        model = GPT(GPTConfig(block_size=32, vocab_size=VOCAB, n_layer=2, n_head=2, n_embd=32))
        model.load_state_dict(ckpt["model"])
    # the EMA baseline trains exactly like AdamW: only the returned model differs
    for a, e in zip(results["adamw"]["step_logs"], results["ema"]["step_logs"]):
        assert a["loss"] == pytest.approx(e["loss"], rel=1e-6)
    assert results["adamw"]["summary"]["vanilla_val_loss"] == pytest.approx(results["ema"]["summary"]["vanilla_val_loss"], rel=1e-6)
    assert results["pace"]["step_logs"][-1]["loss"] != results["ema"]["step_logs"][-1]["loss"]


def test_two_processes_match_one(data_dir, tmp_path):
    common = ["--optimizer=pace", "--max_steps=8", "--eval_interval=4", "--vanilla_eval_interval=4", "--ckpt_interval=8",
              "--stats_interval=4"]  # every rank records PACE's telemetry at steps 4 and 8
    out = finish(start(tmp_path / "log", os.path.join(os.path.dirname(sys.executable), "torchrun"), "--standalone",
                       "--nproc_per_node=2", "train.py", *args_for(data_dir, tmp_path / "two", *common)))
    assert "2 process(es) on cpu, 1 accumulation step(s)" in out
    two = read_result(tmp_path / "two")
    one = run(data_dir, tmp_path / "one", *common)  # 1 process, 2 accumulation steps of the same 4 sequences
    for a, b in zip(one["step_logs"], two["step_logs"], strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5) and a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
        assert a.keys() == b.keys() and ("lambda_mean" in a) == (a["step"] % 4 == 0)
        if "lambda_mean" in a:
            assert a["lambda_mean"] == pytest.approx(b["lambda_mean"], rel=1e-4)
    for a, b in zip(one["eval_logs"], two["eval_logs"], strict=True):
        for key in ("val_loss", "ema_val_loss", "vanilla_val_loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-5)
    # Adam's normalized steps magnify rounding on coordinates whose gradients are nearly 0: a loose
    # absolute tolerance, next to the 8 steps of up to lr = 1e-2 each coordinate moves
    w1, w2 = (torch.load(tmp_path / d / "ckpt.pt")["model"] for d in ("one", "two"))
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], rtol=1e-3, atol=2e-4)


def test_killed_run_resumes_exactly(data_dir, tmp_path):
    common = ["--optimizer=pace", "--max_steps=60", "--eval_interval=10", "--ckpt_interval=4"]
    killed = tmp_path / "killed"
    proc = start(tmp_path / "killed.log", sys.executable, "train.py", *args_for(data_dir, killed, *common))
    signal_after_first_checkpoint(proc, killed, signal.SIGKILL)
    proc.wait()
    stopped_at = torch.load(killed / "ckpt.pt")["step"]
    assert 4 <= stopped_at < 60
    assert read_result(killed)["summary"]["status"] == "running"

    resume = start(tmp_path / "resume.log", sys.executable, "train.py", *args_for(data_dir, killed, *common, "--resume=True"))
    whole = start(tmp_path / "whole.log", sys.executable, "train.py", *args_for(data_dir, tmp_path / "whole", *common))
    assert "starting from step 0" not in finish(resume)
    finish(whole)

    resumed, whole = read_result(killed), read_result(tmp_path / "whole")
    assert without_timings(resumed) == without_timings(whole)
    assert resumed["summary"]["status"] == "completed" and len(resumed["step_logs"]) == 60
    a, b = torch.load(killed / "ckpt.pt"), torch.load(tmp_path / "whole" / "ckpt.pt")
    assert a.keys() == b.keys() and a["step"] == b["step"] == 60 and a["data_pos"] == b["data_pos"]
    assert_same_state(a, b)


def test_out_dir_of_a_run_is_protected(data_dir, tmp_path):
    out = tmp_path / "run"
    first = run(data_dir, out, "--max_steps=4", "--eval_interval=2", "--ckpt_interval=2")
    before = (out / "ckpt.pt").read_bytes()
    assert "already holds a run: continue it with --resume=True" in error_of(train.main, args_for(data_dir, out, "--max_steps=4"))
    message = error_of(train.main, args_for(data_dir, out, "--max_steps=4", "--lr=5e-3", "--resume=True"))
    assert "lr is 0.005 but the run in" in message and "has 0.01" in message
    assert (out / "ckpt.pt").read_bytes() == before and without_timings(read_result(out)) == without_timings(first)
    # resuming a finished run finishes at once, with the same result; settings of the execution may change
    again = run(data_dir, out, "--max_steps=4", "--eval_interval=2", "--ckpt_interval=2", "--resume=True", "--log_interval=1")
    assert without_timings(again)["summary"] == without_timings(first)["summary"]
    assert again["eval_logs"] == first["eval_logs"] and again["step_logs"] == first["step_logs"]


def test_resume_without_checkpoint_starts_over(data_dir, tmp_path, capsys):
    result = run(data_dir, tmp_path / "new", "--max_steps=2", "--resume=True")
    assert result["summary"]["status"] == "completed"
    assert "no checkpoint in" in capsys.readouterr().out


def test_non_finite_loss_stops_the_run(data_dir, tmp_path):
    out = tmp_path / "out"
    message = error_of(train.main, args_for(data_dir, out, "--lr=1e30", "--warmup_steps=0", "--max_steps=20",
                                            "--ckpt_interval=1", "--eval_interval=20", "--log_interval=20"))
    assert "non-finite training loss" in message
    bad_step = int(message.split("at step ")[1].split(";")[0])
    result = read_result(out)
    assert result["summary"]["status"] == "failed" and "non-finite" in result["summary"]["error"]
    assert len(result["step_logs"]) == bad_step - 1 and all(math.isfinite(s["loss"]) for s in result["step_logs"])
    ckpt = torch.load(out / "ckpt.pt")  # the last checkpoint, from before the bad step
    assert ckpt["step"] == bad_step - 1


def test_the_optimizer_graph_is_compiled_once_on_large_tensors(data_dir, tmp_path, monkeypatch):
    """train.py's probe compiles the graph every step reuses, with tensors of GPU-kernel size: inductor
    sizes a GPU kernel's blocks by the tensors it is compiled with, whatever comes later."""
    compiled_with = []  # the tensor sizes of each graph dynamo compiles, in order

    def recording_compile(fn, options=None, **kwargs):
        def backend(graph, example_inputs):
            compiled_with.append(sorted({t.numel() for t in example_inputs if torch.is_tensor(t) and t.dim() == 1}))
            return graph.forward  # runs eagerly: what is tested is what the graph was compiled with
        return real_compile(fn, backend=backend, **kwargs)

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", recording_compile)
    for name, fresh in (("_compiled", None), ("_FUSED_ERRORS", {}), ("_COMPILED_ON_LARGE", set())):
        monkeypatch.setattr(pace, name, fresh)  # a new process: nothing compiled or probed yet
    torch._dynamo.reset()
    run(data_dir, tmp_path / "out", "--optimizer=pace", "--max_steps=3")
    # the per-step scalars (5 values), and every tensor slot at COMPILE_NUMEL; no graph after it
    assert compiled_with == [[5, pace.COMPILE_NUMEL]]


# checkpoints

def evil_pickle(marker):
    class Evil:
        def __reduce__(self):  # unpickling it calls os.makedirs(marker)
            return os.makedirs, (str(marker),)
    return {"model": Evil()}


@pytest.mark.parametrize("damage", ["truncated", "foreign", "tampered", "missing keys"])
def test_unreadable_checkpoint_is_named_and_kept(data_dir, tmp_path, damage, monkeypatch):
    # as if torch's default were still weights_only=False: train.py must not depend on the default
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    out, marker = tmp_path / "run", tmp_path / "code_ran"
    first = run(data_dir, out, "--max_steps=2", "--eval_interval=2")
    ckpt_path = out / "ckpt.pt"
    if damage == "truncated":
        os.truncate(ckpt_path, ckpt_path.stat().st_size // 2)
    elif damage == "foreign":
        ckpt_path.write_text("a text file\n")
    elif damage == "tampered":
        torch.save(evil_pickle(marker), ckpt_path)
    else:
        torch.save({"model": {}, "step": 2}, ckpt_path)
    damaged = ckpt_path.read_bytes()
    message = error_of(train.main, args_for(data_dir, out, "--max_steps=2", "--eval_interval=2", "--resume=True"))
    assert str(ckpt_path) in message and "restore a good copy of it, or start a new run in another out_dir" in message
    if damage == "missing keys":
        assert "lacks optimizer, data_pos, rng, config" in message
    assert not marker.exists() and ckpt_path.read_bytes() == damaged and read_result(out) == first
    assert message == f"train.py: error: {error_of(checkpoint.load_checkpoint, str(ckpt_path))}"  # as the tools see it


# data passes

def test_data_passes_are_announced_and_recorded(tmp_path, capsys):
    small = tmp_path / "data"
    small.mkdir()
    for index, (n, seed) in enumerate([(3_000, 0), (600, 1), (400, 2)]):
        write_shard(shard_path(small, index), markov_tokens(n, seed))
    result = run(small, tmp_path / "out", "--max_steps=5")
    assert "max_steps x total_batch_size = 1,280 tokens: 1.28 passes over the 1,000 tokens" in capsys.readouterr().out
    assert result["summary"]["data_passes"] == 1.28
    run(small, tmp_path / "short", "--max_steps=3")
    assert "passes over" not in capsys.readouterr().out


# evaluation

def test_evaluation_cadence_and_time(data_dir, tmp_path):
    result = run(data_dir, tmp_path / "out", "--optimizer=pace", "--max_steps=7", "--eval_interval=2",
                 "--vanilla_eval_interval=4", "--ckpt_interval=7")
    logs = result["eval_logs"]
    assert [e["step"] for e in logs] == [2, 4, 6, 7]  # the returned model at every evaluation
    assert [e["vanilla_val_loss"] is not None for e in logs] == [False, True, False, True]  # the last iterate at 4 and the end
    assert all(e["val_loss"] == e["ema_val_loss"] for e in logs)
    summary = result["summary"]
    assert 0 < summary["eval_time"] < summary["wall_time"]
    assert torch.load(tmp_path / "out" / "ckpt.pt")["eval_time"] == summary["eval_time"]


def test_evaluation_reads_back_once(monkeypatch):
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=8, vocab_size=VOCAB, n_layer=1, n_head=2, n_embd=16))
    tokens = torch.randint(0, VOCAB, (10 * 8 + 1,))
    expected = sum(model(tokens[i:i + 8][None], tokens[i + 1:i + 9][None])[1].item() for i in range(0, 80, 8)) / 10
    reads = []
    for name in ("item", "tolist", "cpu", "numpy", "__float__"):
        real = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, real=real, name=name, **k: reads.append(name) or real(self, *a, **k))
    loss = mean_loss(model, tokens, 3, 8)  # 4 batches: 3, 3, 3, 1 sequences
    monkeypatch.undo()
    assert loss == pytest.approx(expected, rel=1e-6) and reads == ["tolist"]


def test_evaluation_costs_at_most_2_5_percent_of_the_recipe():
    shares = {m: train.eval_share(Settings(optimizer=m)) for m in ("adamw", "ema", "pace")}
    assert shares["adamw"] == pytest.approx(39 * 10_485_760 / (3 * 19073 * 524288))
    assert shares["pace"] == shares["ema"] == pytest.approx(59 * 10_485_760 / (3 * 19073 * 524288))
    assert max(shares.values()) < 0.025


# GPUs

@pytest.mark.parametrize("name, flops", [
    ("NVIDIA A100-SXM4-80GB", 312e12), ("NVIDIA A100 80GB PCIe", 312e12),
    ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H100 NVL", 835e12),
    ("NVIDIA H200", 989e12), ("NVIDIA B200", 2.25e15), ("NVIDIA L40S", 362e12), ("NVIDIA GeForce RTX 4090", 165e12),
    ("NVIDIA GH200 480GB", None), ("NVIDIA GeForce RTX 3090", None), ("Tesla V100-SXM2-16GB", None),
])
def test_peak_flops_of_known_gpus_only(name, flops):
    assert train.peak_flops(name) == flops
