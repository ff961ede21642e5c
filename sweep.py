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
    python sweep.py across runs/cos runs/const  # studies of other schedules side by side

select says what to run next: the lr beyond an edge of the grid where the best lr lies on it, and
seed 1 of the best two lrs where they lie within 0.03 nats of each other (the lower mean over the
two seeds then decides). report and across give each difference of two settings with both
standard errors, unpaired and paired over the seeds both have; report gives the losses in bits
per byte too, and evaluate.py's readouts: blends of EMA and live weights, PACE's last-step gains.

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

    complete: {"method", "variant", "setting", "seed", "loss", "last", "scores"} per completed run
    with a loss: the final validation loss of result.json, or with part ("tuning" or "test") the
    returned model's and the last iterate's loss on that half of the validation shard, from
    the run's eval_PART.json (evaluate.py), whose whole record is "scores" (None without part);
    incomplete: {"run", "status", "detail", "method", "diverged"} per other run (running, failed,
    unparsable, not scored, or completed without a finite loss), to be reported, with the
    method, variant, setting and seed of those whose config could be read: a run that diverged
    (train.py stopped it at a non-finite loss) counts in a choice of lr, as worse than any other.
    """
    paths = sorted(Path(folder).rglob("result.json"))
    if not paths:
        raise SweepError(f"no result.json under {folder}")
    complete, incomplete = [], []
    for path in paths:
        run = str(path.parent.relative_to(folder))
        result, problem = read_result(path)
        if result is None:
            incomplete.append({"run": run, "status": "unparsable", "detail": problem, "method": None, "diverged": False})
            continue
        config, summary = result["config"], result["summary"]
        method, status = config.get("optimizer"), summary.get("status")
        loss, last, scores, problem = summary.get("final_val_loss"), None, None, None
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
            complete.append({**run_identity(config), "loss": float(loss),
                             "last": float(last) if is_number(last) else None, "scores": scores})
            continue
        # train.py's message when it stops a run at a non-finite loss
        diverged = status == "failed" and str(summary.get("error", "")).startswith("non-finite")
        incomplete.append({"run": run, "status": str(status), "detail": detail, **run_identity(config),
                           "diverged": diverged})
    return complete, incomplete


def run_identity(config):
    """What places a run in a study: its method, its variant, its other settings and its seed."""
    method = config.get("optimizer")
    return {"method": method, "variant": tuple((k, config.get(k)) for k in method_keys(method)),
            "setting": {k: v for k, v in config.items() if k not in NOT_SETTING}, "seed": config.get("seed")}


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


# results/schedules300's tie rule: where the best two lrs of a variant lie within TIE_NATS of each
# other at the choosing seed, both are run with TIE_SEED too and the lower mean over the two seeds decides
TIE_NATS = 0.03
TIE_SEED = 1


def loss_at(runs, seed):
    """The loss of the run of this seed among runs (those of one lr), or None."""
    return next((r["loss"] for r in runs if r["seed"] == seed), None)


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
    complete, incomplete = load_results(args.folder, "tuning")
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
    from train import save_atomically  # train imports torch, which nothing else here needs
    path = Path(args.folder) / "selection.json"
    record = {"seed": args.seed, "tie_seed": TIE_SEED, "tie_nats": TIE_NATS, "variants": selection}
    save_atomically(str(path), lambda f: f.write(json.dumps(record, indent=1).encode()))
    pending = [name for name, chosen in selection.items() if chosen["next"]]
    print(f"\n{path}: " + (f"{len(pending)} variant(s) not final: run what 'next' says, score it on the tuning "
                            "half and select again" if pending else "every variant's lr is final"))
    plot_path = Path(args.folder) / "tuning_vs_lr.png"
    if plot_selection(groups, selection, args.seed, plot_path):
        print(f"plot: {plot_path}")
    else:
        print("matplotlib is not installed: no plot (pip install matplotlib); the table above is complete")
    return 0


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
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(f"tuning-half loss (returned model), seed {seed}")
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


def paired_with_error(diffs):
    """The mean of per-seed differences ± its standard error std / √n (paired): two runs of one seed
    share their initialization and data order, so what the seed does to both cancels."""
    mean, std, n = mean_std(diffs)
    return f"{mean:+.4f}" if std is None else f"{mean:+.4f} ± {std / math.sqrt(n):.4f}"


def difference(by_seed, other):
    """The cell of a difference of two settings' losses ({seed: loss} each): the difference of their
    means ± the unpaired standard error, the paired difference over the seeds both have, and on how
    many of those the first is lower."""
    unpaired = with_error(*mean_std(list(by_seed.values())), mean_std(list(other.values())))
    seeds = sorted(by_seed.keys() & other.keys())
    if not seeds:
        return f"{unpaired}; no seed in common"
    diffs = [by_seed[s] - other[s] for s in seeds]
    return f"{unpaired}; paired {paired_with_error(diffs)} (lower on {sum(d < 0 for d in diffs)} of {len(seeds)} seeds)"


def bits_per_byte(loss, scores):
    """A loss in nats per token of an eval file's half in bits per byte of its text, loss * tokens /
    (bytes * ln 2); None when the file has no "bytes" (evaluate.py --bytes_only adds them)."""
    if not is_number(scores.get("bytes")):
        return None
    return loss * scores["tokens"] / (scores["bytes"] * math.log(2))


def bpb_cell(runs, key):
    """mean ± std of the runs' losses under key ("loss" or "last") in bits per byte; – when an eval file lacks bytes."""
    values = [bits_per_byte(r[key], r["scores"]) for r in runs]
    return "–" if None in values else fmt_loss(*mean_std(values))


