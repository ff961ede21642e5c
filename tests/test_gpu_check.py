"""gpu_check.py, as far as a CPU goes: the no-GPU line; the budget, which holds whatever a check does (hangs,
raises, leaves processes behind), checks planted in a copy of the runner; the rows a SIGTERM leaves; and the
checks a CPU can run, which compare what they claim to."""

import dataclasses
import json
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import gpu_check
from conftest import REPO



def test_without_a_gpu_it_says_so_in_one_line(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out == "gpu_check.py: no CUDA GPU here (torch.cuda.is_available() is False): nothing to check\n"
    assert not (tmp_path / "out").exists()


def test_an_unknown_check_is_named(capsys):
    with pytest.raises(SystemExit):
        gpu_check.main(["--only=smoke,nope"])
    assert "--only: unknown check(s) nope" in capsys.readouterr().err


def planted_runner(tmp_path, checks):
    """A script that runs gpu_check.py's runner on planted checks (CHECKS and CHECK_COMMAND replaced): `quick`
    passes, `raises` raises, `hangs` starts a process in a session of its own (as torchrun starts its workers),
    writes both pids into tmp_path/pids, and sleeps."""
    script = tmp_path / "planted_gpu_check.py"
    script.write_text(textwrap.dedent(f"""
        import os, subprocess, sys, time
        sys.path.insert(0, {REPO!r})
        import gpu_check
        from gpu_check import Check, row

        def quick(ctx):
            return row("quick", "-", True)

        def raises(ctx):
            raise RuntimeError("planted")

        def hangs(ctx):
            child = subprocess.Popen(["sleep", "1000"], start_new_session=True)
            with open({str(tmp_path / "pids")!r}, "a") as f:
                f.write(f"{{os.getpid()}} {{child.pid}}\\n")
            time.sleep(1000)

        gpu_check.CHECKS = {{{checks}}}
        gpu_check.CHECK_COMMAND = [sys.executable, __file__]
        if __name__ == "__main__":
            sys.exit(gpu_check.main())
    """))
    return script


def planted_pids(tmp_path):
    path = tmp_path / "pids"
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


def table(out):
    return {r["check"]: r for r in json.loads((out / "table.json").read_text())["checks"]}


def test_the_budget_holds_whatever_a_check_does(tmp_path):
    script = planted_runner(tmp_path, '"quick": Check(quick, 1, 60), "raises": Check(raises, 1, 60), '
                                      '"hangs_past_its_cap": Check(hangs, 1, 5), "hangs": Check(hangs, 1, 1000), '
                                      '"after": Check(quick, 1, 60)')
    out, budget = tmp_path / "out", 40  # time for three checks on a busy machine (each process imports torch)
    start = time.monotonic()
    p = subprocess.run([sys.executable, str(script), "--device=cpu", f"--budget={budget}", f"--out={out}"],
                       capture_output=True, text=True, timeout=budget + 60)
    assert time.monotonic() - start <= budget + gpu_check.MARGIN, p.stdout + p.stderr
    assert p.returncode == 1, p.stdout + p.stderr  # a check erred
    rows = table(out)
    assert list(rows) == ["quick", "raises", "hangs_past_its_cap", "hangs", "after"]
    assert rows["quick"]["result"] == "pass"
    assert rows["raises"]["result"] == "error" and rows["raises"]["value"] == "error: exit 1: RuntimeError: planted"
    assert rows["hangs_past_its_cap"]["value"] == "error: stopped at its cap of 5 s"
    assert rows["hangs"]["value"].startswith("error: stopped at the end of the budget, after ")
    assert rows["after"]["result"] == "skipped" and rows["after"]["value"].startswith("would not fit: usually takes 1 s, ")
    assert "Traceback" in (out / "raises.log").read_text()  # each check's whole output beside the table
    assert (out / "table.md").read_text().count("\n| ") == 6  # the header row and five checks
    pids = planted_pids(tmp_path)  # two per hanging check that got as far as its function (slow machines: `hangs` alone)
    assert len(pids) in (2, 4) and not any(alive(pid) for pid in pids)  # nothing a stopped check started is left


def test_a_sigterm_leaves_the_rows_finished(tmp_path):
    script = planted_runner(tmp_path, '"quick": Check(quick, 1, 60), "hangs": Check(hangs, 1, 1000), '
                                      '"after": Check(quick, 1, 60)')
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, str(script), "--device=cpu", "--budget=600", f"--out={out}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while len(planted_pids(tmp_path)) < 2:  # hangs is running: quick's row is written
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=gpu_check.MARGIN)[0]
    assert proc.returncode == 128 + signal.SIGTERM, output
    rows = table(out)
    assert list(rows) == ["quick", "hangs"] and rows["quick"]["result"] == "pass"
    assert rows["hangs"]["value"] == "error: stopped by SIGTERM"
    assert not any(alive(pid) for pid in planted_pids(tmp_path))


