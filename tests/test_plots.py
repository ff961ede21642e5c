"""The plots of the studies are drawn (matplotlib is a development requirement): studies/plots.py's
curves of runs (a PNG beside them, labels that tell the runs apart, telemetry panels, a missing run a
one-line error), analysis.py's loss against lr and quadratic.py's; each PNG has the figure's size and
the colours of the lines it should show, in every panel."""

import json

import matplotlib.colors
import matplotlib.image
import numpy as np

from conftest import write_result
from studies import analysis, plots, quadratic


def pixels_of(png, color):
    """How many pixels of png (an RGBA image) have color, per vertical half of the image."""
    image = matplotlib.image.imread(png)
    near = np.abs(image[..., :3] - np.array(matplotlib.colors.to_rgb(color))).max(-1) < 0.02
    half = image.shape[1] // 2
    return int(near[:, :half].sum()), int(near[:, half:].sum())


def test_sweep_plot_draws_each_method_in_each_panel(tmp_path, capsys):
    # two schedules: two panels, each with the three methods at two lrs
    for schedule in ("cos", "wsd"):
        for lr in (1e-3, 3e-3):
            for method, loss in (("adamw", 3.3), ("ema", 3.2), ("pace", 3.1)):
                for seed in (0, 1):
                    write_result(tmp_path / f"{method}_{schedule}_{lr}_{seed}", method, loss=loss + lr * 100 + seed / 100,
                                 lr=lr, seed=seed, schedule=schedule)
    assert analysis.main(["summarize", str(tmp_path)]) == 0
    png = tmp_path / "loss_vs_lr.png"
    assert f"plot: {png}" in capsys.readouterr().err
    assert matplotlib.image.imread(png).shape == (3.4 * 150, 2 * 4.2 * 150, 4)  # figsize x dpi
    for color in ("tab:gray", "tab:blue", "tab:red"):  # adamw, ema, pace
        assert min(pixels_of(png, color)) > 300, color


def test_quadratic_plot_draws_both_panels(tmp_path, capsys):
    png = tmp_path / "q.png"
    assert quadratic.main(["--form", "sgd", "--lr", "1", "--c", "10", "--spread", "1,10,100", "--chains", "16",
                           "--plot", str(png)]) == 0
    assert matplotlib.image.imread(png).shape == (3.6 * 150, 9.5 * 150, 4)
    # the one line (form, lr, beta, c) takes the first colour of the cycle, in both panels
    assert min(pixels_of(png, "tab:blue")) > 100


def test_quadratic_without_matplotlib_still_prints_the_table(tmp_path, capsys, no_matplotlib):
    png = tmp_path / "q.png"
    assert quadratic.main(["--form", "sgd", "--lr", "1", "--c", "10", "--spread", "1", "--chains", "16",
                           "--plot", str(png)]) == 0
    out, err = capsys.readouterr()
    assert "| sgd | 1 | 0.01 | 10 | 1 |" in out and "matplotlib is not installed" in err and not png.exists()


def test_curves_of_runs(tiny_run, tmp_path, capsys):
    result = json.loads((tiny_run / "result.json").read_text())  # a real run's
    with_telemetry = json.loads(json.dumps(result))
    for s in with_telemetry["step_logs"][1:]:
        s.update({key: 0.5 for key in plots.TELEMETRY})
    with_telemetry["config"]["optimizer"] = "ema"
    for name, r in (("pace", result), ("ema", with_telemetry)):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "result.json").write_text(json.dumps(r))

    runs = plots.load_runs([tmp_path / "runs" / "pace", tmp_path / "runs" / "ema" / "result.json"])
    assert [label for label, _ in runs] == ["pace", "ema"]
    assert plots.load_runs([tmp_path / "runs" / "pace"])[0][0] == "pace"
    (tmp_path / "other" / "pace").mkdir(parents=True)
    (tmp_path / "other" / "pace" / "result.json").write_text(json.dumps(result))
    labels = [label for label, _ in plots.load_runs([tmp_path / "runs" / "pace", tmp_path / "other" / "pace"])]
    assert labels == ["runs/pace", "other/pace"]  # what tells them apart
    assert plots.plot_curves(runs[:1], tmp_path / "one.png") == ["val_loss", "loss"]
    assert plots.plot_curves(runs, tmp_path / "two.png") == ["val_loss", "loss", *plots.TELEMETRY]
    for png in ("one.png", "two.png"):
        data = (tmp_path / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000

    assert plots.main([str(tmp_path / "runs" / "pace"), str(tmp_path / "runs" / "ema")]) == 0
    assert capsys.readouterr().out == f"curves: {tmp_path / 'runs' / 'curves.png'}\n"
    assert (tmp_path / "runs" / "curves.png").stat().st_size > 20_000
    assert plots.main([str(tmp_path / "runs" / "ema" / "result.json")]) == 0  # one run: the PNG beside it
    assert capsys.readouterr().out == f"curves: {tmp_path / 'runs' / 'ema' / 'curves.png'}\n"


def test_curves_of_a_missing_run_is_an_error(tmp_path, capsys):
    assert plots.main([str(tmp_path / "nothing")]) == 1
    assert capsys.readouterr().err.startswith(f"plots.py: error: curves: {tmp_path / 'nothing' / 'result.json'}: ")


def test_curves_show_a_run_that_trains_exactly_like_another(tiny_run, tmp_path, capsys):
    # ema's training loss is adamw's, step for step: adamw's line must still show beneath it
    result = json.loads((tiny_run / "result.json").read_text())
    for method, shift in (("adamw", 0.0), ("ema", 0.0), ("pace", 0.5)):
        r = json.loads(json.dumps(result))
        r["config"]["optimizer"] = method
        for s in r["step_logs"]:
            s["loss"] += shift
        (tmp_path / method).mkdir()
        (tmp_path / method / "result.json").write_text(json.dumps(r))
    png = tmp_path / "curves.png"
    assert plots.main([*(str(tmp_path / m) for m in ("adamw", "ema", "pace")), "--out", str(png)]) == 0
    # two panels, validation and training loss (right); without the line beneath, the legend's gray sample: 170 pixels
    assert pixels_of(png, "tab:gray")[1] > 230  # 301 with it


def test_curves_give_the_seeds_of_a_setting_one_colour(tiny_run, tmp_path):
    # two settings of pace (c 0.15 and 0.5), three seeds each: two colours, C0 and C1, not six
    result = json.loads((tiny_run / "result.json").read_text())
    folders = []
    for c in (0.15, 0.5):
        for seed in (1, 2, 3):
            r = json.loads(json.dumps(result))
            r["config"].update(optimizer="pace", lambda_pullback=c, seed=seed)
            for log in r["eval_logs"] + r["step_logs"]:  # apart, so that neither hides the other
                for key in ("val_loss", "loss"):
                    if log.get(key) is not None:
                        log[key] += c + seed / 10
            folder = tmp_path / f"pace_c{c}_seed{seed}"
            folder.mkdir()
            (folder / "result.json").write_text(json.dumps(r))
            folders.append(str(folder))
    png = tmp_path / "curves.png"
    assert plots.main([*folders, "--out", str(png)]) == 0
    assert min(pixels_of(png, "tab:blue")) > 30 and min(pixels_of(png, "tab:orange")) > 30
    for color in ("tab:green", "tab:red", "tab:purple", "tab:brown"):  # C2 to C5: a colour per run
        assert sum(pixels_of(png, color)) == 0, color
