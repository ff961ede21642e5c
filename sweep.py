"""
Run a grid of train.py runs, one after another, and summarize their result.json files.

The grid is method x lr x c x kappa x schedule x seed; every axis is optional and an
axis that is not given is left to the config files and train.py's defaults. Each run
writes to its own folder, named from its setting, under --out:

    runs/cpu/adamw_lr0.001_seed0
    runs/cpu/ema_lr0.001_k0.2_seed0
    runs/cpu/pace_lr0.001_c0.15_k0.2_seed0

Which axes apply to which method:
- c (lambda_pullback) is PACE's alone, so adamw and ema runs are not multiplied by it.
- kappa (ema_kappa) sets the EMA schedule, and both ema and pace return that EMA. The
  EMA baseline is therefore run at every kappa PACE is run at: each PACE run has a
  baseline with identical averaging, so the comparison isolates the pullback.
  adamw returns the last iterate and ignores kappa.

Resuming: a run whose result.json says "completed" is skipped, so an interrupted sweep
picks up where it stopped. Any other run (running, failed, unparsable, missing) is
run again: from its ckpt.pt when there is one, from scratch otherwise. Both pass
--resume=True when the folder holds a ckpt.pt or result.json, because train.py refuses
to overwrite a run and resumes one without a checkpoint from step 0.
--skip_failed leaves failed runs alone (for example runs that diverged at a large lr,
which a rerun would only reproduce). A folder that holds a run made with different
values for the settings this sweep passes is an error rather than silently reused.

--evaluate tuning|test scores each run, once it is complete, on that half of the
validation shard with evaluate.py (RUN/eval_PART.json; a run that has the file is not
scored again): studies choose settings on the tuning half and report on the test half.

Every command is printed exactly as it is run; --dry_run only prints them, as a shell
script (status lines are comments), so a cluster sweep can be reviewed or dispatched.
Settings given as --key=value that are not options of this script are passed through
to every run.

Examples:

    # CPU: the three methods, a small lr x c grid, three seeds; --max_steps=160 passes through
    python sweep.py run --config configs/cpu.py --lr 1e-3,3e-3 --c 0.15,0.3 --kappa 0.2 \\
        --seed 0,1,2 --out runs/cpu --max_steps=160
    python sweep.py summarize runs/cpu          # markdown table + runs/cpu/loss_vs_lr.png

    # choose on one half of the validation shard, report on the other (README, Results)
    python sweep.py run ... --seed 1337 --evaluate tuning --out runs/study
    python sweep.py select runs/study           # best lr per variant; writes runs/study/selection.json
    python sweep.py run ... --lr SELECTED --seed 1,2,3 --evaluate test --out runs/study
    python sweep.py report runs/study           # the selected settings' test loss over the seeds

    # the GPT-2 124M FineWeb sweep, each run on 8 GPUs (print the commands only)
    python sweep.py run --config 'configs/{method}.py' --lr 6e-4,1.2e-3,2.4e-3 \\
        --c 0.15 --kappa 0.2 --schedule cos,wsd --seed 0 --nproc_per_node 8 \\
        --out runs/gpt2 --dry_run

'{method}' in a --config path is replaced by each run's method.
"""

import argparse
import ast
import itertools
import json
import math
import os
import re
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

METHODS = ("adamw", "ema", "pace")
SCHEDULES = ("const", "cos", "wsd")
# train.py settings this script sets itself; passing them through would fight the grid
CONTROLLED = {"optimizer": "--method", "lambda_pullback": "--c", "ema_kappa": "--kappa",
              "out_dir": "--out", "resume": "(set by the sweep)"}
