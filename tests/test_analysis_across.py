"""studies/analysis.py across and compare: the studies of other schedules side by side, each against the
first study's adamw, and its plot of the test loss against alpha; groups of runs over seeds, each row against
the rows named. The code of the runs: runs of different code are refused in one table unless asked, a run
resumed by other code is code of its own, and runs made before a setting existed count with its default."""

import json
import math
import os
import statistics

import numpy as np
import pytest

from conftest import blends, cell, row, scored_run, write_result
from studies import analysis, results


# ----------------------------------------------------------------------------- across schedules

def study(folder, schedule, seeds, losses, lrs=None, scores=()):
    """A study folder of one schedule: selection.json and the test-half runs of each variant's selected lr;
    losses: [((method, config), [loss per seed])]."""
    folder.mkdir(parents=True)
    variants = {}
    for (method, config), by_seed in losses:
        for seed, loss in zip(seeds, by_seed):
            scored_run(folder, method, (lrs or {}).get(method, 1e-3), seed, "test", loss, schedule=schedule, scores=scores,
                       **config)
        name = " ".join([method] + [f"{results.SYMBOL[k]}={v}" for k, v in config.items()])
        variants[name] = {"lr": (lrs or {}).get(method, 1e-3), "tuning_loss": 3.0, "on_edge": False}
    (folder / "selection.json").write_text(json.dumps({"seed": 1337, "variants": variants}))
    return folder


ADAMW, EMA, PACE = ("adamw", {}), ("ema", {"ema_kappa": 0.5}), ("pace", {"lambda_pullback": 0.5, "ema_kappa": 0.5})


def test_across_schedules_each_against_the_first_study_s_adamw(tmp_path, capsys):
    cos = study(tmp_path / "cpu300", "cos", (1, 2, 3), [(ADAMW, [3.00, 3.10, 3.20]), (EMA, [3.01, 3.11, 3.21]),
                                                        (PACE, [2.90, 3.00, 3.05]),
                                                        (("pace", {"lambda_pullback": 0.15, "ema_kappa": 0.5}), [4, 4, 4])])
    const = study(tmp_path / "const", "const", (2, 3, 4), [(ADAMW, [3.30, 3.35, 3.40]), (EMA, [3.15, 3.20, 3.30]),
                                                           (PACE, [3.05, 3.12, 3.30])], lrs={"pace": 4e-3})
    assert analysis.main(["across", str(cos), str(const)]) == 0
    out = capsys.readouterr().out
    assert f"| variant | cos ({cos}) | const ({const}) |" in out
    assert row(out, "adamw")[1:] == [cell(3.1, 0.1, 3) + ", lr 0.001", cell(3.35, 0.05, 3) + ", lr 0.001"]
    assert row(out, "pace c=0.5 κ=0.5")[2] == cell(statistics.fmean([3.05, 3.12, 3.30]), statistics.stdev([3.05, 3.12, 3.30]), 3) + ", lr 0.004"
    assert "Not selected in every folder, left out: pace c=0.15 κ=0.5" in out
    differences = out.split("Δ = ")[1]
    ema = {2: 3.15, 3: 3.20, 4: 3.30}
    unpaired = math.sqrt(statistics.variance(ema.values()) / 3 + 0.1 ** 2 / 3)
    paired = [3.15 - 3.10, 3.20 - 3.20]  # seeds 2 and 3: the ones both studies ran
    assert row(differences, "ema κ=0.5")[1] == (
        f"{statistics.fmean(ema.values()) - 3.1:+.4f} ± {unpaired:.4f}; paired {statistics.fmean(paired):+.4f} ± "
        f"{statistics.stdev(paired) / math.sqrt(2):.4f} (lower on 0 of 2 seeds)")
    assert row(differences, "adamw")[1].endswith("(lower on 0 of 2 seeds)")
    assert "No test-half blends in these folders" in out
    assert analysis.main(["across", str(cos), str(const)]) == 0
    assert capsys.readouterr().out == out  # the same files, the same tables


def test_across_a_folder_of_two_schedules_is_an_error(tmp_path, capsys):
    mixed = study(tmp_path / "mixed", "cos", (1,), [(ADAMW, [3.0])])
    write_result(mixed / "wsd_run", "adamw", schedule="wsd")
    assert analysis.main(["across", str(mixed)]) == 1
    assert f"across: the runs under {mixed} have the schedules cos, wsd: one per folder" in capsys.readouterr().err


