"""train.py as GPU runs use it, on the CPU: compiled (one process, and two under torchrun with DDP and
bfloat16 autocast), the dtype setting, with float16's gradient scaler skipping an overflowed step, chosen
once when it is auto; the loss setting (full and chunked train alike; full compiles without a graph break);
the deterministic setting."""

import json
import signal
import sys

import pytest
import torch

import processes
import settings
import train
from conftest import (SUBPROCESS_ENV, args_for, error_of, finish, read_result, signal_after_first_checkpoint, start,
                      with_fault, without_timings)

pytestmark = pytest.mark.usefixtures("one_thread")

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
    [session] = compiled["code"]  # provenance: both processes' devices, and the command a user typed
    assert session["world_size"] == 2 and session["devices"] == ["cpu, 1 thread"] * 2
    assert session["command"].split()[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    # the same run in float32, uncompiled, in one process: bf16 products round differently, by little
    reference = read_result(run_in_process(data_dir, tmp_path / "reference", "--max_steps=3", "--eval_interval=3",
                                           "--optimizer=pace"))
    for a, b in zip(compiled["step_logs"], reference["step_logs"]):
        assert a["loss"] == pytest.approx(b["loss"], abs=0.05)


def run_in_process(data_dir, out_dir, *extra):
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


# the loss setting

TWENTY_STEPS = ["--max_steps=20", "--eval_interval=20", "--log_interval=1", "--optimizer=pace"]
FLOAT32_ROUNDING = 2e-6  # relative: 20 steps of the two losses' float32 roundings, the training losses apart


def losses_of(result):
    return [s["loss"] for s in result["step_logs"]]


def test_the_full_and_chunked_losses_train_alike_in_one_and_two_processes(data_dir, tmp_path):
    chunked = read_result(run_in_process(data_dir, tmp_path / "chunked", *TWENTY_STEPS))  # loss=auto: chunked on a CPU
    full = read_result(run_in_process(data_dir, tmp_path / "full", *TWENTY_STEPS, "--loss=full"))
    finish(start(tmp_path / "log", *torchrun(2), "train.py", *args_for(data_dir, tmp_path / "full2", *TWENTY_STEPS, "--loss=full")))
    full2 = read_result(tmp_path / "full2")
    assert (chunked["config"]["loss"], full["config"]["loss"], full2["config"]["loss"]) == ("chunked", "full", "full")
    assert len(losses_of(chunked)) == len(losses_of(full)) == len(losses_of(full2)) == 20
    for a, b, c in zip(losses_of(chunked), losses_of(full), losses_of(full2)):
        assert b == pytest.approx(a, rel=FLOAT32_ROUNDING) and c == pytest.approx(a, rel=FLOAT32_ROUNDING)
    assert full["summary"]["final_val_loss"] == pytest.approx(chunked["summary"]["final_val_loss"], rel=FLOAT32_ROUNDING)


def train_step_report(data_dir, tmp_path, *settings):
    """bench.train_step's report of a compiled run: its second step measured."""
    out = tmp_path / settings[-1].split("=")[1]
    output = finish(start(tmp_path / f"{out.name}.log", sys.executable, "-m", "bench.train_step", "--warmup=1", "--steps=1",
                          *args_for(data_dir, out, "--compile=True", "--max_steps=4", "--eval_interval=4",
                                    "--ckpt_interval=4", "--optimizer=pace", *settings)), timeout=900)
    return json.loads(output.split("train_step: ")[1].splitlines()[0])


def test_the_full_loss_compiles_into_one_graph_and_the_chunked_loss_breaks_it_once(data_dir, tmp_path):
    full = train_step_report(data_dir, tmp_path, "--loss=full")
    assert full["graph_breaks"] == 0 and full["loss"] == "full" and full["fused_optimizer"], full
    assert full["compiles_in_measured_steps"] == 0, full
    chunked = train_step_report(data_dir, tmp_path, "--loss=chunked")  # the counter sees a break where there is one
    assert chunked["graph_breaks"] == 1 and "fused_cross_entropy" in chunked["graph_break_reasons"][0], chunked


# dtype=auto and loss=auto: chosen once


def stop_after_first_step(data_dir, out_dir, monkeypatch, *extra):
    """A run preempted after its first step, in this process."""
    with monkeypatch.context() as m:
        m.setattr(processes.Preemption, "requested", lambda self: True)
        with pytest.raises(SystemExit) as e:
            run_in_process(data_dir, out_dir, *extra)
    assert e.value.code == processes.EXIT_PREEMPTED and read_result(out_dir)["summary"]["steps"] == 1


def test_a_float32_run_resumed_where_auto_means_bfloat16_stays_float32(data_dir, tmp_path, monkeypatch, capsys):
    common = ["--max_steps=4", "--eval_interval=4", "--log_interval=1", "--optimizer=pace"]
    whole = read_result(run_in_process(data_dir, tmp_path / "whole", *common))
    stop_after_first_step(data_dir, tmp_path / "resumed", monkeypatch, *common)
    choice = settings.auto_choice
    # resumed on a device where dtype=auto means bfloat16 (a GPU), with dtype=auto
    monkeypatch.setattr(settings, "auto_choice", lambda key, device: "bfloat16" if key == "dtype" else choice(key, device))
    resumed = read_result(run_in_process(data_dir, tmp_path / "resumed", *common, "--resume=True"))
    assert resumed["config"]["dtype"] == "float32" and losses_of(resumed) == losses_of(whole)
    assert f"dtype=float32, as the run in {tmp_path / 'resumed'} started (dtype=auto would choose bfloat16 on cpu)" \
        in capsys.readouterr().out
    message = error_of(train.main, args_for(data_dir, tmp_path / "resumed", *common, "--resume=True", "--dtype=bfloat16"))
    assert message == f"train.py: error: dtype is 'bfloat16' but the run in {tmp_path / 'resumed'} has 'float32'; " \
                      f"a resumed run must keep it (or start a new out_dir)"


def test_a_run_from_before_auto_was_chosen_once_resumes(data_dir, tmp_path, monkeypatch):
    common = ["--max_steps=4", "--eval_interval=4", "--log_interval=1"]
    whole = read_result(run_in_process(data_dir, tmp_path / "whole", *common))
    stop_after_first_step(data_dir, tmp_path / "old", monkeypatch, *common)
    ckpt = torch.load(tmp_path / "old" / "ckpt.pt")
    ckpt["config"]["dtype"] = "auto"  # as runs recorded it before
    del ckpt["config"]["loss"], ckpt["config"]["deterministic"]
    torch.save(ckpt, tmp_path / "old" / "ckpt.pt")
    resumed = read_result(run_in_process(data_dir, tmp_path / "old", *common, "--resume=True"))
    assert (resumed["config"]["dtype"], resumed["config"]["loss"]) == ("float32", "chunked")
    assert losses_of(resumed) == losses_of(whole)


# deterministic


def test_a_deterministic_run_trains_compiled_and_keeps_the_setting(data_dir, tmp_path):
    out = tmp_path / "out"
    finish(start(tmp_path / "log", sys.executable, "train.py", *args_for(data_dir, out, *COMPILED, "--deterministic=True")),
           timeout=900)  # no op of the step lacks a deterministic kernel (it would raise)
    result = read_result(out)
    assert result["summary"]["status"] == "completed" and result["config"]["deterministic"] is True
    message = error_of(train.main, args_for(data_dir, out, *COMPILED, "--resume=True", "--max_steps=4"))
    assert message.startswith("train.py: error: deterministic is False but the run in ")
