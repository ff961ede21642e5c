"""
The tables of a study, from its run folders: what train.py's result.json files and
tools/evaluate.py's eval files hold. Run from the repository's root:

    python -m studies.analysis summarize out/cpu     # a table per setting + out/cpu/loss_vs_lr.png
    python -m studies.analysis select out/study      # best lr per variant (tuning half); selection.json
    python -m studies.analysis report out/study      # the selected settings' test loss over the seeds
    python -m studies.analysis across out/cos out/const    # studies of other schedules side by side
    python -m studies.analysis compare 'pace=out/a/pace_*' 'ema=out/b/ema_*'    # groups of runs over seeds

A study chooses on one half of the validation shard and reports on the other: the grid runs
with seed 1337 scored on the tuning half (studies/sweep.py --evaluate tuning), select, then
the selected settings with fresh seeds scored on the test half, then report.

select says what to run next: the lr beyond an edge of the grid where the best lr lies on it,
and seed 1 of the best two lrs where they lie within 0.03 nats of each other (the lower mean
over the two seeds then decides). report, across and compare give each difference of two settings
with both standard errors, unpaired and paired over the seeds both have; report gives the losses in
bits per byte too, and tools/evaluate.py's readouts: blends of EMA and last iterate, PACE's
last-step gains.
"""

import argparse
import glob
import json
import math
import os
import statistics
import sys
from pathlib import Path

from studies.plots import plot, plot_alpha, plot_selection
from studies.results import (METHODS, SweepError, best, blends_of, bpb_cell, by_variant, code_of_runs, difference,
                             fill_newer_settings, fmt, fmt_loss, group, hashable, load_results, loss_at, markdown_table,
                             mean_std, sort_key, variant_label, with_error)


def pace_vs_baseline(pace_stats, methods):
    """PACE's mean minus the best baseline's (adamw, or ema at its best kappa), with its standard error."""
    baselines = [(m, best(methods[m])) for m in ("adamw", "ema") if m in methods]
    if not baselines:
        return "–"
    name, (_, stats) = min(baselines, key=lambda item: item[1][1][0])
    return f"{with_error(*pace_stats, stats)} vs {name}"


def summary_tables(complete, incomplete):
    """The markdown report: per setting the best variant of each method, every variant
    when there was a choice, and the runs that are not in the tables."""
    out = []
    if complete:
        columns, table = group(complete)
        # a method whose runs all failed still gets its column, of dashes
        seen = {r["method"] for r in complete + incomplete if r["method"] is not None}
        methods = [m for m in METHODS if m in seen] + sorted(seen - set(METHODS))
        main, detail, selected = [], [], False
        for shown, block in table.items():
            cells = [fmt(v) for v in shown]
            for m in methods:
                if m not in block:
                    cells.append("–")
                    continue
                variant, stats = best(block[m])
                selected |= len(block[m]) > 1
                label = variant_label(variant)
                cells.append(fmt_loss(*stats) + (f" [{label}]" if label else ""))
            cells.append(pace_vs_baseline(best(block["pace"])[1], block) if "pace" in block else "–")
            main.append(cells)
            for m in methods:
                for variant, stats in sorted(block.get(m, {}).items(), key=lambda item: sort_key([v for _, v in item[0]])):
                    detail.append([fmt(v) for v in shown] + [m, variant_label(variant) or "–", fmt_loss(*stats),
                                   pace_vs_baseline(stats, block) if m == "pace" else ""])
        out.append("Final validation loss of the returned model, mean ± std over seeds (n runs); "
                   "lower is better. Δ = PACE − best baseline (± standard error of the difference).\n")
        out.append(markdown_table(columns + methods + ["Δ PACE − best baseline"], main))
        if selected:
            out.append("\nEach cell above is the method's best variant in that setting; picking the best of "
                       "several variants favours the method with more of them. Every variant:\n")
            out.append(markdown_table(columns + ["method", "variant", "final val loss", "Δ PACE − best baseline"], detail))
    else:
        out.append("No complete runs.")
    if incomplete:
        out.append(f"\nRuns not in the tables ({len(incomplete)}):\n")
        out.append(markdown_table(["run", "status", "detail"], [[r["run"], r["status"], r["detail"]] for r in incomplete]))
    return "\n".join(out)


def load(args, folder, part=None):
    """load_results(folder, part), the runs of a table: those whose numbers it shows (the complete ones and
    those that diverged, which select counts) made by one code (check_code)."""
    complete, incomplete = load_results(folder, part)
    tabulated = complete + [r for r in incomplete if r["diverged"]]
    check_code(args, tabulated, f"{folder}" + (f", {part} half" if part else ""))
    return complete, incomplete


