"""
Run a grid of train.py runs, one after another, from the repository's root.

The grid is method x lr x c x kappa x schedule x seed; every axis is optional and an
axis that is not given is left to the config files and train.py's defaults. Each run
writes to its own folder, named from its setting, under --out:

    out/cpu/adamw_lr0.001_seed0
    out/cpu/ema_lr0.001_k0.2_seed0
    out/cpu/pace_lr0.001_c0.15_k0.2_seed0

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
validation shard with tools/evaluate.py (RUN/eval_PART.json; a run that has the file is
not scored again): studies choose settings on the tuning half and report on the test
half (studies/analysis.py).

Every command is printed exactly as it is run; --dry_run only prints them, as a shell
script (status lines are comments), so a cluster sweep can be reviewed or dispatched.
Settings given as --key=value that are not options of this script are passed through
to every run; '{method}' in a --config path is replaced by each run's method.

    # CPU: the three methods, a small lr x c grid, three seeds; --max_steps=160 passes through
    python -m studies.sweep --config configs/cpu.py --config 'configs/{method}.py' --lr 1e-3,3e-3 \\
        --c 0.15,0.3 --kappa 0.2 --seed 0,1,2 --out out/cpu --max_steps=160
    # the GPT-2 124M FineWeb sweep, each run on 8 GPUs (print the commands only)
    python -m studies.sweep --config 'configs/{method}.py' --lr 6e-4,1.2e-3,2.4e-3 --c 0.15 \\
        --kappa 0.2 --schedule cos,wsd --seed 0 --nproc_per_node 8 --out out/gpt2 --dry_run
"""

import argparse
import ast
import itertools
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from studies.results import METHODS, SCHEDULES, SweepError, fmt, is_number, read_result

# train.py settings this script sets itself; passing them through would fight the grid
CONTROLLED = {"optimizer": "--method", "lambda_pullback": "--c", "ema_kappa": "--kappa",
              "out_dir": "--out", "resume": "(set by the sweep)"}


TRAIN_PY = Path(__file__).resolve().parent.parent / "train.py"


EVALUATE = ["-m", "tools.evaluate"]  # run from the repository's root, as train.py is
UNSET = object()  # an axis that is not swept (None is a value: ema_kappa=None)


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
    """The tools/evaluate.py command that scores a run on a half of the validation shard."""
    return [sys.executable, *EVALUATE, str(out_dir), f"--part={part}"]


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



def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip(), allow_abbrev=False,
                                     epilog="Any other --key=value is passed to every train.py run.")
    parser.add_argument("--method", help=f"comma list of {', '.join(METHODS)} (default: all three)")
    parser.add_argument("--lr", help="comma list of learning rates")
    parser.add_argument("--c", help="comma list of PACE pullback strengths (lambda_pullback); pace runs only")
    parser.add_argument("--kappa", help="comma list of EMA schedule exponents (ema_kappa); ema and pace runs")
    parser.add_argument("--schedule", help=f"comma list of {', '.join(SCHEDULES)}")
    parser.add_argument("--seed", help="comma list of seeds")
    parser.add_argument("--config", action="append", default=[], metavar="FILE",
                        help="config file for every run, in order; '{method}' is replaced by the run's method")
    parser.add_argument("--out", default="out/sweep", help="folder that holds one folder per run (default out/sweep)")
    parser.add_argument("--nproc_per_node", type=int, default=0, help="run each run under torchrun with this many processes")
    parser.add_argument("--skip_failed", action="store_true", help="leave runs whose status is 'failed' alone")
    parser.add_argument("--dry_run", action="store_true", help="print the commands without running them")
    parser.add_argument("--evaluate", choices=("tuning", "test"),
                        help="after each run, score it on this half of the validation shard (tools/evaluate.py)")
    args, extra = parser.parse_known_args(argv)
    try:
        if args.nproc_per_node < 0:
            raise SweepError("--nproc_per_node must be >= 0")
        return run(args, extra)
    except SweepError as e:
        print(f"sweep.py: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
