"""studies/sweep.py: the grid, the skip/resume plan, the printed commands, its one-line errors, and the
evaluation it asks of tools/evaluate.py after each run."""

import json
import shlex
import sys
from pathlib import Path

import pytest

from conftest import write_result
from studies import sweep

# ----------------------------------------------------------------------------- the grid and the plan

def test_grid_multiplies_only_the_axes_a_method_uses():
    grid = {"lr": [1e-3, 3e-3], "c": [0.1, 0.3], "kappa": [0.2, 0.5], "seed": [0, 1]}
    names = [sweep.run_name(s) for s in sweep.expand_grid(grid)]
    assert len(names) == 2 * 2 * (1 + 2 + 4)  # seeds x lrs x (adamw + ema·κ + pace·c·κ)
    assert names[:7] == ["adamw_lr0.001_seed0", "ema_lr0.001_k0.2_seed0", "ema_lr0.001_k0.5_seed0",
                         "pace_lr0.001_c0.1_k0.2_seed0", "pace_lr0.001_c0.1_k0.5_seed0",
                         "pace_lr0.001_c0.3_k0.2_seed0", "pace_lr0.001_c0.3_k0.5_seed0"]
    assert all(n.endswith("seed0") for n in names[:14]) and all(n.endswith("seed1") for n in names[14:])
    assert len(set(names)) == len(names)
    # axes not given are not passed at all: train.py's config files decide
    assert sweep.expand_grid({"method": ["pace"]}) == [{"optimizer": "pace"}]