def check_code(args, runs, where):
    """Runs of different code in one table only with --allow_mixed_code; the output then says so, once."""
    line = code_of_runs(runs, where, args.allow_mixed_code)
    if line and line not in args.code_notes:
        args.code_notes.add(line)
        print(f"Mixed code (--allow_mixed_code): {line}\n")


def summarize(args):
    complete, incomplete = load(args, args.folder)
    print(summary_tables(complete, incomplete))
    if args.no_plot or not complete:
        return 0
    path = args.plot or str(Path(args.folder) / "loss_vs_lr.png")
    if plot(complete, path):
        print(f"\nplot: {path}", file=sys.stderr)
    else:
        print("\nmatplotlib is not installed: no plot (pip install matplotlib); the table above is complete",
              file=sys.stderr)
    return 0


# results/schedules300's tie rule: where the best two lrs of a variant lie within TIE_NATS of each
# other at the choosing seed, both are run with TIE_SEED too and the lower mean over the two seeds decides
TIE_NATS = 0.03


TIE_SEED = 1


def choose_lr(by_lr, seed):
    """The protocol's choice of lr for one variant ({lr: runs}) -> {"lr", "tuning_loss", "seeds", "tie",
    "on_edge", "next"}: the lowest loss at seed; where the best two lie within TIE_NATS ("tie": those
    two lrs), the lower mean over seed and TIE_SEED, once both lrs have a run of TIE_SEED ("next" asks
    for them until then); a chosen lr on an edge of the lrs run at seed asks for the lr beyond it, with
    both seeds where the tie rule decided. "next" is None once the choice is final."""
    loss = {lr: loss_at(runs, seed) for lr, runs in by_lr.items() if loss_at(runs, seed) is not None}
    ranked = sorted(loss, key=loss.get)
    chosen, seeds, tie, todo = ranked[0], [seed], None, None
    if len(ranked) > 1 and loss[ranked[1]] - loss[ranked[0]] <= TIE_NATS:
        tie = sorted(ranked[:2])
        missing = [lr for lr in tie if loss_at(by_lr[lr], TIE_SEED) is None]
        if missing:
            todo = f"run lr {', '.join(map(fmt, missing))} with seed {TIE_SEED}"
        else:
            seeds = [seed, TIE_SEED]
            chosen = min(tie, key=lambda lr: statistics.fmean(loss_at(by_lr[lr], s) for s in seeds))
    grid = sorted(loss)
    beyond = [lr for lr, edge in ((chosen / 2, grid[0]), (chosen * 2, grid[-1])) if chosen == edge]
    if beyond and todo is None:
        todo = "run lr " + " and ".join(map(fmt, beyond)) + (f" with seeds {seed} and {TIE_SEED}" if tie else "")
    return {"lr": chosen, "tuning_loss": statistics.fmean(loss_at(by_lr[chosen], s) for s in seeds), "seeds": seeds,
            "tie": tie, "on_edge": bool(beyond), "next": todo}


def loss_cell(loss, bold=False):
    """A loss in a table: – for none, "diverged" for a run stopped at a non-finite loss."""
    if loss is None:
        return "–"
    if not math.isfinite(loss):
        return "diverged"
    return ("**{:.4f}**" if bold else "{:.4f}").format(loss)


