"""sweep.py: the grid, the skip/resume plan, the printed commands, and the summary of result.json files."""

import json
import math
import shlex
import statistics
import sys
from pathlib import Path

import pytest

import sweep

# ----------------------------------------------------------------------------- helpers

BASE = {"lr": 0.001, "schedule": "cos", "max_steps": 100, "lambda_pullback": 0.15, "ema_kappa": 0.2, "seed": 0}


def write_result(path, optimizer, status="completed", loss=3.0, error=None, evals=(), **config):
    """A result.json as train.py writes it (only the fields sweep.py reads matter)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    summary = {"status": status, "final_val_loss": loss if status == "completed" else None}
    if error is not None:
        summary["error"] = error
    result = {"config": {**BASE, "optimizer": optimizer, "out_dir": str(path), **config}, "summary": summary,
              "eval_logs": [{"step": s, "val_loss": v, "ema_val_loss": v, "vanilla_val_loss": v} for s, v in evals],
              "step_logs": []}
    (path / "result.json").write_text(json.dumps(result))


def summarize(folder, capsys, *args):
    assert sweep.main(["summarize", str(folder), *args]) == 0
    return capsys.readouterr()


def row(text, first_cell):
    """The markdown table row whose first cell is first_cell, as a list of cells."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in\n{text}")


def cell(mean, std, n):
    return f"{mean:.4f} ± {std:.4f} (n={n})"


# ----------------------------------------------------------------------------- summarize

def test_summary_mean_std_and_pace_difference(tmp_path, capsys):
    losses = {"adamw": [3.30, 3.20, 3.40], "ema": [3.10, 3.15, 3.05], "pace": [3.00, 3.02, 2.95]}
    for method, xs in losses.items():
        for seed, x in enumerate(xs):
            write_result(tmp_path / f"{method}_{seed}", method, loss=x, seed=seed)
    # at another lr only two seeds of each, and PACE worse than AdamW there
    for method, xs in {"adamw": [3.5, 3.6], "ema": [3.7, 3.8], "pace": [3.9, 4.0]}.items():
        for seed, x in enumerate(xs):
            write_result(tmp_path / f"hi_{method}_{seed}", method, loss=x, seed=seed, lr=0.003)

    out = summarize(tmp_path, capsys, "--no_plot").out
    cells = row(out, "0.001")
    assert cells[1] == "cos"
    assert cells[2] == cell(statistics.fmean(losses["adamw"]), statistics.stdev(losses["adamw"]), 3)
    assert cells[3] == cell(3.10, 0.05, 3) + " [κ=0.2]"
    assert cells[4] == cell(statistics.fmean(losses["pace"]), statistics.stdev(losses["pace"]), 3) + " [c=0.15 κ=0.2]"
    se = math.sqrt(statistics.variance(losses["pace"]) / 3 + statistics.variance(losses["ema"]) / 3)
    assert cells[5] == f"{statistics.fmean(losses['pace']) - 3.10:+.4f} ± {se:.4f} vs ema"
    # the best baseline is picked per setting: AdamW at lr 0.003
    assert row(out, "0.003")[5].startswith(f"{3.95 - 3.55:+.4f} ± ") and row(out, "0.003")[5].endswith("vs adamw")
    assert "Runs not in the tables" not in out
    assert "Every variant" not in out  # one variant per method: nothing was selected