@pytest.fixture
def fake_train(tmp_path, monkeypatch):
    """A stand-in train.py that logs its argv and writes a completed result.json (lr 0.1 fails)."""
    script = tmp_path / "train.py"
    script.write_text(
        "import json, os, sys\n"
        "args = dict(a[2:].split('=', 1) for a in sys.argv[1:] if a.startswith('--'))\n"
        "with open('calls.log', 'a') as f:\n"
        "    f.write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "if args['lr'] == '0.1':\n"
        "    sys.exit(1)\n"
        "os.makedirs(args['out_dir'], exist_ok=True)\n"
        "config = {k: v if k in ('optimizer', 'out_dir', 'schedule') else eval(v) for k, v in args.items() if k != 'resume'}\n"
        "json.dump({'config': config, 'summary': {'status': 'completed', 'final_val_loss': 3.0}},\n"
        "          open(os.path.join(args['out_dir'], 'result.json'), 'w'))\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sweep, "TRAIN_PY", script)
    return tmp_path


def calls(folder):
    log = folder / "calls.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def command(*args):
    return shlex.join([sys.executable, "train.py", *args])


def test_plan_skips_complete_resumes_and_restarts_incomplete(fake_train, capsys):
    out = Path("runs")
    grid = ["--method", "adamw,pace", "--lr", "0.001", "--c", "0.15", "--seed", "0,1,2", "--out", "runs", "--max_steps=100"]
    setting = {"lr": 0.001, "lambda_pullback": 0.15, "max_steps": 100}
    write_result(out / "adamw_lr0.001_seed0", "adamw", **setting, seed=0)                     # complete
    write_result(out / "pace_lr0.001_c0.15_seed0", "pace", status="running", **setting, seed=0)
    (out / "pace_lr0.001_c0.15_seed0" / "ckpt.pt").write_bytes(b"")                          # killed: resume
    write_result(out / "adamw_lr0.001_seed1", "adamw", status="failed", error="x", **setting, seed=1)  # no ckpt
    (out / "pace_lr0.001_c0.15_seed1").mkdir()
    (out / "pace_lr0.001_c0.15_seed1" / "result.json").write_text("{trunc")                  # unparsable
    (out / "adamw_lr0.001_seed2").mkdir()
    (out / "adamw_lr0.001_seed2" / "ckpt.pt").write_bytes(b"")                               # ckpt, no result

    assert sweep.main([*grid, "--dry_run"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert calls(fake_train) == []  # a dry run runs nothing
    assert printed[0] == "# sweep of 6 runs in runs: 1 skip, 0 skip-failed, 2 resume, 2 restart, 1 start"
    pace = lambda seed: ["--optimizer=pace", "--lr=0.001", "--lambda_pullback=0.15", f"--seed={seed}", "--max_steps=100",
                         f"--out_dir=runs/pace_lr0.001_c0.15_seed{seed}"]
    adamw = lambda seed: ["--optimizer=adamw", "--lr=0.001", f"--seed={seed}", "--max_steps=100",
                          f"--out_dir=runs/adamw_lr0.001_seed{seed}"]
    assert printed[1:] == [
        "# [1/6] skip adamw_lr0.001_seed0: complete",
        "# [2/6] resume pace_lr0.001_c0.15_seed0: unfinished: continues from its ckpt.pt",
        command(*pace(0), "--resume=True"),
        "# [3/6] restart adamw_lr0.001_seed1: unfinished, no ckpt.pt: from step 0",
        command(*adamw(1), "--resume=True"),
        "# [4/6] restart pace_lr0.001_c0.15_seed1: unfinished, no ckpt.pt: from step 0",
        command(*pace(1), "--resume=True"),
        "# [5/6] resume adamw_lr0.001_seed2: unfinished: continues from its ckpt.pt",
        command(*adamw(2), "--resume=True"),
        "# [6/6] start pace_lr0.001_c0.15_seed2: new",
        command(*pace(2)),
    ]

    # --skip_failed leaves the failed run alone
    assert sweep.main([*grid, "--dry_run", "--skip_failed"]) == 0
    assert "# [3/6] skip-failed adamw_lr0.001_seed1: failed, left alone (--skip_failed)" in capsys.readouterr().out

    # a real run executes exactly the printed commands, and then everything is complete
    assert sweep.main([*grid]) == 0
    ran = [shlex.join([sys.executable, "train.py", *argv]) for argv in calls(fake_train)]
    assert ran == [line for line in printed if not line.startswith("#")]
    capsys.readouterr()
    assert sweep.main([*grid]) == 0
    assert len(calls(fake_train)) == 5  # nothing ran again
    rerun = capsys.readouterr().out.splitlines()
    assert rerun[0] == "# sweep of 6 runs in runs: 6 skip, 0 skip-failed, 0 resume, 0 restart, 0 start"
    assert len(rerun) == 7


def test_failed_run_does_not_stop_the_sweep(fake_train, capsys):
    (fake_train / "c").mkdir()
    (fake_train / "c" / "adamw.py").write_text("")
    assert sweep.main(["--method", "adamw", "--lr", "0.1,0.001", "--out", "runs", "--config", "c/{method}.py"]) == 1
    captured = capsys.readouterr()
    assert [argv[:2] for argv in calls(fake_train)] == [["c/adamw.py", "--optimizer=adamw"]] * 2
    assert "1 run(s) exited with an error: adamw_lr0.1" in captured.err
    assert (fake_train / "runs" / "adamw_lr0.001" / "result.json").exists()


def test_torchrun_command(fake_train, capsys):
    assert sweep.main(["--method", "ema", "--nproc_per_node", "8", "--dry_run"]) == 0
    assert capsys.readouterr().out.splitlines()[2] == shlex.join(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=8", "train.py",
         "--optimizer=ema", "--out_dir=out/sweep/ema"])


def test_a_folder_from_another_command_is_not_reused(fake_train, capsys):
    write_result(Path("runs") / "adamw_lr0.001", "adamw", max_steps=100)
    assert sweep.main(["--method", "adamw", "--lr", "1e-3", "--out", "runs", "--dry_run", "--max_steps=100"]) == 0
    assert "skip adamw_lr0.001" in capsys.readouterr().out
    assert sweep.main(["--method", "adamw", "--lr", "1e-3", "--out", "runs", "--dry_run", "--max_steps=200"]) == 1
    err = capsys.readouterr().err
    assert "runs/adamw_lr0.001 holds a run made with max_steps=100 (this sweep: 200)" in err


@pytest.mark.parametrize("args, message", [
    (["--lr", "1e-3,0.001"], "--lr: repeated value"),
    (["--lr", "-1"], "--lr: '-1' is not a number > 0"),
    (["--c", "0"], "--c: '0' is not a number > 0"),
    (["--kappa", "x"], "--kappa: 'x' is not None or a number >= 0"),
    (["--method", "sgd"], "--method: 'sgd' is not one of adamw, ema, pace"),
    (["--schedule", "cosine"], "--schedule: 'cosine' is not one of const, cos, wsd"),
    (["--seed", "1.5"], "--seed: '1.5' is not an integer >= 0"),
    (["--lambda_pullback=0.3"], "--lambda_pullback is set by the sweep: use --c"),
    (["--out_dir=x"], "--out_dir is set by the sweep: use --out"),
    (["--max_steps", "100"], "unrecognized argument '--max_steps'"),
    (["--config", "nowhere/{method}.py"], "--config: no file nowhere/adamw.py"),
    (["--nproc_per_node", "-2"], "--nproc_per_node must be >= 0"),
])
def test_bad_input_is_a_one_line_error(fake_train, capsys, args, message):
    assert sweep.main(["--dry_run", *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sweep.py: error: ") and message in err and err.count("\n") == 1


def test_evaluate_scores_each_finished_run_once(fake_train, monkeypatch, capsys):
    script = fake_train / "evaluate.py"  # a stand-in evaluate.py that logs its argv and writes the score
    script.write_text(
        "import json, os, sys\n"
        "with open('calls.log', 'a') as f:\n"
        "    f.write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "json.dump({'returned': 3.0}, open(os.path.join(sys.argv[1], 'eval_tuning.json'), 'w'))\n")
    monkeypatch.setattr(sweep, "EVALUATE", [str(script)])
    out = Path("runs")
    write_result(out / "adamw_lr0.001", "adamw", lr=0.001)          # complete, not scored yet
    write_result(out / "adamw_lr0.002", "adamw", lr=0.002)          # complete and scored
    (out / "adamw_lr0.002" / "eval_tuning.json").write_text("{}")
    grid = ["--method", "adamw", "--lr", "0.001,0.002,0.003,0.1", "--out", "runs", "--evaluate", "tuning"]
    assert sweep.main(grid) == 1  # lr 0.1 fails: it is not scored
    assert calls(fake_train) == [
        ["runs/adamw_lr0.001", "--part=tuning"],
        ["--optimizer=adamw", "--lr=0.003", "--out_dir=runs/adamw_lr0.003"],
        ["runs/adamw_lr0.003", "--part=tuning"],
        ["--optimizer=adamw", "--lr=0.1", "--out_dir=runs/adamw_lr0.1"],
    ]
    capsys.readouterr()
    assert sweep.main(grid) == 1
    assert calls(fake_train)[4:] == [["--optimizer=adamw", "--lr=0.1", "--out_dir=runs/adamw_lr0.1"]]
