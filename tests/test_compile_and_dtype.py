"""train.py as GPU runs use it, on the CPU: compiled (one process, and two under torchrun with DDP and
bfloat16 autocast), and the dtype setting, with float16's gradient scaler skipping an overflowed step."""

import signal
import sys

import pytest
import torch

from test_train import (SUBPROCESS_ENV, args_for, data_dir, finish, one_thread, read_result,  # noqa: F401
                        signal_after_first_checkpoint, start, with_fault, without_timings)

COMPILED = ["--compile=True", "--max_steps=3", "--eval_interval=3", "--ckpt_interval=3", "--optimizer=pace"]


def torchrun(nproc):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]


def test_train_py_compiled_trains(data_dir, tmp_path):
    finish(start(tmp_path / "log", sys.executable, "train.py", *args_for(data_dir, tmp_path / "out", *COMPILED)), timeout=600)
    summary = read_result(tmp_path / "out")["summary"]
    assert summary["status"] == "completed" and summary["steps"] == 3


def test_train_py_compiled_in_two_processes_with_ddp_and_bf16_autocast(data_dir, tmp_path):
    args = args_for(data_dir, tmp_path / "out", *COMPILED, "--dtype=bfloat16")
    finish(start(tmp_path / "log", *torchrun(2), "train.py", *args), timeout=900)
    compiled = read_result(tmp_path / "out")
    assert compiled["summary"]["status"] == "completed" and compiled["config"]["dtype"] == "bfloat16"
    # the same run in float32, uncompiled, in one process: bf16 products round differently, by little
    reference = read_result(run_in_process(data_dir, tmp_path / "reference", "--max_steps=3", "--eval_interval=3",
                                           "--optimizer=pace"))
    for a, b in zip(compiled["step_logs"], reference["step_logs"]):
        assert a["loss"] == pytest.approx(b["loss"], abs=0.05)


def run_in_process(data_dir, out_dir, *extra):
    import train
    train.main(args_for(data_dir, out_dir, *extra))
    return out_dir


FLOAT16 = ["--dtype=float16", "--optimizer=pace", "--warmup_steps=10", "--log_interval=1"]  # lr the same for any max_steps


def start_with_fault(log, fault, args):
    env = dict(SUBPROCESS_ENV)
    return start(log, *with_fault(fault, env), *args, env=env)


def test_float16_skips_exactly_the_step_whose_gradients_overflow(data_dir, tmp_path):
    two = args_for(data_dir, tmp_path / "two", *FLOAT16, "--max_steps=2", "--eval_interval=2")
    finish(start_with_fault(tmp_path / "two.log", "overflow:99", two))  # no step overflows
    three = args_for(data_dir, tmp_path / "three", *FLOAT16, "--max_steps=3", "--eval_interval=3")
    finish(start_with_fault(tmp_path / "three.log", "overflow:3", three))
    logs = read_result(tmp_path / "three")["step_logs"]
    assert [s.get("skipped", False) for s in logs] == [False, False, True]
    a, b = torch.load(tmp_path / "two" / "ckpt.pt"), torch.load(tmp_path / "three" / "ckpt.pt")
    for k in a["model"]:  # the weights, Adam's moments, the EMA and the step count are as before step 3
        assert torch.equal(a["model"][k], b["model"][k]), k
    for i, state in a["optimizer"]["state"].items():
        for k, v in state.items():
            assert torch.equal(v, b["optimizer"]["state"][i][k]) if torch.is_tensor(v) else v == b["optimizer"]["state"][i][k]
    assert b["scaler"]["scale"] == a["scaler"]["scale"] / 2  # the scaler backs off after the overflow


def test_a_killed_float16_run_resumes_exactly_with_its_scaler(data_dir, tmp_path):
    common = [*FLOAT16, "--max_steps=16", "--eval_interval=8", "--ckpt_interval=4"]
    killed = tmp_path / "killed"
    proc = start_with_fault(tmp_path / "killed.log", "overflow:2", args_for(data_dir, killed, *common))
    signal_after_first_checkpoint(proc, killed, signal.SIGKILL)  # its first checkpoint follows the overflow
    proc.wait()
    assert 4 <= torch.load(killed / "ckpt.pt")["step"] < 16
    finish(start_with_fault(tmp_path / "resume.log", "overflow:2", args_for(data_dir, killed, *common, "--resume=True")))
    finish(start_with_fault(tmp_path / "whole.log", "overflow:2", args_for(data_dir, tmp_path / "whole", *common)))
    resumed, whole = read_result(killed), read_result(tmp_path / "whole")
    assert without_timings(resumed) == without_timings(whole) and resumed["step_logs"][1]["skipped"]
    a, b = torch.load(killed / "ckpt.pt"), torch.load(tmp_path / "whole" / "ckpt.pt")
    assert a["scaler"] == b["scaler"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_a_dtype_is_autocast_on_the_cpu_too(data_dir, tmp_path):
    bf16 = read_result(run_in_process(data_dir, tmp_path / "bf16", "--max_steps=2", "--dtype=bfloat16"))
    fp32 = read_result(run_in_process(data_dir, tmp_path / "fp32", "--max_steps=2"))
    assert fp32["config"]["dtype"] == "float32"  # dtype=auto, chosen once for the device
    # float32 on the CPU by default (the old runs' arithmetic); bfloat16 changes the losses, but little
    assert bf16["step_logs"][0]["loss"] != fp32["step_logs"][0]["loss"]
    assert bf16["step_logs"][0]["loss"] == pytest.approx(fp32["step_logs"][0]["loss"], abs=0.05)