def resumed_result(losses, dtype="float32"):
    return {"summary": {"status": "completed", "steps": len(losses)}, "config": {"dtype": dtype},
            "step_logs": [{"step": i + 1, "loss": loss} for i, loss in enumerate(losses)]}


def test_a_resumed_run_is_compared_step_by_step_with_the_uninterrupted_one():
    whole = resumed_result([10.0, 9.0, 8.0])
    assert gpu_check.compare_resumed(resumed_result([10.0, 9.0, 8.0]), whole, 1, 0)["result"] == "pass"
    off = gpu_check.compare_resumed(resumed_result([10.0, 9.0, 8.001]), whole, 1, 0)
    assert off["result"] == "FAIL" and "largest loss gap 1.00e-03 (step 3)" in off["value"]
    assert gpu_check.compare_resumed(resumed_result([10.0, 9.0, 8.001]), whole, 1, 0.01)["result"] == "pass"
    switched = gpu_check.compare_resumed(resumed_result([10.0, 9.0, 8.0], "bfloat16"), whole, 1, 0.01)
    assert switched["result"] == "FAIL" and "dtype bfloat16 (the uninterrupted run's: float32)" in switched["value"]
    assert gpu_check.compare_resumed(resumed_result([10.0, 9.0]), whole, 1, 0)["result"] == "FAIL"  # steps missing


def test_the_checks_a_cpu_can_run_make_their_rows(capsys, tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setattr(gpu_check, "START", time.monotonic())  # the budget counts from now, not from this module's import
    for name in ("cpu_checkpoint", "collectives"):  # the caps are a GPU's; a shared CPU may be many times slower
        monkeypatch.setitem(gpu_check.CHECKS, name, dataclasses.replace(gpu_check.CHECKS[name], cap=900))
    assert gpu_check.main(["--device=cpu", "--only=cpu_checkpoint,memory,collectives", f"--out={out}"]) == 0
    printed = capsys.readouterr().out
    assert "| check | result | value | expectation | seconds |\n|---|---|---|---|---|\n" in printed
    rows = table(out)
    # resumed on the CPU with dtype=auto: float32 kept, and the losses bit for bit the uninterrupted run's
    assert re.fullmatch(r"completed at step 12, from step \d+; dtype float32 \(the uninterrupted run's: float32\); "
                        r"largest loss gap 0.00e\+00 \(step 1\)", rows["cpu_checkpoint"]["value"])
    assert rows["cpu_checkpoint"]["result"] == "pass" and rows["cpu_checkpoint"]["seconds"] > 0
    assert rows["memory"] == {"check": "memory", "result": "skipped", "value": "needs 1 GPU(s)", "expectation": "-", "seconds": 0}
    assert rows["collectives"]["result"] == "pass"
    assert rows["collectives"]["value"].startswith("1 process(es): all-reduce correct; stop after the same step on every rank")
    assert (out / "cpu_checkpoint.log").exists() and "$ " in (out / "collectives.log").read_text()


def test_the_memory_estimate_is_the_arithmetic_of_the_docs():
    # 65,536 tokens x 12 layers x 34 bytes x 768 of activations; 124.5M parameters x 20 bytes; the loss: full, the bf16
    # logits and their gradient; chunked, a chunk of 8,192 tokens x 50,304 x 8 bytes and the two kept gradients
    rest = 65536 * 12 * 34 * 768 + 124.5e6 * 20
    assert gpu_check.memory_estimate(loss="full") == pytest.approx((rest + 65536 * 50304 * 4) / 1e9)
    assert gpu_check.memory_estimate(loss="chunked") == pytest.approx(
        (rest + 8192 * 50304 * 8 + (65536 + 50304) * 768 * 4) / 1e9)


def test_the_memory_and_loss_chunk_rows_measure_gpt2_124m():
    # bench.training given configs/gpu80gb.py, as those rows run it: train.py's defaults under it, not configs/cpu.py
    p = subprocess.run([sys.executable, "-m", "bench.training", "configs/gpu80gb.py", "--device=cpu", "--steps=0",
                        "--methods=pace"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("GPT of 12 layers, 12 heads, 768 wide, 50,304 tokens (124,475,904 parameters), 524,288 "
                               "tokens per step, 8 micro-batch(es) of 64 x 1024, on cpu"), p.stdout
