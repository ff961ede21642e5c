"""
Figures of a study's runs. As a command: the training curves of runs, one line per run (the
seeds of one setting share a colour), into a PNG:

    python -m studies.plots out/demo/adamw out/demo/ema out/demo/pace --out out/demo/curves.png

Panels: the validation loss of the returned model and of the last iterate, the training loss,
and PACE's telemetry when the runs recorded it. matplotlib is optional: without it a figure is
not drawn and the command says so in one line.
"""

import argparse
import json
import math
import os
import re
import statistics
import sys
from pathlib import Path

from studies.results import (METHODS, SweepError, best, blends_of, fmt, group, is_number, loss_at, mean_std,
                             read_result)

METHOD_COLORS = {"adamw": "tab:gray", "ema": "tab:blue", "pace": "tab:red"}


METHOD_NAMES = {"adamw": "AdamW", "ema": "EMA (AdamW)", "pace": "PACE"}


# PACE's telemetry (pace.PACE.get_step_stats) as train.py records it in step_logs
TELEMETRY = {"lambda_mean": "mean pullback gain λ", "lambda_max": "largest pullback gain λ",
             "lambda_clip_fraction": "share of gains clamped to 1", "adamw_update_norm": "‖AdamW update‖",
             "pullback_norm": "‖pullback‖", "ema_distance_norm": "‖weights − EMA‖"}