def test_incomplete_failed_and_unparsable_runs_are_listed_not_counted(tmp_path, capsys):
    write_result(tmp_path / "a0", "adamw", loss=3.0, seed=0)
    write_result(tmp_path / "a1", "adamw", loss=3.2, seed=1)
    write_result(tmp_path / "running", "adamw", status="running", seed=2, evals=[(50, 3.9), (100, 3.7)])
    write_result(tmp_path / "fresh", "pace", status="running", seed=0)
    write_result(tmp_path / "nan", "pace", status="failed", error="non-finite loss at step 12\nTraceback ...", seed=1)
    write_result(tmp_path / "noloss", "ema", status="completed", loss=None)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "result.json").write_text('{"config": {"optimizer": "pa')
    (tmp_path / "nested" / "empty").mkdir(parents=True)
    (tmp_path / "nested" / "empty" / "result.json").write_text("[]")

    out = summarize(tmp_path, capsys, "--no_plot").out
    assert row(out, "0.001")[2] == cell(3.1, statistics.stdev([3.0, 3.2]), 2)  # running/failed runs not pooled in
    assert row(out, "0.001")[3:] == ["–", "–", "–"]  # ema and pace have no complete run
    assert "Runs not in the tables (6)" in out
    assert row(out, "running")[1:] == ["running", "last eval at step 100: val_loss 3.7000"]
    assert row(out, "fresh")[1:] == ["running", "no evaluation yet"]
    assert row(out, "nan")[1:] == ["failed", "non-finite loss at step 12 Traceback ..."]
    assert row(out, "noloss")[1:] == ["completed", "final_val_loss is None"]
    assert row(out, "broken")[1] == "unparsable"
    assert "JSONDecodeError" in row(out, "broken")[2]
    assert row(out, "nested/empty")[1:] == ["unparsable", "no 'config' and 'summary' objects"]


def test_variants_best_per_method_and_every_variant(tmp_path, capsys):
    for seed in (0, 1):
        write_result(tmp_path / f"adamw{seed}", "adamw", loss=3.5, seed=seed, ema_kappa=0.5)  # κ does not apply
        write_result(tmp_path / f"ema{seed}", "ema", loss=3.4 - 0.1 * seed, seed=seed)
        write_result(tmp_path / f"pace_c1_{seed}", "pace", loss=3.30 + 0.02 * seed, seed=seed, lambda_pullback=0.1)
        write_result(tmp_path / f"pace_c3_{seed}", "pace", loss=3.20 + 0.02 * seed, seed=seed, lambda_pullback=0.3)
    out = summarize(tmp_path, capsys, "--no_plot").out
    main = row(out, "0.001")
    assert main[2] == cell(3.5, 0.0, 2)  # the adamw runs pool although their unused κ differs
    assert main[4].endswith("[c=0.3 κ=0.2]") and main[4].startswith("3.2100 ± 0.0141 (n=2)")
    assert main[5].startswith(f"{3.21 - 3.35:+.4f} ± ") and main[5].endswith("vs ema")
    assert "Every variant" in out
    detail = [line for line in out.splitlines() if line.startswith("| 0.001 | cos | pace")]
    assert [c.split("|")[4].strip() for c in detail] == ["c=0.1 κ=0.2", "c=0.3 κ=0.2"]
    assert f"{3.31 - 3.35:+.4f}" in detail[0]


def test_settings_that_differ_are_columns_and_never_pooled(tmp_path, capsys):
    write_result(tmp_path / "short", "adamw", loss=3.9, max_steps=100)
    write_result(tmp_path / "long", "adamw", loss=3.1, max_steps=1000)
    write_result(tmp_path / "long_pace", "pace", loss=3.0, max_steps=1000, schedule="wsd")
    out = summarize(tmp_path, capsys, "--no_plot").out
    header = [c.strip() for c in out.splitlines()[2].strip("|").split("|")]
    assert header[:3] == ["lr", "schedule", "max_steps"]
    rows = [line for line in out.splitlines() if line.startswith("| 0.001")]
    assert [r.split("|")[2:4] for r in rows] == [[" cos ", " 100 "], [" cos ", " 1000 "], [" wsd ", " 1000 "]]
    assert "3.9000 (n=1)" in rows[0] and "3.1000 (n=1)" in rows[1] and "3.0000 (n=1)" in rows[2]
    assert rows[2].endswith("| – |")  # no baseline in that setting


def test_summarize_without_results_is_an_error(tmp_path, capsys):
    assert sweep.main(["summarize", str(tmp_path)]) == 1
    assert "no result.json under" in capsys.readouterr().err


