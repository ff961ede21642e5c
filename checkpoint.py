"""
A run's files on disk: writing them so that a crash never leaves half a file, reading a
checkpoint without trusting it to run code, and loading the model a run returns.

A run's out_dir holds result.json ({"config", "summary", "eval_logs", "step_logs"}) and
ckpt.pt (the live weights ckpt["model"], the optimizer with its EMA, the step, the data
position, the RNG states, the gradient scaler, the config and the logs).
"""

import json
import os

import torch

from prepare_fineweb import first_line
from settings import die, make_model, make_optimizer, precision, settings_of

# what a checkpoint holds; eval_time and scaler too, except in those written before train.py recorded them
CHECKPOINT_KEYS = ("model", "optimizer", "step", "data_pos", "rng", "config", "eval_logs", "step_logs", "wall_time")
MODELS = ("returned", "last")  # what a method returns (the EMA for ema and pace), and the last iterate


def save_atomically(path, save):
    """Write path through a temporary file: a crash at any moment leaves the old file or the new one, whole."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        save(f)
    os.replace(tmp, path)


def save_json(path, value):
    save_atomically(path, lambda f: f.write(json.dumps(value, indent=1).encode()))


def load_checkpoint(path):
    """The checkpoint train.py wrote at path, its tensors on the CPU. weights_only=True on every torch
    version: tensors and plain containers only, so a tampered file cannot run code."""
    what_to_do = "restore a good copy of it, or start a new run in another out_dir"
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        die(f"{path} not found")
    except Exception as e:  # truncated, not a torch file, objects that need code: all unreadable alike
        lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [""]
        # torch names a refused object (GLOBAL module.name) on a line of its own, after advice to load it anyway
        reason = next((line for line in lines if "GLOBAL" in line), lines[0].split(". ")[0])
        die(f"cannot read the checkpoint {path} ({type(e).__name__}: {reason[:200]}); it is truncated, "
            f"not a checkpoint or holds objects other than tensors; {what_to_do}")
    missing = [key for key in CHECKPOINT_KEYS if not isinstance(ckpt, dict) or key not in ckpt]
    if missing:
        die(f"{path} is not a checkpoint of train.py: it lacks {', '.join(missing)}; {what_to_do}")
    return ckpt


def load_run(out_dir):
    """(the model with the live weights of the run in out_dir, its optimizer with the state of its
    ckpt.pt (the EMA, Adam's moments), the run's Settings), on the CPU."""
    path = os.path.join(out_dir, "ckpt.pt")
    ckpt = load_checkpoint(path)
    cfg = settings_of(ckpt["config"])
    model = make_model(cfg)
    opt = make_optimizer(cfg, model)
    try:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        die(f"{path} does not match the config it holds: {first_line(e)}")
    return model, opt, cfg


def load_model(out_dir, which="returned"):
    """The model of the run in out_dir in eval mode, and the run's Settings. which="returned": what
    the method returns (the EMA for ema and pace, the iterate for adamw); which="last": the last iterate."""
    model, opt, cfg = load_run(out_dir)
    if which == "returned":
        opt.eval()  # the EMA into the model; for adamw (no EMA) the iterate stays
    return model.eval(), cfg


def get_device(name):
    """A tool's --device: auto is cuda when there is a GPU, else cpu."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        die(f"--device={name} but no CUDA device is available")
    return name


def autocast(cfg, device):
    """The autocast context the run trained in (its dtype setting), on device."""
    return precision(cfg, torch.device(device).type)[0]