def load_selection(folder, command):
    """FOLDER/selection.json, which sweep.py select writes."""
    path = Path(folder) / "selection.json"
    try:
        selection = json.loads(path.read_text())
        dict(selection["variants"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SweepError(f"{command}: {path}: no selection to report on ({type(e).__name__}): run sweep.py select first")
    return selection


def selected_runs(folder, selection, part):
    """-> ({variant: the runs of its selected lr scored on part}, the runs not scored or not complete)."""
    complete, incomplete = load_results(folder, part)
    groups = by_variant(complete)
    return {name: groups.get(name, {}).get(chosen["lr"], []) for name, chosen in selection["variants"].items()}, incomplete


def not_final(chosen):
    """Whether a selection still asks for runs (selection.json of before the tie rule: on_edge alone)."""
    return bool(chosen.get("next") or chosen.get("on_edge"))


def report(args):
    """The selected variants' test-half losses over seeds (in nats per token and bits per byte), each
    against the baselines, and the readouts beside them: the blend of EMA and live weights chosen on the
    tuning half, and PACE's last-step gains."""
    selection = load_selection(args.folder, "report")
    tested, incomplete = selected_runs(args.folder, selection, "test")
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
    print_blends(args.folder, selection, tested)
    print_gains(tested)
    pending = [name for name, chosen in selection["variants"].items() if not_final(chosen)]
    if pending:
        print(f"\nNot final: the selection of {', '.join(pending)} asks for more runs (sweep.py select)")
    unreported = [name for name in selection["variants"] if name not in by_seed]
    if unreported:
        print(f"\nSelected but not yet scored on the test half: {', '.join(unreported)}")
    others = [r for r in incomplete if "not scored" not in r["detail"]]
    if others:
        print(f"\nRuns not in the table ({len(others)}):\n")
        print(markdown_table(["run", "status", "detail"], [[r["run"], r["status"], r["detail"]] for r in others]))
    return 0


def blends_of(runs):
    """-> {alpha: [loss of each run]} of runs' eval files, None when one of them has no blends."""
    if not runs or any("blends" not in r["scores"] for r in runs):
        return None
    alphas = sorted({a for r in runs for a in r["scores"]["blends"]}, key=float)
    return {a: [r["scores"]["blends"].get(a) for r in runs] for a in alphas}


def print_blends(folder, selection, tested):
    """Per ema and pace variant: the tuning-half loss of each blend alpha * EMA + (1 − alpha) * live
    weights (mean over the selected setting's runs of the choosing seeds), the alpha of the lowest, and
    the test-half loss at that alpha beside the returned model's (alpha = 1)."""
    tuning, _ = selected_runs(folder, selection, "tuning")
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
        print("\nBlends α·EMA + (1 − α)·live weights: the tuning-half loss of each α (mean over the selected "
              "setting's runs of the seeds shown), the best α on it, and the test-half loss at that α beside the "
              "returned model's (α = 1); Δ as above.\n")
        print(markdown_table(["variant", "tuning seeds", *(f"α={a}" for a in alphas), "best α", "test, best α",
                              "test, returned model", "Δ best α − returned"], rows))
    if missing:
        print(f"\nNo tuning-half blends for {', '.join(missing)} (seeds {', '.join(map(str, seeds))} of the selected "
              "lr): no α chosen; evaluate.py scores blends from a run's ckpt.pt")


def print_gains(tested):
    """Per pace variant: its pullback gains at the last step, per parameter group (evaluate.py's
    last_step_gains), the mean over its test runs of each group's mean gain and clamped share."""
    rows, missing = [], []
    for name, runs in tested.items():
        if name.split()[0] != "pace" or not runs:
            continue
        gains = [r["scores"].get("last_step_gains") for r in runs]
        if None in gains:
            missing.append(name)
            continue
        groups = [g for g in gains[0] if g != "step"]
        rows.append([name, ", ".join(map(str, sorted(r["seed"] for r in runs)))] + [
            "{:.3f}, {:.1%} clamped".format(statistics.fmean(g[group]["mean_gain"] for g in gains),
                                           statistics.fmean(g[group]["clamped_share"] for g in gains))
            for group in groups])
    if rows:
        print("\nPACE's pullback gains at the last step, recomputed from the checkpoint: mean gain and share "
              "clamped to 1 per parameter group, mean over the test runs.\n")
        print(markdown_table(["variant", "seeds", *groups], rows))
    if missing:
        print(f"\nNo last-step gains in the test-half eval files of {', '.join(missing)}")


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
        studies.append((folder, folder_schedule(folder), selection, selected_runs(folder, selection, "test")[0]))
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
    a = sub.add_parser("across", allow_abbrev=False,
                       help="the selected settings of studies of different schedules, a column each")
    a.add_argument("folders", nargs="+", metavar="FOLDER", help="a study's folder (select and report); the first "
                   "one's adamw is the reference of the differences")
    a.add_argument("--plot", help="PNG of the test loss against α (default: test_vs_alpha.png in the folder the "
                   "studies share)")
    c = sub.add_parser("curves", allow_abbrev=False, help="plot the training curves of runs into a PNG")
    c.add_argument("runs", nargs="+", metavar="RUN", help="a run's folder or its result.json")
    c.add_argument("--out", help="PNG to write (default: curves.png in the folder the runs share)")
    args, extra = parser.parse_known_args(argv)
    try:
        if args.command == "curves":
            if extra:
                raise SweepError(f"curves: unrecognized arguments {' '.join(extra)}")
            return curves(args)
        if args.command in ("summarize", "select", "report", "across"):
            if extra:
                raise SweepError(f"{args.command}: unrecognized arguments {' '.join(extra)}")
            return {"summarize": summarize, "select": select, "report": report, "across": across}[args.command](args)
        if args.nproc_per_node < 0:
            raise SweepError("--nproc_per_node must be >= 0")
        return run(args, extra)
    except SweepError as e:
        print(f"sweep.py: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