def pyplot():
    """matplotlib's pyplot drawing into files, or None when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def lr_axis(ax, lrs):
    """A log-scaled lr axis labelled at the lrs that were run (matplotlib's own minor labels collide)."""
    ax.set_xscale("log")
    ticks = sorted(set(lrs))
    ax.set_xticks(ticks, [fmt(lr) for lr in ticks], fontsize=8)
    ax.minorticks_off()
    ax.set_xlabel("learning rate")


def plot(complete, path):
    """Final val loss against lr, one line per method (its best variant at each lr), one
    panel per setting of the other keys. Returns False when matplotlib is missing."""
    plt = pyplot()
    if plt is None:
        return False
    columns, table = group(complete)
    panels = {}
    for shown, block in table.items():
        row = dict(zip(columns, shown))
        title = ", ".join(f"{k}={fmt(v)}" for k, v in row.items() if k != "lr")
        for method, variants in block.items():
            panels.setdefault(title, {}).setdefault(method, []).append((row.get("lr"), best(variants)[1]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False, sharey=True)
    for ax, (title, lines) in zip(axes[0], panels.items()):
        for method in sorted(lines, key=lambda m: METHODS.index(m) if m in METHODS else len(METHODS)):
            points = sorted((lr, s) for lr, s in lines[method] if is_number(lr))
            if not points:
                continue
            lrs = [lr for lr, _ in points]
            means = [s[0] for _, s in points]
            stds = [s[1] or 0.0 for _, s in points]
            ax.errorbar(lrs, means, yerr=stds, marker="o", ms=4, capsize=3, lw=1.5,
                        color=METHOD_COLORS.get(method), label=METHOD_NAMES.get(method, method))
        lr_axis(ax, [lr for points in lines.values() for lr, _ in points if is_number(lr)])
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("final val loss (returned model)")
    axes[0][0].legend(frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return True


def plot_selection(groups, selection, seed, path):
    """Tuning-half loss at seed against lr, one line per variant (diverged runs left out), its selected
    lr starred. False when matplotlib is missing."""
    plt = pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for i, (name, by_lr) in enumerate(groups.items()):
        method = name.split()[0]
        same_method = [n for n in groups if n.split()[0] == method]
        points = dict(sorted((lr, loss_at(runs, seed)) for lr, runs in by_lr.items()
                             if loss_at(runs, seed) is not None and math.isfinite(loss_at(runs, seed))))
        color = METHOD_COLORS.get(method, f"C{i % 10}")
        ax.plot(list(points), list(points.values()), marker="o", ms=4, lw=1.5, color=color,
                ls=("-", "--", ":", "-.")[same_method.index(name) % 4], label=name)
        if selection[name]["lr"] in points:
            ax.plot(selection[name]["lr"], points[selection[name]["lr"]], marker="*", ms=12, color=color)
    lr_axis(ax, [lr for by_lr in groups.values() for lr in by_lr])
    ax.set_ylabel(f"tuning-half loss (returned model), seed {seed}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return True


def plot_alpha(panels, names, path):
    """The test-half loss against alpha (the EMA's weight in the blend) per ema and pace variant, mean ±
    std over seeds, one panel per study whose runs have blends, adamw's returned model as a dotted line.
    -> the panels drawn (0: none had blends), None when matplotlib is missing."""
    plt = pyplot()
    if plt is None:
        return None
    lines = [(title, {name: blends_of(tested[name]) for name in names if name.split()[0] in ("ema", "pace")}, tested)
             for title, tested in panels]
    lines = [(title, {n: b for n, b in blends.items() if b is not None}, tested) for title, blends, tested in lines]
    lines = [line for line in lines if line[1]]
    if not lines:
        return 0
    fig, axes = plt.subplots(1, len(lines), figsize=(4.2 * len(lines), 3.4), squeeze=False, sharey=True)
    for ax, (title, blends, tested) in zip(axes[0], lines):
        for i, (name, losses) in enumerate(blends.items()):
            points = [(float(a), mean_std([x for x in xs if x is not None])) for a, xs in losses.items()]
            ax.errorbar([a for a, _ in points], [s[0] for _, s in points], yerr=[s[1] or 0.0 for _, s in points],
                        marker="o", ms=4, capsize=3, lw=1.5, color=METHOD_COLORS[name.split()[0]],
                        ls=("-", "--", ":")[i % 3], label=name)
        if tested.get("adamw"):
            ax.axhline(statistics.fmean(r["loss"] for r in tested["adamw"]), color=METHOD_COLORS["adamw"], ls=":",
                       label="adamw")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("α (the EMA's weight)")
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("test-half loss")
    axes[0][0].legend(frameon=False, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return len(lines)


def run_folder(path):
    """The folder of a run given as its folder or its result.json."""
    return Path(path).parent if Path(path).name == "result.json" else Path(path)


def load_runs(paths):
    """-> [(label, result)] for run folders or result.json paths; the labels are the folders
    without what they all share (a single run keeps its folder's name)."""
    runs = []
    for folder in map(run_folder, paths):
        result, problem = read_result(folder / "result.json")
        if result is None:
            raise SweepError(f"curves: {folder / 'result.json'}: {problem}")
        runs.append(result)
    folders = [run_folder(p).resolve() for p in paths]
    common = Path(os.path.commonpath(folders)) if len(folders) > 1 else folders[0].parent
    return [(str(f.relative_to(common)) if f != common else f.name, r) for f, r in zip(folders, runs)]


def seed_groups(runs):
    """[(label, result)] -> lists of the runs that differ only in their seed (and folder), in
    order: a setting's seeds share a colour and a legend entry."""
    groups = {}
    for label, result in runs:
        setting = {k: v for k, v in result["config"].items() if k not in ("seed", "out_dir")}
        groups.setdefault(json.dumps(setting, sort_keys=True), []).append((label, result))
    return list(groups.values())


def plot_run(panels, titles, result, method, color, width, label):
    """One run's lines: its validation losses, then one line in each other panel."""
    tokens = result["config"]["total_batch_size"]  # per step
    evals = result["eval_logs"]
    x = [e["step"] * tokens for e in evals]
    panels["val_loss"].plot(x, [e["val_loss"] for e in evals], color=color, lw=2, marker="o", ms=3, label=label)
    if method != "adamw":  # adamw returns its last iterate: the two lines coincide
        # often evaluated at the end only: a marker shows that single point
        last = [(e["step"] * tokens, e["vanilla_val_loss"]) for e in evals if e["vanilla_val_loss"] is not None]
        panels["val_loss"].plot(*zip(*last), color=color, lw=1.2, ls="--", marker="x", ms=5)
    for key in list(titles)[1:]:
        steps = [s for s in result["step_logs"] if s.get(key) is not None]
        panels[key].plot([s["step"] * tokens for s in steps], [s[key] for s in steps], color=color, lw=width,
                         label=label)


def plot_curves(runs, path):
    """Draw [(label, result)] into the PNG path, one line per run, a colour per setting (its
    seeds share it): the validation loss of the returned model (solid) and of the last iterate
    (dashed) against tokens seen, the training loss, and a panel per telemetry key that
    step_logs hold. Returns the keys of the panels drawn, or None when matplotlib is missing."""
    plt = pyplot()
    if plt is None:
        return None
    from matplotlib.lines import Line2D
    from matplotlib.ticker import EngFormatter
    titles = {"val_loss": "validation loss", "loss": "training loss"}
    titles.update({k: f"{title} ({k})" for k, title in TELEMETRY.items()
                   if any(k in s for _, r in runs for s in r["step_logs"])})
    settings = seed_groups(runs)
    methods = [setting_runs[0][1]["config"].get("optimizer") for setting_runs in settings]
    by_method = len(set(methods)) == len(methods) and all(m in METHOD_COLORS for m in methods)
    columns = min(len(titles), 4)
    rows = -(-len(titles) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.4 * columns, 3.4 * rows), squeeze=False)
    panels = dict(zip(titles, axes.flat))
    for i, (setting_runs, method) in enumerate(zip(settings, methods)):
        color = METHOD_COLORS[method] if by_method else f"C{i % 10}"
        # earlier settings a little wider: one that trains exactly like another (ema like adamw) shows beneath it
        width = 1.2 * 1.6 ** min(len(settings) - 1 - i, 2)
        for j, (label, result) in enumerate(setting_runs):
            if j > 0:
                label = "_nolegend_"
            elif len(setting_runs) > 1:
                seeds = ", ".join(str(r["config"]["seed"]) for _, r in setting_runs)
                label = f"{re.sub(r'_seed[^_]*$', '', label)} (seeds {seeds})"
            plot_run(panels, titles, result, method, color, width, label)
    for key, ax in panels.items():
        ax.set_title(titles[key], fontsize=10)
        ax.set_xlabel("tokens seen")
        ax.set_xlim(left=0)
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(titles):]:
        ax.set_visible(False)
    styles = [Line2D([], [], color="black", lw=2, label="returned model"),
              Line2D([], [], color="black", lw=1.2, ls="--", marker="x", ms=5, label="last iterate")]
    panels["val_loss"].legend(handles=styles, frameon=False, fontsize=8)
    panels["loss"].legend(frameon=False, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return list(titles)


def curves(args):
    runs = load_runs(args.runs)
    path = args.out or str(Path(os.path.commonpath([run_folder(p).resolve() for p in args.runs])) / "curves.png")
    if plot_curves(runs, path) is None:
        print("plots.py: matplotlib is not installed: no plot (pip install matplotlib)", file=sys.stderr)
        return 1
    print(f"curves: {path}")
    return 0



def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0], allow_abbrev=False)
    parser.add_argument("runs", nargs="+", metavar="RUN", help="a run's folder or its result.json")
    parser.add_argument("--out", help="PNG to write (default: curves.png in the folder the runs share)")
    args = parser.parse_args(argv)
    try:
        return curves(args)
    except SweepError as e:
        print(f"plots.py: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