def test_plot_png(tmp_path, capsys):
    pytest.importorskip("matplotlib", exc_type=ImportError)
    for lr in (1e-3, 3e-3):
        for method in sweep.METHODS:
            for seed in (0, 1):
                write_result(tmp_path / f"{method}_{lr}_{seed}", method, loss=3 + lr * 100 + seed * 0.01, lr=lr, seed=seed)
    err = summarize(tmp_path, capsys).err
    png = tmp_path / "loss_vs_lr.png"
    assert f"plot: {png}" in err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_matplotlib_table_still_complete(tmp_path, capsys, no_matplotlib):
    write_result(tmp_path / "a", "adamw", loss=3.0)
    captured = summarize(tmp_path, capsys)
    assert "matplotlib is not installed" in captured.err
    assert row(captured.out, "0.001")[2] == "3.0000 (n=1)"
    assert not (tmp_path / "loss_vs_lr.png").exists()


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

    assert sweep.main(["run", *grid, "--dry_run"]) == 0
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
    assert sweep.main(["run", *grid, "--dry_run", "--skip_failed"]) == 0
    assert "# [3/6] skip-failed adamw_lr0.001_seed1: failed, left alone (--skip_failed)" in capsys.readouterr().out

    # a real run executes exactly the printed commands, and then everything is complete
    assert sweep.main(["run", *grid]) == 0
    ran = [shlex.join([sys.executable, "train.py", *argv]) for argv in calls(fake_train)]
    assert ran == [line for line in printed if not line.startswith("#")]
    capsys.readouterr()
    assert sweep.main(["run", *grid]) == 0
    assert len(calls(fake_train)) == 5  # nothing ran again
    rerun = capsys.readouterr().out.splitlines()
    assert rerun[0] == "# sweep of 6 runs in runs: 6 skip, 0 skip-failed, 0 resume, 0 restart, 0 start"
    assert len(rerun) == 7


def test_failed_run_does_not_stop_the_sweep(fake_train, capsys):
    (fake_train / "c").mkdir()
    (fake_train / "c" / "adamw.py").write_text("")
    assert sweep.main(["run", "--method", "adamw", "--lr", "0.1,0.001", "--out", "runs", "--config", "c/{method}.py"]) == 1
    captured = capsys.readouterr()
    assert [argv[:2] for argv in calls(fake_train)] == [["c/adamw.py", "--optimizer=adamw"]] * 2
    assert "1 run(s) exited with an error: adamw_lr0.1" in captured.err
    assert (fake_train / "runs" / "adamw_lr0.001" / "result.json").exists()


def test_torchrun_command(fake_train, capsys):
    assert sweep.main(["run", "--method", "ema", "--nproc_per_node", "8", "--dry_run"]) == 0
    assert capsys.readouterr().out.splitlines()[2] == shlex.join(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=8", "train.py",
         "--optimizer=ema", "--out_dir=runs/sweep/ema"])


