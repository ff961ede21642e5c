"""
What a study's run folders hold, read and grouped: train.py's result.json and the eval files
of tools/evaluate.py, and the statistics of their losses (means, differences with their
standard errors, bits per byte). The grid runner (studies/sweep.py), the tables
(studies/analysis.py) and the figures (studies/plots.py) share these.
"""

import json
import math
import statistics
from pathlib import Path

from provenance import code_name

METHODS = ("adamw", "ema", "pace")


SCHEDULES = ("const", "cos", "wsd")


# config keys that are not part of a setting: what tells methods and their variants apart,
# the seed (averaged over), and the run's own folder
NOT_SETTING = {"optimizer", "lambda_pullback", "ema_kappa", "seed", "out_dir", "resume"}


SYMBOL = {"lambda_pullback": "c", "ema_kappa": "κ"}


class SweepError(Exception):
    """Bad input or an inconsistent run folder: reported as one line, exit code 1."""


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def fmt(v):
    """A value as it appears in folder names and tables: 0.001, 1e-05, cos, None."""
    return f"{v:g}" if isinstance(v, float) else str(v)


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


def load_results(folder, part=None):
    """-> (complete, incomplete) over every result.json under folder.

    complete: {"method", "variant", "setting", "seed", "code", "loss", "last", "scores"} per completed run
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
            detail = f"not scored on the {part} half ({problem}): python -m tools.evaluate {path.parent} --part={part}"
        elif not is_number(loss):
            detail = f"final_val_loss is {loss!r}"
        elif method is None:
            detail = "config has no 'optimizer'"
        else:
            complete.append({**run_identity(config), "code": run_code(result), "loss": float(loss),
                             "last": float(last) if is_number(last) else None, "scores": scores})
            continue
        # train.py's message when it stops a run at a non-finite loss
        diverged = status == "failed" and str(summary.get("error", "")).startswith("non-finite")
        incomplete.append({"run": run, "status": str(status), "detail": detail, **run_identity(config),
                           "code": run_code(result), "diverged": diverged})
    fill_newer_settings([r for r in complete + incomplete if "setting" in r])
    return complete, incomplete


def fill_newer_settings(runs):
    """Each run's setting completed with the defaults of settings newer than it (train.py resumes such a
    run with them too), so that runs made before a setting existed compare equal to runs made after
    with its default. Imports torch (settings.py), only when a run lacks a setting."""
    keys = {k for r in runs for k in r["setting"]}
    if all(keys <= r["setting"].keys() for r in runs):
        return
    from settings import DEFAULTS
    for r in runs:
        for k in keys - r["setting"].keys():
            if hasattr(DEFAULTS, k):
                r["setting"][k] = getattr(DEFAULTS, k)


def run_identity(config):
    """What places a run in a study: its method, its variant, its other settings and its seed."""
    method = config.get("optimizer")
    return {"method": method, "variant": tuple((k, config.get(k)) for k in method_keys(method)),
            "setting": {k: v for k, v in config.items() if k not in NOT_SETTING}, "seed": config.get("seed")}


def run_code(result):
    """The code a run was made with, in one word (provenance.code_name); "a then b" for a run resumed by
    other code; "unknown" for a run whose result.json records none (written before train.py did)."""
    sessions = result.get("code") if isinstance(result.get("code"), list) else []
    names = list(dict.fromkeys(code_name(s) if isinstance(s, dict) else None for s in sessions)) or [code_name(None)]
    return " then ".join(names)


def code_of_runs(runs, where, allow_mixed):
    """None when runs (load_results' records) were all made by one code; else a line naming each code
    and its runs' count, which is an error unless allow_mixed: a table of one study claims one code."""
    counts = {}
    for r in runs:
        if "code" in r:  # an unparsable result.json says nothing of its code
            counts[r["code"]] = counts.get(r["code"], 0) + 1
    if len(counts) < 2:
        return None
    line = f"{where}: runs of different code: " + "; ".join(f"{code} ({n} run{'s' * (n > 1)})" for code, n in
                                                           sorted(counts.items()))
    if not allow_mixed:
        raise SweepError(f"{line}; tabulate them together with --allow_mixed_code, and say why they may be")
    return line


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


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


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


def loss_at(runs, seed):
    """The loss of the run of this seed among runs (those of one lr), or None."""
    return next((r["loss"] for r in runs if r["seed"] == seed), None)


def blends_of(runs):
    """-> {alpha: [loss of each run]} of runs' eval files, None when one of them has no blends."""
    if not runs or any("blends" not in r["scores"] for r in runs):
        return None
    alphas = sorted({a for r in runs for a in r["scores"]["blends"]}, key=float)
    return {a: [r["scores"]["blends"].get(a) for r in runs] for a in alphas}
