"""The pipeline as users run it, on tiny settings: demo.py (prepare -> sweep.py -> the real
train.py -> the table) and a sweep.py grid whose commands the real train.py parses."""

import json
import os
import shlex
import sys

import pytest

import demo
from conftest import TINY, corpus_texts, row, write_parquet
from studies import analysis, sweep

# a model of 1.6M parameters (most of them GPT-2's vocabulary), 4 steps of 128 tokens
DEMO_SETTINGS = ["--n_layer=1", "--n_head=2", "--n_embd=32", "--block_size=32", "--batch_size=4",
                 "--total_batch_size=128", "--max_steps=4", "--warmup_steps=1", "--eval_interval=2",
                 "--eval_tokens=1024", "--ckpt_interval=4", "--log_interval=2"]


@pytest.fixture(autouse=True)
def one_thread_per_run(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the runs are tiny: on shared cores a second thread only waits


def summaries(out_dir):
    return {m: json.loads((out_dir / m / "result.json").read_text()) for m in demo.METHODS}


@pytest.mark.usefixtures("gpt2_encoding")  # the demo prepares its data with it
def test_demo_end_to_end(tmp_path, capfd):
    write_parquet(tmp_path / "docs.parquet", corpus_texts(200))
    data, out = tmp_path / "data", tmp_path / "out"
    argv = ["--data_files", str(tmp_path / "*.parquet"), "--data_dir", str(data), "--max_tokens", "16000",
            "--out_dir", str(out), *DEMO_SETTINGS]
    assert demo.main(argv) == 0
    first = capfd.readouterr().out
    assert f"demo: preparing 16,000 tokens of {tmp_path / '*.parquet'} into {data}" in first
    shards = sorted(data.iterdir())
    assert [p.name for p in shards] == ["fineweb_train_000001.bin", "fineweb_train_000002.bin",
                                        "fineweb_train_000003.bin", "fineweb_val_000000.bin"]
    stamps = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in shards}

    # sweep.py ran the real train.py once per method, with the demo's configs and settings
    commands = [shlex.split(line) for line in first.splitlines() if line.startswith(shlex.quote(sys.executable))]
    assert [c[-1] for c in commands] == [f"--out_dir={out / m}" for m in demo.METHODS]
    for method, command in zip(demo.METHODS, commands):
        assert command[2:4] == [os.path.join(demo.CONFIGS, "cpu.py"), os.path.join(demo.CONFIGS, f"{method}.py")]
        assert command[4:-1] == [f"--optimizer={method}", f"--data_dir={data}", *DEMO_SETTINGS]
    results = summaries(out)
    for method, r in results.items():
        assert r["summary"]["status"] == "completed" and r["summary"]["steps"] == 4
        assert r["config"]["optimizer"] == method and r["config"]["n_embd"] == 32 and r["config"]["data_dir"] == str(data)
        assert [e["step"] for e in r["eval_logs"]] == [2, 4]

    # the table: each method's returned model, its EMA, its last iterate and its training loss
    for method, r in results.items():
        s = r["summary"]
        want = [s["final_val_loss"], s["ema_val_loss"], s["vanilla_val_loss"], s["final_train_loss"]]
        assert row(first, method)[1:] == ["-" if x is None else f"{x:.4f}" for x in want]
    assert row(first, "adamw")[2] == "-" and row(first, "adamw")[1] == row(first, "adamw")[3]
    assert row(first, "pace")[1] == row(first, "pace")[2] != row(first, "pace")[3]
    table = first[first.index("| method |"):]

    # a rerun reuses the shards and the finished runs, and prints the same table
    assert demo.main(argv) == 0
    second = capfd.readouterr().out
    assert f"demo: reusing the shards in {data}" in second and "preparing" not in second
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(data.iterdir())} == stamps
    assert "# sweep of 3 runs in" in second and "3 skip, 0 skip-failed, 0 resume, 0 restart, 0 start" in second
    assert second[second.index("| method |"):] == table


def test_sweep_commands_run_the_real_train_py(data_dir, tmp_path, capfd):
    # values in every form the commands carry them: a float, None, a bare word, an int, a tuple
    settings = [a for a in TINY if not a.startswith("--lr=")] + ["--max_steps=3", "--eval_interval=3", "--betas=(0.8,0.9)"]
    grid = ["--method", "ema,pace", "--lr", "0.005", "--c", "0.3", "--kappa", "None", "--schedule", "wsd",
            "--seed", "3", "--out", str(tmp_path / "runs")]
    assert sweep.main([*grid, f"--data_dir={data_dir}", *settings]) == 0
    runs = sorted(p.parent.name for p in (tmp_path / "runs").rglob("result.json"))
    assert runs == ["ema_lr0.005_kNone_wsd_seed3", "pace_lr0.005_c0.3_kNone_wsd_seed3"]
    for name in runs:
        result = json.loads((tmp_path / "runs" / name / "result.json").read_text())
        config = result["config"]
        assert result["summary"]["status"] == "completed" and result["summary"]["steps"] == 3
        assert (config["lr"], config["ema_kappa"], config["schedule"], config["seed"]) == (0.005, None, "wsd", 3)
        assert config["betas"] == [0.8, 0.9]
        assert config["optimizer"] == name.split("_")[0] and config["n_embd"] == 32
        if config["optimizer"] == "pace":
            assert config["lambda_pullback"] == 0.3
    capfd.readouterr()
    # sweep.py recognizes train.py's result.json as the runs it asked for
    assert sweep.main([*grid, f"--data_dir={data_dir}", *settings, "--dry_run"]) == 0
    assert "2 skip, 0 skip-failed, 0 resume, 0 restart, 0 start" in capfd.readouterr().out
    assert analysis.main(["summarize", str(tmp_path / "runs"), "--no_plot"]) == 0
    cells = row(capfd.readouterr().out, "0.005")
    assert cells[1] == "wsd" and cells[2].endswith("(n=1) [κ=None]") and cells[3].endswith("(n=1) [c=0.3 κ=None]")