# config keys that are not part of a setting: what tells methods and their variants apart,
# the seed (averaged over), and the run's own folder
NOT_SETTING = {"optimizer", "lambda_pullback", "ema_kappa", "seed", "out_dir", "resume"}
SYMBOL = {"lambda_pullback": "c", "ema_kappa": "κ"}
METHOD_COLORS = {"adamw": "tab:gray", "ema": "tab:blue", "pace": "tab:red"}
METHOD_NAMES = {"adamw": "AdamW", "ema": "EMA (AdamW)", "pace": "PACE"}
# PACE's telemetry (pace.PACE.get_step_stats) as train.py records it in step_logs
TELEMETRY = {"lambda_mean": "mean pullback gain λ", "lambda_max": "largest pullback gain λ",
             "lambda_clip_fraction": "share of gains clamped to 1", "adamw_update_norm": "‖AdamW update‖",
             "pullback_norm": "‖pullback‖", "ema_distance_norm": "‖weights − EMA‖"}
TRAIN_PY = Path(__file__).resolve().parent / "train.py"
EVALUATE_PY = Path(__file__).resolve().parent / "evaluate.py"
UNSET = object()  # an axis that is not swept (None is a value: ema_kappa=None)


class SweepError(Exception):
    """Bad input or an inconsistent run folder: reported as one line, exit code 1."""


# -----------------------------------------------------------------------------
# the grid

def parse_list(text, arg, check):
    """'1e-3,3e-3' -> [0.001, 0.003]; every value must pass check(value) -> error or None."""
    values = []
    for item in text.split(","):
        item = item.strip()
        try:
            value = ast.literal_eval(item)
        except (ValueError, SyntaxError):
            value = item  # bare words such as cos
        problem = check(value)
        if problem:
            raise SweepError(f"{arg}: {item!r} {problem}")
        values.append(value)
    if len(set(map(repr, values))) != len(values):
        raise SweepError(f"{arg}: repeated value in {text!r}")
    return values


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def one_of(choices):
    return lambda v: None if v in choices else f"is not one of {', '.join(choices)}"


def number_at_least(low, strict=False, allow_none=False):
    def check(v):
        if allow_none and v is None:
            return None
        if is_number(v) and (v > low if strict else v >= low):
            return None
        return ("is not None or " if allow_none else "is not ") + f"a number {'>' if strict else '>='} {low}"
    return check


def is_seed(v):
    return None if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else "is not an integer >= 0"


CHECKS = {  # grid argument -> the check of each of its values
    "method": one_of(METHODS),
    "lr": number_at_least(0, strict=True),
    "c": number_at_least(0, strict=True),  # c = 0 is the ema method
    "kappa": number_at_least(0, allow_none=True),
    "schedule": one_of(SCHEDULES),
    "seed": is_seed,
}


def fmt(v):
    """A value as it appears in folder names and tables: 0.001, 1e-05, cos, None."""
    return f"{v:g}" if isinstance(v, float) else str(v)


def expand_grid(grid):
    """grid: {arg: [values]} for the swept axes -> [{train.py key: value}] in run order.

    Seeds vary slowest and methods fastest, so a sweep cut short has compared all
    methods on the first seeds rather than finished one method.
    """
    axis = lambda arg: grid.get(arg, [UNSET])
    runs = []
    for seed, schedule, lr, method in itertools.product(
            axis("seed"), axis("schedule"), axis("lr"), grid.get("method", list(METHODS))):
        cs = axis("c") if method == "pace" else [UNSET]
        kappas = axis("kappa") if method in ("ema", "pace") else [UNSET]
        for c, kappa in itertools.product(cs, kappas):
            values = {"optimizer": method, "lr": lr, "lambda_pullback": c, "ema_kappa": kappa,
                      "schedule": schedule, "seed": seed}
            runs.append({k: v for k, v in values.items() if v is not UNSET})
    return runs


def run_name(setting):
    """pace_lr0.001_c0.15_k0.2_cos_seed0: only the swept axes appear."""
    parts = [setting["optimizer"]]
    for key, prefix in (("lr", "lr"), ("lambda_pullback", "c"), ("ema_kappa", "k"), ("schedule", ""), ("seed", "seed")):
        if key in setting:
            parts.append(prefix + fmt(setting[key]))
    return "_".join(parts)