def test_across_plots_the_test_loss_against_alpha(tmp_path, capsys):
    pytest.importorskip("matplotlib", exc_type=ImportError)
    # blends in the const study only: one panel
    cos = study(tmp_path / "cos", "cos", (1, 2), [(ADAMW, [3.0, 3.1]), (EMA, [3.0, 3.1]), (PACE, [2.9, 3.0])])
    study(tmp_path / "const", "const", (2, 3), [(ADAMW, [3.3, 3.4]), (EMA, [3.2, 3.2]), (PACE, [3.2, 3.2])],
          scores=blends(3.3, 3.2, 3.1, 3.15, 3.2))
    assert analysis.main(["across", str(cos), str(tmp_path / "const")]) == 0
    assert capsys.readouterr().out.endswith(f"\nplot: {os.path.relpath(tmp_path / 'test_vs_alpha.png')}\n")
    import matplotlib.colors
    import matplotlib.image
    image = matplotlib.image.imread(tmp_path / "test_vs_alpha.png")
    assert image.shape == (3.4 * 150, 4.2 * 150, 4)  # one panel: the study with blends
    for color in ("tab:blue", "tab:red", "tab:gray"):  # ema, pace, adamw's returned model
        assert (np.abs(image[..., :3] - matplotlib.colors.to_rgb(color)).max(-1) < 0.02).sum() > 100, color


def test_across_without_matplotlib_still_prints_the_tables(tmp_path, capsys, no_matplotlib):
    cos = study(tmp_path / "cos", "cos", (1, 2), [(ADAMW, [3.0, 3.1])])
    assert analysis.main(["across", str(cos)]) == 0
    out = capsys.readouterr().out
    assert row(out, "adamw")[1] == cell(3.05, statistics.stdev([3.0, 3.1]), 2) + ", lr 0.001"
    assert "matplotlib is not installed: no plot" in out


# ----------------------------------------------------------------------------- the code of the runs

