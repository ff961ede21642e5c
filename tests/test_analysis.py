"""studies/analysis.py: the summary tables, select (with its tie rule) and report (paired and unpaired
standard errors, bits per byte, the blends and PACE's gains). across and compare: test_analysis_across.py."""

import json
import math
import statistics

import pytest

from conftest import blends, cell, row, scored_run, write_result
from studies import analysis, results


def summarize(folder, capsys, *args):
    assert analysis.main(["summarize", str(folder), *args]) == 0
    return capsys.readouterr()


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
    assert analysis.main(["summarize", str(tmp_path)]) == 1
    assert "no result.json under" in capsys.readouterr().err


def test_plot_png(tmp_path, capsys):
    pytest.importorskip("matplotlib", exc_type=ImportError)
    for lr in (1e-3, 3e-3):
        for method in results.METHODS:
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

# ----------------------------------------------------------------------------- select and report

def test_select_best_lr_per_variant_on_the_tuning_half(tmp_path, capsys):
    for lr, loss in ((1e-3, 3.2), (2e-3, 3.0), (4e-3, 3.1)):
        scored_run(tmp_path, "adamw", lr, 1337, "tuning", loss)
    scored_run(tmp_path, "adamw", 1e-3, 1, "tuning", 2.0)       # another seed: not a choice
    scored_run(tmp_path, "adamw", 8e-3, 1337, "test", 2.0)      # scored on the test half only: not seen
    for lr, loss in ((2e-3, 3.3), (4e-3, 3.1)):
        scored_run(tmp_path, "pace", lr, 1337, "tuning", loss, lambda_pullback=0.5)
    scored_run(tmp_path, "pace", 2e-3, 1337, "tuning", 2.9, lambda_pullback=0.15)
    assert analysis.main(["select", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert row(out, "adamw") == ["adamw", "3.2000", "**3.0000**", "3.1000", "0.002", "selected"]
    assert row(out, "pace c=0.5 κ=0.2") == ["pace c=0.5 κ=0.2", "–", "3.3000", "**3.1000**", "0.004", "run lr 0.008"]
    assert row(out, "pace c=0.15 κ=0.2")[-2:] == ["0.002", "run lr 0.001 and 0.004"]
    assert "adamw_lr0.008__seed1337 | completed | not scored on the tuning half" in out
    selection = json.loads((tmp_path / "selection.json").read_text())
    assert selection["variants"]["adamw"] == {"lr": 0.002, "tuning_loss": 3.0, "seeds": [1337], "tie": None,
                                              "on_edge": False, "next": None}
    assert selection["variants"]["pace c=0.5 κ=0.2"]["on_edge"]
    assert selection["variants"]["pace c=0.5 κ=0.2"]["next"] == "run lr 0.008"
    assert "Ties" not in out  # 0.1 and 0.2 nats apart: no tie
    assert (tmp_path / "tuning_vs_lr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_select_without_matplotlib_still_selects(tmp_path, capsys, no_matplotlib):
    scored_run(tmp_path, "adamw", 1e-3, 1337, "tuning", 3.0)
    assert analysis.main(["select", str(tmp_path)]) == 0
    assert "matplotlib is not installed" in capsys.readouterr().out
    assert (tmp_path / "selection.json").exists() and not (tmp_path / "tuning_vs_lr.png").exists()


def test_select_refuses_variants_that_differ_in_another_setting(tmp_path, capsys):
    scored_run(tmp_path, "adamw", 1e-3, 1337, "tuning", 3.0)
    scored_run(tmp_path, "adamw", 2e-3, 1337, "tuning", 3.0, max_steps=300)
    assert analysis.main(["select", str(tmp_path)]) == 1
    assert "the runs of adamw differ in max_steps" in capsys.readouterr().err


def test_report_the_selected_settings_on_the_test_half(tmp_path, capsys):
    assert analysis.main(["report", str(tmp_path)]) == 1
    assert "run studies/analysis.py select first" in capsys.readouterr().err
    scored_run(tmp_path, "adamw", 2e-3, 1337, "tuning", 3.0)
    scored_run(tmp_path, "adamw", 4e-3, 1337, "tuning", 3.1)
    scored_run(tmp_path, "adamw", 1e-3, 1337, "tuning", 3.2)
    scored_run(tmp_path, "pace", 4e-3, 1337, "tuning", 2.9, lambda_pullback=0.5)
    scored_run(tmp_path, "pace", 2e-3, 1337, "tuning", 3.0, lambda_pullback=0.5)
    scored_run(tmp_path, "pace", 8e-3, 1337, "tuning", 3.0, lambda_pullback=0.5)
    assert analysis.main(["select", str(tmp_path)]) == 0
    adamw, adamw_last = [3.10, 3.00, 3.20], [3.15, 3.05, 3.25]
    pace, pace_last = [3.05, 2.90, 3.20], [3.30, 3.20, 3.40]
    half = {"tokens": 1000, "bytes": 2900}
    for seed in (1, 2, 3):
        scored_run(tmp_path, "adamw", 2e-3, seed, "test", adamw[seed - 1], adamw_last[seed - 1], scores=half)
        scored_run(tmp_path, "pace", 4e-3, seed, "test", pace[seed - 1], pace_last[seed - 1], lambda_pullback=0.5,
                   scores=half if seed > 1 else {})  # an older eval file, without bytes
    scored_run(tmp_path, "pace", 2e-3, 1, "test", 1.5, lambda_pullback=0.5)  # not the selected lr: not reported
    capsys.readouterr()
    assert analysis.main(["report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    sd, mean = statistics.stdev, statistics.fmean
    se = math.sqrt(sd(pace) ** 2 / 3 + sd(adamw) ** 2 / 3)
    diffs = [p - a for p, a in zip(pace, adamw)]  # -0.05, -0.10, 0.00: paired, the seeds' shared part cancels
    paired_se = sd(diffs) / math.sqrt(3)
    assert paired_se < se / 2
    assert row(out, "pace c=0.5 κ=0.2") == [
        "pace c=0.5 κ=0.2", "0.004", "1, 2, 3", cell(mean(pace), sd(pace), 3), cell(mean(pace_last), sd(pace_last), 3),
        "–", "–",  # seed 1's eval file has no bytes
        f"{mean(pace) - mean(adamw):+.4f} ± {se:.4f}; paired {mean(diffs):+.4f} ± {paired_se:.4f} (lower on 2 of 3 seeds)"]
    bpb = [x * 1000 / (2900 * math.log(2)) for x in adamw]
    assert row(out, "adamw")[1:7] == ["0.002", "1, 2, 3", cell(3.1, 0.1, 3), cell(3.15, 0.1, 3),
                                      cell(mean(bpb), sd(bpb), 3), cell(mean(bpb) + 0.05 / (2.9 * math.log(2)), sd(bpb), 3)]
    assert row(out, "adamw")[7] == "–"
    averaged = out.split("What the average adds")[1]
    gains = [p - last for p, last in zip(pace, pace_last)]  # -0.25, -0.30, -0.20
    assert row(averaged, "pace c=0.5 κ=0.2")[1] == (
        f"{mean(pace) - mean(pace_last):+.4f} ± {math.sqrt(sd(pace) ** 2 / 3 + sd(pace_last) ** 2 / 3):.4f}; "
        f"paired {mean(gains):+.4f} ± {sd(gains) / math.sqrt(3):.4f} (lower on 3 of 3 seeds)")
    with pytest.raises(AssertionError):
        row(averaged, "adamw")  # its returned model is its last iterate
    assert "Not final" not in out
    assert "No last-step gains in some eval files of pace c=0.5 κ=0.2" in out
    assert "No tuning-half blends for pace c=0.5 κ=0.2 (seeds 1337, 1 of the selected lr)" in out
    scored_run(tmp_path, "pace", 1.6e-2, 1337, "tuning", 2.8, lambda_pullback=0.5)  # better beyond the old edge
    assert analysis.main(["select", str(tmp_path)]) == 0
    capsys.readouterr()
    assert analysis.main(["report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Not final: the selection of pace c=0.5 κ=0.2 asks for more runs" in out
    assert "Selected but not yet scored on the test half: pace c=0.5 κ=0.2" in out


def test_report_of_a_selection_made_before_the_tie_rule(tmp_path, capsys):
    # results/cpu300's selection.json: no seeds, no next
    scored_run(tmp_path, "adamw", 2e-3, 1, "test", 3.0)
    scored_run(tmp_path, "adamw", 2e-3, 2, "test", 3.1)
    (tmp_path / "selection.json").write_text(json.dumps(
        {"seed": 1337, "variants": {"adamw": {"lr": 0.002, "tuning_loss": 3.2, "on_edge": True}}}))
    assert analysis.main(["report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert row(out, "adamw")[:4] == ["adamw", "0.002", "1, 2", cell(3.05, statistics.stdev([3.0, 3.1]), 2)]
    assert "Not final: the selection of adamw asks for more runs" in out


def test_differences_are_paired_over_the_seeds_both_have(tmp_path):
    a, b = {2: 3.0, 3: 3.2, 4: 3.1}, {1: 3.3, 2: 3.1, 3: 3.25}
    se = math.sqrt(statistics.variance(a.values()) / 3 + statistics.variance(b.values()) / 3)
    paired = [a[2] - b[2], a[3] - b[3]]  # -0.1, -0.05
    assert results.difference(a, b) == (f"{statistics.fmean(a.values()) - statistics.fmean(b.values()):+.4f} ± {se:.4f}; "
                                      f"paired {-0.075:+.4f} ± {statistics.stdev(paired) / math.sqrt(2):.4f} "
                                      "(lower on 2 of 2 seeds)")
    assert results.difference({2: 3.0}, {2: 3.5}) == "-0.5000; paired -0.5000 (lower on 1 of 1 seeds)"
    assert results.difference({2: 3.0}, {5: 3.5}) == "-0.5000; no seed in common"


# ----------------------------------------------------------------------------- the tie rule of select

def tuning_grid(folder, losses, seed=1337, method="ema"):
    """Runs of one variant scored on the tuning half: {lr: loss}."""
    for lr, loss in losses.items():
        scored_run(folder, method, lr, seed, "tuning", loss)


def selected(folder, capsys):
    assert analysis.main(["select", str(folder)]) == 0
    return capsys.readouterr().out, json.loads((folder / "selection.json").read_text())["variants"]["ema κ=0.2"]


def test_select_two_lrs_within_the_tie_margin_need_seed_1(tmp_path, capsys):
    tuning_grid(tmp_path, {1e-3: 3.20, 2e-3: 3.02, 4e-3: 3.00, 8e-3: 3.10})  # 0.02 apart
    out, chosen = selected(tmp_path, capsys)
    assert row(out, "ema κ=0.2")[-2:] == ["0.004", "run lr 0.002, 0.004 with seed 1"]
    assert chosen["tie"] == [0.002, 0.004] and chosen["next"] == "run lr 0.002, 0.004 with seed 1"
    assert row(out, "ema κ=0.2")[1:5] == ["3.2000", "3.0200", "**3.0000**", "3.1000"]
    tuning_grid(tmp_path, {4e-3: 3.08}, seed=1)
    out, chosen = selected(tmp_path, capsys)
    assert chosen["next"] == "run lr 0.002 with seed 1"  # until both are run
    tuning_grid(tmp_path, {2e-3: 3.03}, seed=1)
    tuning_grid(tmp_path, {1e-3: 2.0}, seed=1)  # not one of the two: no say
    out, chosen = selected(tmp_path, capsys)
    # the mean over seeds 1337 and 1 decides: 3.025 at 2e-3 against 3.04 at 4e-3
    assert chosen == {"lr": 0.002, "tuning_loss": pytest.approx(3.025), "seeds": [1337, 1], "tie": [0.002, 0.004],
                      "on_edge": False, "next": None}
    assert row(out, "ema κ=0.2")[1:] == ["3.2000", "**3.0200**", "3.0000", "3.1000", "0.002", "selected"]
    ties = [line for line in out.split("Ties:")[1].splitlines() if line.startswith("| ema")]
    assert ties == ["| ema κ=0.2 | 0.002 | 3.0200 | 3.0300 | **3.0250** |", "| ema κ=0.2 | 0.004 | 3.0000 | 3.0800 | 3.0400 |"]


@pytest.mark.parametrize("seed_1, chosen_lr", [
    ({2e-3: 3.04, 4e-3: 3.05}, 0.004),  # seed 1 prefers 2e-3 by less than seed 1337 prefers 4e-3
    ({2e-3: 3.00, 4e-3: 3.04}, 0.002),  # and by more
])
def test_select_a_tie_is_decided_on_the_mean_over_both_seeds(tmp_path, capsys, seed_1, chosen_lr):
    tuning_grid(tmp_path, {1e-3: 3.20, 2e-3: 3.02, 4e-3: 3.00, 8e-3: 3.10})
    tuning_grid(tmp_path, seed_1, seed=1)
    _, chosen = selected(tmp_path, capsys)
    assert chosen["lr"] == chosen_lr and chosen["seeds"] == [1337, 1] and chosen["next"] is None
    assert chosen["tuning_loss"] == pytest.approx(statistics.fmean([{0.002: 3.02, 0.004: 3.00}[chosen_lr],
                                                                    seed_1[chosen_lr]]))


def test_select_two_lrs_beyond_the_tie_margin_are_chosen_on_one_seed(tmp_path, capsys):
    tuning_grid(tmp_path, {1e-3: 3.20, 2e-3: 3.0301, 4e-3: 3.00, 8e-3: 3.10})  # 0.0301 apart
    tuning_grid(tmp_path, {2e-3: 2.0, 4e-3: 3.5}, seed=1)  # seed 1's runs have no say
    out, chosen = selected(tmp_path, capsys)
    assert chosen == {"lr": 0.004, "tuning_loss": 3.0, "seeds": [1337], "tie": None, "on_edge": False, "next": None}
    assert "Ties" not in out


def test_select_a_tie_decided_on_an_edge_extends_the_grid_with_both_seeds(tmp_path, capsys):
    tuning_grid(tmp_path, {1e-3: 3.01, 2e-3: 3.00, 4e-3: 3.10})
    tuning_grid(tmp_path, {1e-3: 3.00, 2e-3: 3.05}, seed=1)
    out, chosen = selected(tmp_path, capsys)
    assert chosen["lr"] == 0.001 and chosen["on_edge"] and chosen["next"] == "run lr 0.0005 with seeds 1337 and 1"
    assert "1 variant(s) not final" in out


def test_select_a_diverged_run_counts_as_worse_than_any(tmp_path, capsys):
    tuning_grid(tmp_path, {1e-3: 3.2, 2e-3: 3.1, 4e-3: 3.0})
    write_result(tmp_path / "ema_lr0.008", "ema", status="failed", error="non-finite training loss nan at step 40",
                 lr=8e-3, seed=1337)
    write_result(tmp_path / "ema_lr0.016", "ema", status="failed", error="CUDA out of memory", lr=1.6e-2, seed=1337)
    out, chosen = selected(tmp_path, capsys)
    assert row(out, "ema κ=0.2")[1:] == ["3.2000", "3.1000", "**3.0000**", "diverged", "0.004", "selected"]
    assert chosen["lr"] == 0.004 and not chosen["on_edge"]  # 8e-3 was run: 4e-3 lies inside
    assert row(out, "ema_lr0.016")[1:] == ["failed", "CUDA out of memory"]  # not a divergence: listed, not counted


# ----------------------------------------------------------------------------- readouts: blends and gains

def test_report_the_blend_chosen_on_the_tuning_half_and_pace_s_gains(tmp_path, capsys):
    for method, config in (("adamw", {}), ("ema", {}), ("pace", {"lambda_pullback": 0.5})):
        for lr, loss in ((1e-3, 3.2), (2e-3, 3.0), (4e-3, 3.1)):
            scored_run(tmp_path, method, lr, 1337, "tuning", loss, **config)
    assert analysis.main(["select", str(tmp_path)]) == 0
    # ema's tuning runs at its selected lr: seed 1337 alone would choose 0.75, with seed 1 the mean chooses 0.5
    scored_run(tmp_path, "ema", 2e-3, 1337, "tuning", 3.0, scores=blends(3.10, 3.04, 3.00, 2.98, 3.00))
    scored_run(tmp_path, "ema", 2e-3, 1, "tuning", 3.06, scores=blends(3.10, 3.00, 2.95, 3.05, 3.06))
    scored_run(tmp_path, "ema", 2e-3, 2, "tuning", 3.0, scores=blends(3.0, 3.0, 3.0, 1.0, 3.0))  # a test seed: no say
    returned, at_half = {2: 2.90, 3: 2.92, 4: 2.94}, {2: 2.80, 3: 2.85, 4: 2.90}
    def gains(seed):
        return {"last_step_gains": {
            "step": 300, "token embedding": {"mean_gain": 0.9 + seed / 100, "clamped_share": 0.8, "numel": 10},
            "other matrices": {"mean_gain": 0.5, "clamped_share": 0.1 * seed, "numel": 20},
            "vectors": {"mean_gain": 0.2, "clamped_share": 0.0, "numel": 5}}}
    for seed in (2, 3, 4):
        scored_run(tmp_path, "adamw", 2e-3, seed, "test", 3.0)
        scored_run(tmp_path, "ema", 2e-3, seed, "test", returned[seed],
                   scores=blends(3.0, 2.9, at_half[seed], 2.9, returned[seed]))
        scored_run(tmp_path, "pace", 2e-3, seed, "test", 2.8, lambda_pullback=0.5, scores=gains(seed))
    # the grid's runs count too, whichever half they were scored on: seed 1337 of 2e-3 joins the test seeds
    scored_run(tmp_path, "pace", 2e-3, 1337, "tuning", 3.0, lambda_pullback=0.5, scores=gains(7))
    scored_run(tmp_path, "pace", 4e-3, 1337, "tuning", 3.1, lambda_pullback=0.5, scores=gains(1))
    capsys.readouterr()
    assert analysis.main(["report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    sd = statistics.stdev
    readouts = out.split("Blends")[1]
    assert row(readouts, "ema κ=0.2")[:10] == [
        "ema κ=0.2", "1, 1337", "3.1000", "3.0200", "**2.9750**", "3.0150", "3.0300", "0.5",
        cell(2.85, sd(at_half.values()), 3), cell(2.92, sd(returned.values()), 3)]
    assert row(readouts, "ema κ=0.2")[10] == results.difference(at_half, returned)
    assert "No tuning-half blends for pace c=0.5 κ=0.2 (seeds 1337, 1 of the selected lr)" in out
    gains_table = out.split("PACE's pullback gains")[1]
    pace_rows = [line.strip("|").split(" | ")[1:] for line in gains_table.splitlines() if line.startswith("| pace")]
    assert [[c.strip() for c in r] for r in pace_rows] == [
        ["0.002", "2, 3, 4, 1337", "0.940, 80.0% clamped", "0.500, 40.0% clamped", "0.200, 0.0% clamped"],
        ["0.004", "1337", "0.910, 80.0% clamped", "0.500, 10.0% clamped", "0.200, 0.0% clamped"]]
    assert "| variant | lr | seeds | token embedding | other matrices | vectors |" in out