# -----------------------------------------------------------------------------
# planning: which runs to skip, resume or start

def parse_overrides(extra):
    """Pass-through tokens '--key=value' -> {key: value string}, in order."""
    overrides = {}
    for token in extra:
        match = re.fullmatch(r"--([A-Za-z_]\w*)=(.*)", token, re.S)
        if not match:
            raise SweepError(f"unrecognized argument {token!r}: train.py settings pass through as --key=value")
        key, value = match.groups()
        if key in CONTROLLED:
            raise SweepError(f"--{key} is set by the sweep: use {CONTROLLED[key]}")
        overrides[key] = value
    return overrides


def literal(text):
    """A command-line value the way train.py reads it: a Python literal, else a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def same_value(a, b):
    as_json = lambda v: json.loads(json.dumps(v))  # (0.9, 0.95) and [0.9, 0.95] are the same setting
    try:
        return as_json(a) == as_json(b)
    except (TypeError, ValueError):
        return a == b


def read_result(path):
    """-> (dict, None) for a parsable result.json, (None, reason) otherwise."""
    try:
        with open(path) as f:
            result = json.load(f)
    except (OSError, ValueError) as e:
        return None, f"{type(e).__name__}: {e}"
    if not isinstance(result, dict) or not isinstance(result.get("summary"), dict) \
            or not isinstance(result.get("config"), dict):
        return None, "no 'config' and 'summary' objects"
    return result, None


def plan_run(out_dir, wanted, skip_failed):
    """-> 'skip' | 'skip-failed' | 'resume' | 'restart' | 'start' for the run in out_dir.

    wanted: the settings the sweep passes; a result made with other values is an error,
    because skipping or resuming it would report numbers from a different command.
    """
    result_path = out_dir / "result.json"
    result, _ = read_result(result_path)
    if result is not None:
        stale = [f"{k}={result['config'].get(k)!r} (this sweep: {v!r})"
                 for k, v in wanted.items() if not same_value(result["config"].get(k), v)]
        if stale:
            raise SweepError(f"{out_dir} holds a run made with {', '.join(stale)}: use another --out or remove it")
        status = result["summary"].get("status")
        if status == "completed":
            return "skip"
        if status == "failed" and skip_failed:
            return "skip-failed"
    if (out_dir / "ckpt.pt").exists():
        return "resume"
    # train.py refuses a folder that holds a run unless told to resume, and resuming
    # without a checkpoint starts from step 0: a restart also passes --resume=True
    return "restart" if result_path.exists() else "start"


def config_files(configs, method):
    files = [c.replace("{method}", method) for c in configs]
    for f in files:
        if not Path(f).is_file():
            raise SweepError(f"--config: no file {f}")
    return files


def train_command(setting, out_dir, configs, overrides, nproc_per_node, resume):
    """The exact train.py command of one run."""
    if nproc_per_node:  # torch.distributed.run is torchrun, run by this interpreter
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc_per_node}"]
    else:
        launcher = [sys.executable]
    train_py = os.path.relpath(TRAIN_PY)
    cmd = launcher + [train_py] + config_files(configs, setting["optimizer"])
    cmd += [f"--{k}={v!r}" if not isinstance(v, str) else f"--{k}={v}" for k, v in setting.items()]
    cmd += [f"--{k}={v}" for k, v in overrides.items()]
    cmd.append(f"--out_dir={out_dir}")
    if resume:
        cmd.append("--resume=True")
    return cmd


def evaluate_command(out_dir, part):
    """The evaluate.py command that scores a run on a half of the validation shard."""
    return [sys.executable, os.path.relpath(EVALUATE_PY), str(out_dir), f"--part={part}"]


def plan(args, extra):
    """-> [(name, action, command or None, evaluation command or None)] for every run of the grid;
    the evaluation runs when --evaluate asks for it and the run has no eval_PART.json yet."""
    grid = {arg: parse_list(getattr(args, arg), f"--{arg}", CHECKS[arg])
            for arg in CHECKS if getattr(args, arg) is not None}
    overrides = parse_overrides(extra)
    wanted_extra = {k: literal(v) for k, v in overrides.items()}
    out = Path(args.out)
    steps = []
    for setting in expand_grid(grid):
        name = run_name(setting)
        out_dir = out / name
        action = plan_run(out_dir, {**setting, **wanted_extra}, args.skip_failed)
        cmd = None if action.startswith("skip") else train_command(
            setting, out_dir, args.config, overrides, args.nproc_per_node, resume=action in ("resume", "restart"))
        scored = args.evaluate is None or (out_dir / f"eval_{args.evaluate}.json").exists()
        evaluation = None if scored or action == "skip-failed" else evaluate_command(out_dir, args.evaluate)
        steps.append((name, action, cmd, evaluation))
    return steps


ACTIONS = {  # what the sweep does with a run -> why, as printed
    "skip": "complete",
    "skip-failed": "failed, left alone (--skip_failed)",
    "resume": "unfinished: continues from its ckpt.pt",
    "restart": "unfinished, no ckpt.pt: from step 0",
    "start": "new",
}


def run(args, extra):
    steps = plan(args, extra)
    counts = ", ".join(f"{sum(a == action for _, a, _, _ in steps)} {action}" for action in ACTIONS)
    print(f"# sweep of {len(steps)} runs in {args.out}: {counts}")
    failed = []
    for i, (name, action, cmd, evaluation) in enumerate(steps, 1):
        print(f"# [{i}/{len(steps)}] {action} {name}: {ACTIONS[action]}", flush=True)
        for command in (cmd, evaluation):
            if command is None:
                continue
            print(shlex.join(command), flush=True)
            if not args.dry_run and subprocess.run(command).returncode != 0:
                failed.append(name)
                print(f"# {name} exited with an error; going on with the next run", flush=True)
                break
    if failed:
        print(f"sweep.py: {len(failed)} run(s) exited with an error: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


# -----------------------------------------------------------------------------
# summarizing result.json files

def load_results(folder, part=None):
    """-> (complete, incomplete) over every result.json under folder.

    complete: {"method", "variant", "setting", "seed", "loss", "last"} per completed run with a
    loss: the final validation loss of result.json, or with part ("tuning" or "test") the
    returned model's and the last iterate's loss on that half of the validation shard, from
    the run's eval_PART.json (evaluate.py); incomplete: {"run", "status", "detail", "method"}
    per other run (running, failed, unparsable, not scored, or completed without a finite
    loss), to be reported.
    """
    paths = sorted(Path(folder).rglob("result.json"))
    if not paths:
        raise SweepError(f"no result.json under {folder}")
    complete, incomplete = [], []
    for path in paths:
        run = str(path.parent.relative_to(folder))
        result, problem = read_result(path)
        if result is None:
            incomplete.append({"run": run, "status": "unparsable", "detail": problem, "method": None})
            continue
        config, summary = result["config"], result["summary"]
        method, status = config.get("optimizer"), summary.get("status")
        loss, last, problem = summary.get("final_val_loss"), None, None
        if part is not None and status == "completed":
            scores, problem = read_scores(path.parent / f"eval_{part}.json")
            if scores is not None:
                loss, last = scores["returned"], scores["last"]
        if status != "completed":
            detail = describe_incomplete(result)
        elif problem is not None:
            detail = f"not scored on the {part} half ({problem}): python evaluate.py {path.parent} --part={part}"
        elif not is_number(loss):
            detail = f"final_val_loss is {loss!r}"
        elif method is None:
            detail = "config has no 'optimizer'"
        else:
            complete.append({
                "method": method,
                "variant": tuple((k, config.get(k)) for k in method_keys(method)),
                "setting": {k: v for k, v in config.items() if k not in NOT_SETTING},
                "seed": config.get("seed"),
                "loss": float(loss),
                "last": float(last) if is_number(last) else None,
            })
            continue
        incomplete.append({"run": run, "status": str(status), "detail": detail, "method": method})
    return complete, incomplete


def read_scores(path):
    """-> (dict, None) for an eval_PART.json with finite returned and last losses, (None, reason) otherwise."""
    try:
        with open(path) as f:
            scores = json.load(f)
    except (OSError, ValueError) as e:
        return None, type(e).__name__
    if not isinstance(scores, dict) or not all(is_number(scores.get(k)) for k in ("returned", "last")):
        return None, "no finite 'returned' and 'last' losses"
    return scores, None


def method_keys(method):
    """The keys that tell one variant of a method from another (see the module docstring)."""
    return {"pace": ("lambda_pullback", "ema_kappa"), "ema": ("ema_kappa",)}.get(method, ())


def describe_incomplete(result):
    summary, logs = result["summary"], result.get("eval_logs") or []
    if summary.get("status") == "failed":
        return " ".join(str(summary.get("error", "no error message")).split())[:160]
    if logs and isinstance(logs[-1], dict):
        last = logs[-1].get("val_loss")
        return f"last eval at step {logs[-1].get('step')}: val_loss " + (f"{last:.4f}" if is_number(last) else repr(last))
    return "no evaluation yet"


def hashable(v):
    return json.dumps(v, sort_keys=True)


def sort_key(values):
    # numbers before strings, so that rows run 1e-4, 3e-4, 1e-3 and mixed types still sort
    return tuple((0, v, "") if is_number(v) else (1, 0, hashable(v)) for v in values)


def mean_std(xs):
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else None), len(xs)


def fmt_loss(mean, std, n):
    return f"{mean:.4f} ± {std:.4f} (n={n})" if std is not None else f"{mean:.4f} (n={n})"


def variant_label(variant):
    return " ".join(f"{SYMBOL.get(k, k)}={fmt(v)}" for k, v in variant)


def group(complete):
    """-> (columns, {setting: {method: {variant: (mean, std, n)}}}), settings in table order.

    columns: the setting keys shown: lr and schedule, and every other key that differs
    between runs. Keys left out are common to all runs, so grouping on the shown ones
    never pools runs of different settings.
    """
    keys = sorted({k for r in complete for k in r["setting"]})
    varying = [k for k in keys if len({hashable(r["setting"].get(k)) for r in complete}) > 1]
    columns = [k for k in ("lr", "schedule") if k in keys] + [k for k in varying if k not in ("lr", "schedule")]
    settings, losses = {}, {}
    for r in complete:
        shown = tuple(r["setting"].get(k) for k in columns)
        key = tuple(map(hashable, shown))  # values may be lists: hash their JSON
        settings[key] = shown
        losses.setdefault(key, {}).setdefault(r["method"], {}).setdefault(r["variant"], []).append(r["loss"])
    table = {}
    for key in sorted(losses, key=lambda k: sort_key(settings[k])):
        table[settings[key]] = {m: {v: mean_std(xs) for v, xs in variants.items()}
                                for m, variants in losses[key].items()}
    return columns, table


def best(variants):
    """The variant with the lowest mean loss -> (variant, (mean, std, n))."""
    return min(variants.items(), key=lambda item: item[1][0])


def pace_vs_baseline(pace_stats, methods):
    """PACE's mean minus the best baseline's (adamw, or ema at its best kappa), with its standard error."""
    baselines = [(m, best(methods[m])) for m in ("adamw", "ema") if m in methods]
    if not baselines:
        return "–"
    name, (_, stats) = min(baselines, key=lambda item: item[1][1][0])
    return f"{with_error(*pace_stats, stats)} vs {name}"


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


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


def pyplot():
    """matplotlib's pyplot drawing into files, or None when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


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
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("final val loss (returned model)")
    axes[0][0].legend(frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return True


def summarize(args):
    complete, incomplete = load_results(args.folder)
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


# -----------------------------------------------------------------------------
# choosing on the tuning half, reporting on the test half

def variant_name(run):
    """What a study chooses an lr for: the method and its variant, e.g. "pace c=0.5 κ=0.5"."""
    return " ".join([run["method"]] + ([variant_label(run["variant"])] if run["variant"] else []))


def by_variant(runs):
    """-> {variant name: {lr: [runs]}}, in METHODS order; an error when the runs of one variant
    differ in a setting other than lr and the seed, which a choice of lr would then hide."""
    groups, settings = {}, {}
    for r in sorted(runs, key=lambda r: (METHODS.index(r["method"]) if r["method"] in METHODS else len(METHODS),
                                         sort_key([v for _, v in r["variant"]]))):
        name, rest = variant_name(r), {k: v for k, v in r["setting"].items() if k != "lr"}
        if settings.setdefault(name, rest) != rest:
            keys = sorted(k for k in rest.keys() | settings[name].keys() if rest.get(k) != settings[name].get(k))
            raise SweepError(f"the runs of {name} differ in {', '.join(keys)}: keep one study per folder")
        groups.setdefault(name, {}).setdefault(r["setting"]["lr"], []).append(r)
    return groups


def select(args):
    """Per variant, the lr whose run of seed --seed has the lowest tuning-half loss; a best lr
    on the edge of the variant's grid says which lr to run next. Writes FOLDER/selection.json."""
    complete, incomplete = load_results(args.folder, "tuning")
    groups = by_variant([r for r in complete if r["seed"] == args.seed])
    if not groups:
        raise SweepError(f"select: no run of seed {args.seed} under {args.folder} is scored on the tuning half")
    lrs = sorted({lr for by_lr in groups.values() for lr in by_lr})
    rows, selection = [], {}
    for name, by_lr in groups.items():
        loss = {lr: runs[0]["loss"] for lr, runs in by_lr.items()}
        best_lr, grid = min(loss, key=loss.get), sorted(loss)
        beyond = [lr for lr, edge in ((best_lr / 2, grid[0]), (best_lr * 2, grid[-1])) if best_lr == edge]
        selection[name] = {"lr": best_lr, "tuning_loss": loss[best_lr], "on_edge": bool(beyond)}
        cells = [("**{:.4f}**" if lr == best_lr else "{:.4f}").format(loss[lr]) if lr in loss else "–" for lr in lrs]
        todo = "run lr " + " and ".join(map(fmt, beyond)) if beyond else "selected"
        rows.append([name, *cells, fmt(best_lr), todo])
    print(f"Tuning-half loss of the returned model, seed {args.seed}; the lowest of each variant in bold.\n")
    print(markdown_table(["variant", *(f"lr {fmt(lr)}" for lr in lrs), "best lr", "next"], rows))
    if incomplete:
        print(f"\nRuns not in the table ({len(incomplete)}):\n")
        print(markdown_table(["run", "status", "detail"], [[r["run"], r["status"], r["detail"]] for r in incomplete]))
    from train import save_atomically  # train imports torch, which nothing else here needs
    path = Path(args.folder) / "selection.json"
    save_atomically(str(path), lambda f: f.write(json.dumps({"seed": args.seed, "variants": selection}, indent=1).encode()))
    edges = [name for name, chosen in selection.items() if chosen["on_edge"]]
    print(f"\n{path}: " + (f"{len(edges)} variant(s) with the best lr on an edge of the grid: extend it"
                            if edges else "every best lr lies inside its grid"))
    plot_path = Path(args.folder) / "tuning_vs_lr.png"
    if plot_selection(groups, selection, plot_path):
        print(f"plot: {plot_path}")
    else:
        print("matplotlib is not installed: no plot (pip install matplotlib); the table above is complete")
    return 0


def plot_selection(groups, selection, path):
    """Tuning-half loss against lr, one line per variant, its selected lr starred. False
    when matplotlib is missing."""
    plt = pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for i, (name, by_lr) in enumerate(groups.items()):
        method = name.split()[0]
        same_method = [n for n in groups if n.split()[0] == method]
        points = sorted((lr, runs[0]["loss"]) for lr, runs in by_lr.items())
        ax.plot(*zip(*points), marker="o", ms=4, lw=1.5, color=METHOD_COLORS.get(method, f"C{i % 10}"),
                ls=("-", "--", ":", "-.")[same_method.index(name) % 4], label=name)
        chosen = selection[name]
        ax.plot(chosen["lr"], chosen["tuning_loss"], marker="*", ms=12, color=METHOD_COLORS.get(method, f"C{i % 10}"))
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("tuning-half loss (returned model)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return True


def with_error(mean, std, n, other):
    """mean − other's mean ± the standard error of the difference (unpaired)."""
    om, os_, on = other
    if std is None or os_ is None:
        return f"{mean - om:+.4f}"
    return f"{mean - om:+.4f} ± {math.sqrt(std ** 2 / n + os_ ** 2 / on):.4f}"


def report(args):
    """The selected variants' test-half losses over seeds, and each against the baselines."""
    path = Path(args.folder) / "selection.json"
    try:
        selection = json.loads(path.read_text())["variants"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SweepError(f"report: {path}: no selection to report on ({type(e).__name__}): run sweep.py select first")
    complete, incomplete = load_results(args.folder, "test")
    groups = by_variant(complete)
    stats, rows = {}, []
    for name, chosen in selection.items():
        runs = groups.get(name, {}).get(chosen["lr"], [])
        if runs:
            stats[name] = (mean_std([r["loss"] for r in runs]), mean_std([r["last"] for r in runs]),
                           {r["seed"]: r["loss"] for r in runs})
    baselines = [name for name in stats if name.split()[0] in ("adamw", "ema")]
    for name, (returned, last, by_seed) in stats.items():
        row = [name, fmt(selection[name]["lr"]), ", ".join(map(str, sorted(by_seed))), fmt_loss(*returned),
               fmt_loss(*last)]
        for base in baselines:
            seeds = sorted(by_seed.keys() & stats[base][2].keys())
            wins = sum(by_seed[s] < stats[base][2][s] for s in seeds)
            row.append("–" if base == name else f"{with_error(*returned, stats[base][0])} (lower on {wins} of {len(seeds)} seeds)")
        rows.append(row)
    print("Test-half loss of the selected settings, mean ± std over seeds (n runs); lower is better. "
          "Δ = the row's mean − the baseline's ± the standard error of the difference.\n")
    print(markdown_table(["variant", "lr", "seeds", "returned model", "last iterate",
                          *(f"Δ vs {base}" for base in baselines)], rows))
    edges = [name for name, chosen in selection.items() if chosen.get("on_edge")]
    if edges:
        print(f"\nNot final: the selected lr of {', '.join(edges)} lies on an edge of its grid (sweep.py select)")
    unreported = [name for name in selection if name not in stats]
    if unreported:
        print(f"\nSelected but not yet scored on the test half: {', '.join(unreported)}")
    others = [r for r in incomplete if "not scored" not in r["detail"]]
    if others:
        print(f"\nRuns not in the table ({len(others)}):\n")
        print(markdown_table(["run", "status", "detail"], [[r["run"], r["status"], r["detail"]] for r in others]))
    return 0


# -----------------------------------------------------------------------------
# training curves of single runs

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
    methods = [group[0][1]["config"].get("optimizer") for group in settings]
    by_method = len(set(methods)) == len(methods) and all(m in METHOD_COLORS for m in methods)
    columns = min(len(titles), 4)
    rows = -(-len(titles) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.4 * columns, 3.4 * rows), squeeze=False)
    panels = dict(zip(titles, axes.flat))
    for i, (group, method) in enumerate(zip(settings, methods)):
        color = METHOD_COLORS[method] if by_method else f"C{i % 10}"
        # earlier settings a little wider: one that trains exactly like another (ema like adamw) shows beneath it
        width = 1.2 * 1.6 ** min(len(settings) - 1 - i, 2)
        for j, (label, result) in enumerate(group):
            if j > 0:
                label = "_nolegend_"
            elif len(group) > 1:
                seeds = ", ".join(str(r["config"]["seed"]) for _, r in group)
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
        print("sweep.py: matplotlib is not installed: no plot (pip install matplotlib)", file=sys.stderr)
        return 1
    print(f"curves: {path}")
    return 0


# -----------------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", allow_abbrev=False, help="run (or print) the train.py runs of a grid",
                       epilog="Any other --key=value is passed to every train.py run.")
    r.add_argument("--method", help=f"comma list of {', '.join(METHODS)} (default: all three)")
    r.add_argument("--lr", help="comma list of learning rates")
    r.add_argument("--c", help="comma list of PACE pullback strengths (lambda_pullback); pace runs only")
    r.add_argument("--kappa", help="comma list of EMA schedule exponents (ema_kappa); ema and pace runs")
    r.add_argument("--schedule", help=f"comma list of {', '.join(SCHEDULES)}")
    r.add_argument("--seed", help="comma list of seeds")
    r.add_argument("--config", action="append", default=[], metavar="FILE",
                   help="config file for every run, in order; '{method}' is replaced by the run's method")
    r.add_argument("--out", default="runs/sweep", help="folder that holds one folder per run (default runs/sweep)")
    r.add_argument("--nproc_per_node", type=int, default=0, help="run each run under torchrun with this many processes")
    r.add_argument("--skip_failed", action="store_true", help="leave runs whose status is 'failed' alone")
    r.add_argument("--dry_run", action="store_true", help="print the commands without running them")
    r.add_argument("--evaluate", choices=("tuning", "test"),
                   help="after each run, score it on this half of the validation shard (evaluate.py)")
    s = sub.add_parser("summarize", allow_abbrev=False, help="tabulate (and plot) every result.json under a folder")
    s.add_argument("folder")
    s.add_argument("--plot", help="PNG to write (default FOLDER/loss_vs_lr.png)")
    s.add_argument("--no_plot", action="store_true", help="do not plot")
    e = sub.add_parser("select", allow_abbrev=False, help="the best lr per variant by the tuning-half loss")
    e.add_argument("folder")
    e.add_argument("--seed", type=int, default=1337, help="the seed of the runs that choose (default %(default)s)")
    t = sub.add_parser("report", allow_abbrev=False, help="the selected settings' test-half loss over seeds")
    t.add_argument("folder")
    c = sub.add_parser("curves", allow_abbrev=False, help="plot the training curves of runs into a PNG")
    c.add_argument("runs", nargs="+", metavar="RUN", help="a run's folder or its result.json")
    c.add_argument("--out", help="PNG to write (default: curves.png in the folder the runs share)")
    args, extra = parser.parse_known_args(argv)
    try:
        if args.command == "curves":
            if extra:
                raise SweepError(f"curves: unrecognized arguments {' '.join(extra)}")
            return curves(args)
        if args.command in ("summarize", "select", "report"):
            if extra:
                raise SweepError(f"{args.command}: unrecognized arguments {' '.join(extra)}")
            return {"summarize": summarize, "select": select, "report": report}[args.command](args)
        if args.nproc_per_node < 0:
            raise SweepError("--nproc_per_node must be >= 0")
        return run(args, extra)
    except SweepError as e:
        print(f"sweep.py: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