def test_runs_of_different_code_are_refused_in_one_table_unless_asked(tmp_path, capsys):
    selected = {"seed": 1337, "variants": {"adamw": {"lr": 1e-3, "tuning_loss": 3.0, "on_edge": False}}}
    (tmp_path / "selection.json").write_text(json.dumps(selected))
    scored_run(tmp_path, "adamw", 1e-3, 1337, "tuning", 3.0, code="a" * 40)
    scored_run(tmp_path, "adamw", 1e-3, 2, "test", 3.1, code="a" * 40)
    scored_run(tmp_path, "adamw", 1e-3, 3, "test", 3.2, code="b" * 40)
    scored_run(tmp_path, "adamw", 1e-3, 4, "test", 3.3)  # made before runs recorded their code
    assert analysis.main(["select", str(tmp_path)]) == 0  # the tuning half's runs: one code
    assert "Mixed code" not in capsys.readouterr().out
    for command in (["report", str(tmp_path)], ["across", str(tmp_path)], ["summarize", str(tmp_path), "--no_plot"]):
        assert analysis.main(command) == 1
        err = capsys.readouterr().err
        assert "runs of different code: " in err and "bbbbbbbbbb (1 run)" in err and "unknown (1 run)" in err, err
        assert "--allow_mixed_code" in err
    assert analysis.main(["report", str(tmp_path), "--allow_mixed_code"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Mixed code (--allow_mixed_code): {tmp_path}, test half: runs of different code: "
                          "aaaaaaaaaa (1 run); bbbbbbbbbb (1 run); unknown (1 run)\n")
    assert row(out, "adamw")[2] == "2, 3, 4"


def test_a_run_resumed_by_other_code_is_code_of_its_own(tmp_path):
    write_result(tmp_path / "a", "adamw", code="a" * 40)
    result = json.loads((tmp_path / "a" / "result.json").read_text())
    result["code"].append({"from_step": 5, "commit": "b" * 40, "dirty": True, "diff_sha256": "c" * 64})
    assert results.run_code(result) == "aaaaaaaaaa then bbbbbbbbbb+dirty:cccccccccc"
    assert results.run_code({"config": {}, "summary": {}}) == "unknown"


def test_runs_made_before_a_setting_existed_count_with_its_default(tmp_path, capsys):
    write_result(tmp_path / "old", "pace", loss=3.0, seed=0)  # made before pullback_params existed
    write_result(tmp_path / "new", "pace", loss=3.2, seed=1, pullback_params="all")
    write_result(tmp_path / "embedding", "pace", loss=3.9, seed=0, pullback_params="embedding")
    assert analysis.main(["summarize", str(tmp_path), "--no_plot"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| 0.001")]
    assert rows == ["| 0.001 | cos | all | 3.1000 ± 0.1414 (n=2) [c=0.15 κ=0.2] | – |",
                    "| 0.001 | cos | embedding | 3.9000 (n=1) [c=0.15 κ=0.2] | – |"]


# ----------------------------------------------------------------------------- compare

def test_compare_rows_of_runs_over_seeds_each_against_the_named_rows(tmp_path, capsys):
    for s in (2, 3, 4):
        scored_run(tmp_path / "a", "ema", 1e-3, s, "test", 3.0 + s / 100, 3.1, ema_kappa=0.5)
    for s in (2, 3, 4, 5):
        scored_run(tmp_path / "b", "pace", 4e-3, s, "test", 2.9 + s / 50, 3.2, lambda_pullback=0.5, ema_kappa=0.5,
                   pullback_params="embedding")
    scored_run(tmp_path / "a", "ema", 1e-3, 1337, "tuning", 3.0, ema_kappa=0.5)  # not scored on the test half
    assert analysis.main(["compare", f"ema={tmp_path}/a/ema*", f"embedding={tmp_path}/b/*", "--against=ema,embedding"]) == 0
    out = capsys.readouterr().out
    pace = {s: 2.9 + s / 50 for s in (2, 3, 4, 5)}
    assert row(out, "ema")[1:4] == ["0.001", "2, 3, 4", cell(3.03, 0.01, 3)]
    assert row(out, "embedding")[1:5] == ["0.004", "2, 3, 4, 5", cell(statistics.fmean(pace.values()),
                                                                      statistics.stdev(pace.values()), 4), cell(3.2, 0.0, 4)]
    assert row(out, "embedding")[7] == results.difference(pace, {s: 3.0 + s / 100 for s in (2, 3, 4)})
    assert row(out, "embedding")[7].endswith("(lower on 3 of 3 seeds)") and row(out, "embedding")[8] == "–"
    assert f"| {tmp_path}/a/ema_lr0.001_ema_kappa0.5_seed1337 | completed | not scored on the test half" in out


@pytest.mark.parametrize("rows, error", [
    (["x=nothing/*"], "'x=nothing/*': expected LABEL=GLOB"),
    (["{a}"], "expected LABEL=GLOB"),
    (["mixed={a}/*,{b}/*"], "the runs of 'mixed' differ in more than their seed"),
    (["a={a}/*", "--against=b"], "--against names no row: b"),
])
def test_compare_refuses_rows_it_cannot_tabulate(tmp_path, capsys, rows, error):
    scored_run(tmp_path / "a", "ema", 1e-3, 2, "test", 3.0, ema_kappa=0.5)
    scored_run(tmp_path / "b", "ema", 2e-3, 2, "test", 3.0, ema_kappa=0.5)
    assert analysis.main(["compare", *(r.format(a=tmp_path / "a", b=tmp_path / "b") for r in rows)]) == 1
    assert error in capsys.readouterr().err


def test_compare_refuses_runs_of_different_code_unless_asked(tmp_path, capsys):
    scored_run(tmp_path / "a", "ema", 1e-3, 2, "test", 3.0, code="a" * 40, ema_kappa=0.5)
    scored_run(tmp_path / "b", "pace", 4e-3, 2, "test", 3.0, code="b" * 40, lambda_pullback=0.5, ema_kappa=0.5)
    rows = [f"ema={tmp_path}/a/*", f"pace={tmp_path}/b/*"]
    assert analysis.main(["compare", *rows]) == 1
    assert "the rows: runs of different code: aaaaaaaaaa (1 run); bbbbbbbbbb (1 run)" in capsys.readouterr().err
    assert analysis.main(["compare", *rows, "--allow_mixed_code"]) == 0
    assert capsys.readouterr().out.startswith("Mixed code (--allow_mixed_code): the rows: runs of different code")