def test_a_folder_from_another_command_is_not_reused(fake_train, capsys):
    write_result(Path("runs") / "adamw_lr0.001", "adamw", max_steps=100)
    assert sweep.main(["run", "--method", "adamw", "--lr", "1e-3", "--out", "runs", "--dry_run", "--max_steps=100"]) == 0
    assert "skip adamw_lr0.001" in capsys.readouterr().out
    assert sweep.main(["run", "--method", "adamw", "--lr", "1e-3", "--out", "runs", "--dry_run", "--max_steps=200"]) == 1
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
    assert sweep.main(["run", "--dry_run", *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sweep.py: error: ") and message in err and err.count("\n") == 1


# ----------------------------------------------------------------------------- curves of single runs

def test_curves_of_runs(tiny_run, tmp_path, capsys):
    pytest.importorskip("matplotlib", exc_type=ImportError)
    result = json.loads((tiny_run / "result.json").read_text())  # a real run's
    with_telemetry = json.loads(json.dumps(result))
    for s in with_telemetry["step_logs"][1:]:
        s.update({key: 0.5 for key in sweep.TELEMETRY})
    with_telemetry["config"]["optimizer"] = "ema"
    for name, r in (("pace", result), ("ema", with_telemetry)):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "result.json").write_text(json.dumps(r))

    runs = sweep.load_runs([tmp_path / "runs" / "pace", tmp_path / "runs" / "ema" / "result.json"])
    assert [label for label, _ in runs] == ["pace", "ema"]
    assert sweep.load_runs([tmp_path / "runs" / "pace"])[0][0] == "pace"
    (tmp_path / "other" / "pace").mkdir(parents=True)
    (tmp_path / "other" / "pace" / "result.json").write_text(json.dumps(result))
    labels = [label for label, _ in sweep.load_runs([tmp_path / "runs" / "pace", tmp_path / "other" / "pace"])]
    assert labels == ["runs/pace", "other/pace"]  # what tells them apart
    assert sweep.plot_curves(runs[:1], tmp_path / "one.png") == ["val_loss", "loss"]
    assert sweep.plot_curves(runs, tmp_path / "two.png") == ["val_loss", "loss", *sweep.TELEMETRY]
    for png in ("one.png", "two.png"):
        data = (tmp_path / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000

    assert sweep.main(["curves", str(tmp_path / "runs" / "pace"), str(tmp_path / "runs" / "ema")]) == 0
    assert capsys.readouterr().out == f"curves: {tmp_path / 'runs' / 'curves.png'}\n"
    assert (tmp_path / "runs" / "curves.png").stat().st_size > 20_000
    assert sweep.main(["curves", str(tmp_path / "runs" / "ema" / "result.json")]) == 0  # one run: the PNG beside it
    assert capsys.readouterr().out == f"curves: {tmp_path / 'runs' / 'ema' / 'curves.png'}\n"


def test_curves_of_a_missing_run_is_an_error(tmp_path, capsys):
    assert sweep.main(["curves", str(tmp_path / "nothing")]) == 1
    assert capsys.readouterr().err.startswith(f"sweep.py: error: curves: {tmp_path / 'nothing' / 'result.json'}: ")


def test_evaluate_scores_each_finished_run_once(fake_train, monkeypatch, capsys):
    script = fake_train / "evaluate.py"  # a stand-in evaluate.py that logs its argv and writes the score
    script.write_text(
        "import json, os, sys\n"
        "with open('calls.log', 'a') as f:\n"
        "    f.write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "json.dump({'returned': 3.0}, open(os.path.join(sys.argv[1], 'eval_tuning.json'), 'w'))\n")
    monkeypatch.setattr(sweep, "EVALUATE_PY", script)
    out = Path("runs")
    write_result(out / "adamw_lr0.001", "adamw", lr=0.001)          # complete, not scored yet
    write_result(out / "adamw_lr0.002", "adamw", lr=0.002)          # complete and scored
    (out / "adamw_lr0.002" / "eval_tuning.json").write_text("{}")
    grid = ["run", "--method", "adamw", "--lr", "0.001,0.002,0.003,0.1", "--out", "runs", "--evaluate", "tuning"]
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


# ----------------------------------------------------------------------------- select and report

def scored_run(folder, method, lr, seed, part, returned, last=None, **config):
    """A completed run with its eval_PART.json; its final_val_loss (1.0) is lower than any score, so
    a choice made from result.json instead of the half's score shows."""
    path = folder / f"{method}_lr{lr}_{'_'.join(f'{k}{v}' for k, v in config.items())}_seed{seed}"
    write_result(path, method, loss=1.0, lr=lr, seed=seed, **config)
    (path / f"eval_{part}.json").write_text(json.dumps({"returned": returned, "last": returned if last is None else last}))
    return path


def test_select_best_lr_per_variant_on_the_tuning_half(tmp_path, capsys):
    for lr, loss in ((1e-3, 3.2), (2e-3, 3.0), (4e-3, 3.1)):
        scored_run(tmp_path, "adamw", lr, 1337, "tuning", loss)
    scored_run(tmp_path, "adamw", 1e-3, 1, "tuning", 2.0)       # another seed: not a choice
    scored_run(tmp_path, "adamw", 8e-3, 1337, "test", 2.0)      # scored on the test half only: not seen
    for lr, loss in ((2e-3, 3.3), (4e-3, 3.1)):
        scored_run(tmp_path, "pace", lr, 1337, "tuning", loss, lambda_pullback=0.5)
    scored_run(tmp_path, "pace", 2e-3, 1337, "tuning", 2.9, lambda_pullback=0.15)
    assert sweep.main(["select", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert row(out, "adamw") == ["adamw", "3.2000", "**3.0000**", "3.1000", "0.002", "selected"]
    assert row(out, "pace c=0.5 κ=0.2") == ["pace c=0.5 κ=0.2", "–", "3.3000", "**3.1000**", "0.004", "run lr 0.008"]
    assert row(out, "pace c=0.15 κ=0.2")[-2:] == ["0.002", "run lr 0.001 and 0.004"]
    assert "adamw_lr0.008__seed1337 | completed | not scored on the tuning half" in out
    selection = json.loads((tmp_path / "selection.json").read_text())
    assert selection["variants"]["adamw"] == {"lr": 0.002, "tuning_loss": 3.0, "on_edge": False}
    assert selection["variants"]["pace c=0.5 κ=0.2"]["on_edge"]
    assert (tmp_path / "tuning_vs_lr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_select_without_matplotlib_still_selects(tmp_path, capsys, no_matplotlib):
    scored_run(tmp_path, "adamw", 1e-3, 1337, "tuning", 3.0)
    assert sweep.main(["select", str(tmp_path)]) == 0
    assert "matplotlib is not installed" in capsys.readouterr().out
    assert (tmp_path / "selection.json").exists() and not (tmp_path / "tuning_vs_lr.png").exists()


def test_select_refuses_variants_that_differ_in_another_setting(tmp_path, capsys):
    scored_run(tmp_path, "adamw", 1e-3, 1337, "tuning", 3.0)
    scored_run(tmp_path, "adamw", 2e-3, 1337, "tuning", 3.0, max_steps=300)
    assert sweep.main(["select", str(tmp_path)]) == 1
    assert "the runs of adamw differ in max_steps" in capsys.readouterr().err


def test_report_the_selected_settings_on_the_test_half(tmp_path, capsys):
    assert sweep.main(["report", str(tmp_path)]) == 1
    assert "run sweep.py select first" in capsys.readouterr().err
    scored_run(tmp_path, "adamw", 2e-3, 1337, "tuning", 3.0)
    scored_run(tmp_path, "adamw", 4e-3, 1337, "tuning", 3.1)
    scored_run(tmp_path, "adamw", 1e-3, 1337, "tuning", 3.2)
    scored_run(tmp_path, "pace", 4e-3, 1337, "tuning", 2.9, lambda_pullback=0.5)
    scored_run(tmp_path, "pace", 2e-3, 1337, "tuning", 3.0, lambda_pullback=0.5)
    scored_run(tmp_path, "pace", 8e-3, 1337, "tuning", 3.0, lambda_pullback=0.5)
    assert sweep.main(["select", str(tmp_path)]) == 0
    adamw, adamw_last = [3.10, 3.00, 3.20], [3.15, 3.05, 3.25]
    pace, pace_last = [3.05, 2.90, 3.20], [3.30, 3.20, 3.40]
    for seed in (1, 2, 3):
        scored_run(tmp_path, "adamw", 2e-3, seed, "test", adamw[seed - 1], adamw_last[seed - 1])
        scored_run(tmp_path, "pace", 4e-3, seed, "test", pace[seed - 1], pace_last[seed - 1], lambda_pullback=0.5)
    scored_run(tmp_path, "pace", 2e-3, 1, "test", 1.5, lambda_pullback=0.5)  # not the selected lr: not reported
    capsys.readouterr()
    assert sweep.main(["report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    sd = statistics.stdev
    se = math.sqrt(sd(pace) ** 2 / 3 + sd(adamw) ** 2 / 3)
    diff = statistics.fmean(pace) - statistics.fmean(adamw)
    assert row(out, "pace c=0.5 κ=0.2") == [
        "pace c=0.5 κ=0.2", "0.004", "1, 2, 3", cell(statistics.fmean(pace), sd(pace), 3),
        cell(statistics.fmean(pace_last), sd(pace_last), 3), f"{diff:+.4f} ± {se:.4f} (lower on 2 of 3 seeds)"]
    assert row(out, "adamw")[1:5] == ["0.002", "1, 2, 3", cell(3.1, 0.1, 3), cell(3.15, 0.1, 3)]
    assert row(out, "adamw")[5] == "–"
    assert "Not final: the selected lr of pace c=0.5 κ=0.2 lies on an edge" not in out
    scored_run(tmp_path, "pace", 1.6e-2, 1337, "tuning", 2.8, lambda_pullback=0.5)  # better beyond the old edge
    assert sweep.main(["select", str(tmp_path)]) == 0
    capsys.readouterr()
    assert sweep.main(["report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Not final: the selected lr of pace c=0.5 κ=0.2 lies on an edge of its grid" in out
    assert "Selected but not yet scored on the test half: pace c=0.5 κ=0.2" in out