def select(args):
    """Per variant, the lr whose run of seed --seed has the lowest tuning-half loss, with the tie rule and
    the extension of the grid at its edges (choose_lr). Writes FOLDER/selection.json."""
    complete, incomplete = load(args, args.folder, "tuning")
    diverged = [{**r, "loss": math.inf} for r in incomplete if r["diverged"]]
    groups = {name: by_lr for name, by_lr in by_variant(complete + diverged).items()
              if any(loss_at(runs, args.seed) is not None for runs in by_lr.values())}
    if not groups:
        raise SweepError(f"select: no run of seed {args.seed} under {args.folder} is scored on the tuning half")
    lrs = sorted({lr for by_lr in groups.values() for lr, runs in by_lr.items() if loss_at(runs, args.seed) is not None})
    rows, ties, selection = [], [], {}
    for name, by_lr in groups.items():
        chosen = selection[name] = choose_lr(by_lr, args.seed)
        cells = [loss_cell(loss_at(by_lr.get(lr, []), args.seed), lr == chosen["lr"]) for lr in lrs]
        rows.append([name, *cells, fmt(chosen["lr"]), chosen["next"] or "selected"])
        for lr in chosen["tie"] or []:
            losses = [loss_at(by_lr[lr], s) for s in (args.seed, TIE_SEED)]
            mean = statistics.fmean(losses) if None not in losses else None
            ties.append([name, fmt(lr), *map(loss_cell, losses), loss_cell(mean, lr == chosen["lr"])])
    print(f"Tuning-half loss of the returned model, seed {args.seed}; the selected lr of each variant in bold.\n")
    print(markdown_table(["variant", *(f"lr {fmt(lr)}" for lr in lrs), "selected lr", "next"], rows))
    if ties:
        print(f"\nTies: the best two lrs within {TIE_NATS} nats at seed {args.seed}; the lower mean over seeds "
              f"{args.seed} and {TIE_SEED} decides.\n")
        print(markdown_table(["variant", "lr", f"seed {args.seed}", f"seed {TIE_SEED}", "mean"], ties))
    others = [r for r in incomplete if not r["diverged"]]
    if others:
        print(f"\nRuns not in the table ({len(others)}):\n")
        print(markdown_table(["run", "status", "detail"], [[r["run"], r["status"], r["detail"]] for r in others]))
    from checkpoint import save_json  # imports torch, which nothing else here needs
    path = Path(args.folder) / "selection.json"
    record = {"seed": args.seed, "tie_seed": TIE_SEED, "tie_nats": TIE_NATS, "variants": selection}
    save_json(str(path), record)
    pending = [name for name, chosen in selection.items() if chosen["next"]]
    print(f"\n{path}: " + (f"{len(pending)} variant(s) not final: run what 'next' says, score it on the tuning "
                            "half and select again" if pending else "every variant's lr is final"))
    plot_path = Path(args.folder) / "tuning_vs_lr.png"
    if plot_selection(groups, selection, args.seed, plot_path):
        print(f"plot: {plot_path}")
    else:
        print("matplotlib is not installed: no plot (pip install matplotlib); the table above is complete")
    return 0


def load_selection(folder, command):
    """FOLDER/selection.json, which select writes."""
    path = Path(folder) / "selection.json"
    try:
        selection = json.loads(path.read_text())
        dict(selection["variants"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SweepError(f"{command}: {path}: no selection to report on ({type(e).__name__}): run studies/analysis.py select first")
    return selection


def selected_runs(args, folder, selection, part):
    """-> ({variant: the runs of its selected lr scored on part}, the runs not scored or not complete)."""
    complete, incomplete = load(args, folder, part)
    groups = by_variant(complete)
    return {name: groups.get(name, {}).get(chosen["lr"], []) for name, chosen in selection["variants"].items()}, incomplete


def not_final(chosen):
    """Whether a selection still asks for runs (selection.json of before the tie rule: on_edge alone)."""
    return bool(chosen.get("next") or chosen.get("on_edge"))


def report(args):
    """The selected variants' test-half losses over seeds (in nats per token and bits per byte), each
    against the baselines and each averaged one against its own last iterate, and the readouts beside
    them: the blend of EMA and last iterate chosen on the tuning half, and PACE's last-step gains."""
    selection = load_selection(args.folder, "report")
    tested, incomplete = selected_runs(args, args.folder, selection, "test")
    by_seed = {name: {r["seed"]: r["loss"] for r in runs} for name, runs in tested.items() if runs}
    baselines = [name for name in by_seed if name.split()[0] in ("adamw", "ema")]
    rows = []
    for name, losses in by_seed.items():
        runs = tested[name]
        row = [name, fmt(selection["variants"][name]["lr"]), ", ".join(map(str, sorted(losses))),
               fmt_loss(*mean_std([r["loss"] for r in runs])), fmt_loss(*mean_std([r["last"] for r in runs])),
               bpb_cell(runs, "loss"), bpb_cell(runs, "last")]
        rows.append(row + ["–" if base == name else difference(losses, by_seed[base]) for base in baselines])
    print("Test-half loss of the selected settings, mean ± std over seeds (n runs); lower is better. Bits per byte: "
          "the same losses over the half's UTF-8 bytes. Δ = the row's mean − the baseline's ± the standard error "
          "of the difference; paired: the mean of the per-seed differences over the seeds both have ± its "
          "standard error; lower on: the seeds where the row is lower.\n")
    print(markdown_table(["variant", "lr", "seeds", "returned model", "last iterate", "returned, bits/byte",
                          "last iterate, bits/byte", *(f"Δ vs {base}" for base in baselines)], rows))
    averaged = [[name, difference(losses, {r["seed"]: r["last"] for r in tested[name]})]
                for name, losses in by_seed.items() if name.split()[0] in ("ema", "pace")]
    if averaged:
        print("\nWhat the average adds: the returned model (the EMA) − its own last iterate on the test half; "
              "Δ as above.\n")
        print(markdown_table(["variant", "Δ returned − last iterate"], averaged))
    print_blends(args, selection, tested)
    print_gains(args)
    pending = [name for name, chosen in selection["variants"].items() if not_final(chosen)]
    if pending:
        print(f"\nNot final: the selection of {', '.join(pending)} asks for more runs (analysis.py select)")
    unreported = [name for name in selection["variants"] if name not in by_seed]
    if unreported:
        print(f"\nSelected but not yet scored on the test half: {', '.join(unreported)}")
    others = [r for r in incomplete if "not scored" not in r["detail"]]
    if others:
        print(f"\nRuns not in the table ({len(others)}):\n")
        print(markdown_table(["run", "status", "detail"], [[r["run"], r["status"], r["detail"]] for r in others]))
    return 0


def print_blends(args, selection, tested):
    """Per ema and pace variant: the tuning-half loss of each blend alpha * EMA + (1 − alpha) * last
    iterate (mean over the selected setting's runs of the choosing seeds), the alpha of the lowest, and
    the test-half loss at that alpha beside the returned model's (alpha = 1)."""
    tuning, _ = selected_runs(args, args.folder, selection, "tuning")
    seeds = (selection["seed"], TIE_SEED)
    rows, missing = [], []
    for name, runs in tuning.items():
        if name.split()[0] not in ("ema", "pace"):
            continue
        blends = blends_of([r for r in runs if r["seed"] in seeds])
        if blends is None or None in sum(blends.values(), []):
            missing.append(name)
            continue
        means = {a: statistics.fmean(losses) for a, losses in blends.items()}
        alphas, best = list(means), min(means, key=means.get)  # evaluate.py writes every alpha into every file
        test = {r["seed"]: r["scores"].get("blends", {}).get(best) for r in tested[name]}
        at_best = "–" if not test or None in test.values() else fmt_loss(*mean_std(list(test.values())))
        returned = {r["seed"]: r["loss"] for r in tested[name]}
        rows.append([name, ", ".join(map(str, sorted(r["seed"] for r in runs if r["seed"] in seeds))),
                     *(loss_cell(means[a], a == best) for a in means), best, at_best,
                     fmt_loss(*mean_std(list(returned.values()))) if returned else "–",
                     "–" if at_best == "–" else difference(test, returned)])
    if rows:
        print("\nBlends α·EMA + (1 − α)·last iterate: the tuning-half loss of each α (mean over the selected "
              "setting's runs of the seeds shown), the best α on it, and the test-half loss at that α beside the "
              "returned model's (α = 1); Δ as above.\n")
        print(markdown_table(["variant", "tuning seeds", *(f"α={a}" for a in alphas), "best α", "test, best α",
                              "test, returned model", "Δ best α − returned"], rows))
    if missing:
        print(f"\nNo tuning-half blends for {', '.join(missing)} (seeds {', '.join(map(str, seeds))} of the selected "
              "lr): no α chosen; tools/evaluate.py scores blends from a run's ckpt.pt")


def print_gains(args):
    """Per pace variant and lr: its pullback gains at the last step, per parameter group (evaluate.py's
    last_step_gains, recomputed from a run's checkpoint, so the same in either half's eval file), the mean
    over every run of that lr, whichever half it was scored on, of each group's mean gain and clamped share."""
    gains_of, missing = {}, set()
    for part in ("tuning", "test"):
        for name, by_lr in by_variant(load(args, args.folder, part)[0]).items():
            if name.split()[0] != "pace":
                continue
            for lr, runs in by_lr.items():
                for r in runs:
                    gains = r["scores"].get("last_step_gains")
                    if gains is None:
                        missing.add(name)
                    else:
                        gains_of.setdefault((name, lr), {})[r["seed"]] = gains
    rows = []
    for (name, lr), by_seed in sorted(gains_of.items()):
        groups = [g for g in next(iter(by_seed.values())) if g != "step"]
        rows.append([name, fmt(lr), ", ".join(map(str, sorted(by_seed)))] + [
            "{:.3f}, {:.1%} clamped".format(statistics.fmean(g[group]["mean_gain"] for g in by_seed.values()),
                                           statistics.fmean(g[group]["clamped_share"] for g in by_seed.values()))
            for group in groups])
    if rows:
        print("\nPACE's pullback gains at the last step, recomputed from the checkpoint: mean gain and share "
              "clamped to 1 per parameter group, mean over every run of the lr (either half).\n")
        print(markdown_table(["variant", "lr", "seeds", *groups], rows))
    if missing:
        print(f"\nNo last-step gains in some eval files of {', '.join(sorted(missing))}: not in the gains table")


def folder_schedule(folder):
    """The lr schedule every run under folder was trained with (its config's "schedule")."""
    complete, incomplete = load_results(folder)
    schedules = {str(r["setting"].get("schedule")) for r in complete + incomplete if "setting" in r}
    if len(schedules) != 1:
        raise SweepError(f"across: the runs under {folder} have the schedules {', '.join(sorted(schedules)) or 'none'}: "
                         "one per folder")
    return schedules.pop()


def across(args):
    """The selected settings of several studies that differ in their schedule, one column each: the test-half
    loss of each variant that every study selected, and each against the first study's adamw."""
    studies = []
    for folder in args.folders:
        selection = load_selection(folder, "across")
        studies.append((folder, folder_schedule(folder), selection, selected_runs(args, folder, selection, "test")[0]))
    check_code(args, [r for *_, tested in studies for runs in tested.values() for r in runs],
               "the studies' test-half runs")
    names = [name for name in studies[0][2]["variants"] if all(name in s[2]["variants"] for s in studies)]
    left_out = sorted({name for s in studies for name in s[2]["variants"]} - set(names))
    columns = [f"{schedule} ({folder})" for folder, schedule, _, _ in studies]
    rows = []
    for name in names:
        cells = []
        for _, _, selection, tested in studies:
            chosen = selection["variants"][name]
            cell = fmt_loss(*mean_std([r["loss"] for r in tested[name]])) if tested[name] else "not scored on the test half"
            cells.append(f"{cell}, lr {fmt(chosen['lr'])}" + (" (not final)" if not_final(chosen) else ""))
        rows.append([name, *cells])
    print("Test-half loss of each variant's selected setting, mean ± std over seeds (n runs), and its lr.\n")
    print(markdown_table(["variant", *columns], rows))
    if left_out:
        print(f"\nNot selected in every folder, left out: {', '.join(left_out)}")
    reference = {r["seed"]: r["loss"] for r in studies[0][3].get("adamw", [])}
    if len(studies) > 1 and reference:
        print(f"\nΔ = the cell's mean − adamw's under {columns[0]} ± the unpaired standard error; paired: the mean "
              "of the per-seed differences over the seeds both have ± its standard error; lower on: the seeds "
              "where the cell is lower.\n")
        print(markdown_table(["variant", *(f"Δ vs adamw, {columns[0]}: {c}" for c in columns[1:])], [
            [name, *(difference({r["seed"]: r["loss"] for r in tested[name]}, reference) if tested[name] else "–"
                     for _, _, _, tested in studies[1:])] for name in names]))
    elif len(studies) > 1:
        print(f"\nNo differences: {studies[0][0]} has no adamw run of its selected lr scored on the test half")
    path = args.plot or os.path.join(os.path.commonpath([os.path.abspath(f) for f in args.folders]), "test_vs_alpha.png")
    schedules = [schedule for _, schedule, _, _ in studies]
    titles = schedules if len(set(schedules)) == len(schedules) else columns
    drawn = plot_alpha([(title, tested) for title, (_, _, _, tested) in zip(titles, studies)], names, path)
    if drawn is None:
        print("\nmatplotlib is not installed: no plot (pip install matplotlib); the tables above are complete")
    elif drawn:
        print(f"\nplot: {os.path.relpath(path)}")
    else:
        print("\nNo test-half blends in these folders: no plot of the loss against α")
    return 0



def compare(args):
    """Groups of runs given by name and folder pattern, one row each, a setting each (seeds apart): their
    losses on a half of the validation shard over seeds, and each against the rows named by --against."""
    rows, not_in_table = {}, []
    for spec in args.rows:
        label, eq, patterns = spec.partition("=")
        folders = sorted({f for pattern in patterns.split(",") for f in glob.glob(pattern)})
        if not eq or not label or not folders:
            raise SweepError(f"compare: {spec!r}: expected LABEL=GLOB[,GLOB...] matching run folders")
        rows[label] = []
        for folder in folders:
            complete, incomplete = load_results(folder, args.part)
            rows[label] += complete
            not_in_table += [{**r, "run": folder} for r in incomplete]
    fill_newer_settings([r for runs in rows.values() for r in runs])
    for label, runs in rows.items():
        if len({hashable({"method": r["method"], "variant": r["variant"], **r["setting"]}) for r in runs}) > 1:
            raise SweepError(f"compare: the runs of {label!r} differ in more than their seed: one setting per row")
    check_code(args, [r for runs in rows.values() for r in runs], "the rows")
    against = args.against.split(",") if args.against else list(rows)[:1]
    unknown = [label for label in against if label not in rows]
    if unknown:
        raise SweepError(f"compare: --against names no row: {', '.join(unknown)}")
    by_seed = {label: {r["seed"]: r["loss"] for r in runs} for label, runs in rows.items()}
    table = []
    for label, runs in rows.items():
        if not runs:
            table.append([label, "–", f"no run scored on the {args.part} half", *["–"] * (4 + len(against))])
            continue
        table.append([label, fmt(runs[0]["setting"]["lr"]), ", ".join(map(str, sorted(by_seed[label]))),
                      fmt_loss(*mean_std([r["loss"] for r in runs])), fmt_loss(*mean_std([r["last"] for r in runs])),
                      bpb_cell(runs, "loss"), bpb_cell(runs, "last")]
                     + ["–" if base == label or not by_seed[base] else difference(by_seed[label], by_seed[base])
                        for base in against])
    print(f"{args.part.capitalize()}-half loss of each row's runs, mean ± std over seeds (n runs); bits per byte: the "
          "same over the half's UTF-8 bytes; Δ = the row's mean − the named row's ± the unpaired standard error; "
          "paired: over the seeds both have; lower on: the seeds where the row is lower.\n")
    print(markdown_table(["row", "lr", "seeds", "returned model", "last iterate", "returned, bits/byte",
                          "last iterate, bits/byte", *(f"Δ vs {base}" for base in against)], table))
    if not_in_table:
        print(f"\nRuns not in the table ({len(not_in_table)}):\n")
        print(markdown_table(["run", "status", "detail"], [[r["run"], r["status"], r["detail"]] for r in not_in_table]))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0], allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("summarize", allow_abbrev=False, help="tabulate (and plot) every result.json under a folder")
    s.add_argument("folder")
    s.add_argument("--plot", help="PNG to write (default FOLDER/loss_vs_lr.png)")
    s.add_argument("--no_plot", action="store_true", help="do not plot")
    e = sub.add_parser("select", allow_abbrev=False, help="the best lr per variant by the tuning-half loss")
    e.add_argument("folder")
    e.add_argument("--seed", type=int, default=1337, help="the seed of the runs that choose (default %(default)s)")
    t = sub.add_parser("report", allow_abbrev=False, help="the selected settings' test-half loss over seeds")
    t.add_argument("folder")
    a = sub.add_parser("across", allow_abbrev=False,
                       help="the selected settings of studies of different schedules, a column each")
    a.add_argument("folders", nargs="+", metavar="FOLDER", help="a study's folder (select and report); the first "
                   "one's adamw is the reference of the differences")
    a.add_argument("--plot", help="PNG of the test loss against α (default: test_vs_alpha.png in the folder the "
                   "studies share)")
    c = sub.add_parser("compare", allow_abbrev=False, help="groups of runs (LABEL=GLOB), a row each, over seeds")
    c.add_argument("rows", nargs="+", metavar="LABEL=GLOB", help="a row's name and its run folders (comma-separated "
                   "patterns, quoted so that the shell leaves them alone); one setting per row, any seeds")
    c.add_argument("--part", choices=("tuning", "test"), default="test", help="the half scored (default %(default)s)")
    c.add_argument("--against", metavar="LABEL[,LABEL...]",
                   help="the rows each row is compared with (default: the first)")
    for subparser in (s, e, t, a, c):
        subparser.add_argument("--allow_mixed_code", action="store_true",
                               help="tabulate runs made by different code (result.json's \"code\") together; "
                               "the output names each code")
    args = parser.parse_args(argv)
    args.code_notes = set()  # the mixed-code lines printed so far
    try:
        return {"summarize": summarize, "select": select, "report": report, "across": across,
                "compare": compare}[args.command](args)
    except SweepError as e:
        print(f"analysis.py: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
