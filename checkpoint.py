"""
A run's files on disk: writing them so that a crash never leaves half a file, reading a
checkpoint without trusting it to run code, and loading the model a run returns.

A run's out_dir holds result.json ({"config", "summary", "eval_logs", "step_logs"}) and
ckpt.pt (the last iterate ckpt["model"], the optimizer with its EMA, the step, the data
position, the RNG states, the gradient scaler, the config and the logs).
"""

import json
import os
from dataclasses import replace

import torch

from model import GPT2_VOCAB_SIZE, from_hf_gpt2
from errors import Error, first_line
from settings import make_model, make_optimizer, precision, settings_of

# what a checkpoint holds; eval_time and scaler too, except in those written before train.py recorded them
CHECKPOINT_KEYS = ("model", "optimizer", "step", "data_pos", "rng", "config", "eval_logs", "step_logs", "wall_time")
MODELS = ("returned", "last")  # what a method returns (the EMA for ema and pace), and the last iterate


def save_atomically(path, save):
    """Write path through a temporary file: a crash at any moment leaves the old file or the new one, whole."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            save(f)
        os.replace(tmp, path)
    except BaseException:  # a full disk, a lost permission: the old file stays, the half-written one goes
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_json(path, value):
    save_atomically(path, lambda f: f.write(json.dumps(value, indent=1).encode()))


def load_checkpoint(path):
    """The checkpoint train.py wrote at path, its tensors on the CPU. weights_only=True on every torch
    version: tensors and plain containers only, so a tampered file cannot run code."""
    what_to_do = "restore a good copy of it, or start a new run in another out_dir"
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise Error(f"{path} not found")
    except Exception as e:  # truncated, not a torch file, objects that need code: all unreadable alike
        lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [""]
        # torch names a refused object (GLOBAL module.name) on a line of its own, after advice to load it anyway
        reason = next((line for line in lines if "GLOBAL" in line), lines[0].split(". ")[0])
        raise Error(f"cannot read the checkpoint {path} ({type(e).__name__}: {reason[:200]}); it is truncated, "
                    f"not a checkpoint or holds objects other than tensors; {what_to_do}")
    missing = [key for key in CHECKPOINT_KEYS if not isinstance(ckpt, dict) or key not in ckpt]
    if missing:
        raise Error(f"{path} is not a checkpoint of train.py: it lacks {', '.join(missing)}; {what_to_do}")
    return ckpt


def run_files(out_dir):
    """(ckpt.pt, result.json) of the run in out_dir."""
    return os.path.join(out_dir, "ckpt.pt"), os.path.join(out_dir, "result.json")


def checkpoint_to_resume(out_dir, resume):
    """The checkpoint of the run in out_dir to resume (resume: the setting), or None for a new run; an
    out_dir that holds a run needs resume."""
    ckpt_path, result_path = run_files(out_dir)
    if resume and os.path.exists(ckpt_path):
        return load_checkpoint(ckpt_path)
    if not resume and (os.path.exists(ckpt_path) or os.path.exists(result_path)):
        raise Error(f"{out_dir} already holds a run: continue it with --resume=True or choose another out_dir")
    return None


def load_run(out_dir):
    """(the model with the last iterate of the run in out_dir, its optimizer with the state of its
    ckpt.pt (the EMA, Adam's moments), the run's Settings), on the CPU."""
    path = run_files(out_dir)[0]
    ckpt = load_checkpoint(path)
    cfg = settings_of(ckpt["config"])
    model = make_model(cfg)
    opt = make_optimizer(cfg, model)
    try:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise Error(f"{path} does not match the config it holds: {first_line(e)}")
    return model, opt, cfg


def load_model(out_dir, which="returned"):
    """The model of the run in out_dir in eval mode, and the run's Settings. which="returned": what
    the method returns (the EMA for ema and pace, the last iterate for adamw); which="last": the last iterate."""
    model, opt, cfg = load_run(out_dir)
    if which == "returned":
        opt.eval()  # the EMA into the model; for adamw (no EMA) the last iterate stays
    return model.eval(), cfg


def get_device(name):
    """A tool's --device: auto is cuda when there is a GPU, else cpu."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise Error(f"--device={name} but no CUDA device is available")
    return name


def autocast(cfg, device):
    """The autocast context the run trained in (its dtype setting), on device."""
    return precision(cfg, torch.device(device).type)[0]


GPT2_NAMES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")  # OpenAI's GPT-2s on the Hugging Face hub
SHAPE = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size")  # the settings a model's weights fix


def initial_weights(cfg, given):
    """(cfg with the shape of the weights that init_from names (with_shape), those weights as a
    state_dict for its model): GPT-2's 50,257 tokens padded to the vocab_size setting, as the model's
    own vocabulary is; a run's weights as they are."""
    source = cfg.init_from
    if source in GPT2_NAMES or os.path.isfile(os.path.join(source, "config.json")):
        shape, hf_state = hf_gpt2_weights(source)
        if cfg.vocab_size < GPT2_VOCAB_SIZE:
            raise Error(f"vocab_size is {cfg.vocab_size} but init_from={source} has GPT-2's {GPT2_VOCAB_SIZE} tokens")
        cfg = with_shape(cfg, given, shape, f"init_from={source}")
        return cfg, from_hf_gpt2(hf_state, cfg)
    if os.path.isfile(os.path.join(source, "ckpt.pt")):
        model, opt, run_cfg = load_run(source)
        if cfg.init_weights == "returned":
            opt.eval()  # the EMA into the model, for ema and pace runs
        cfg = with_shape(cfg, given, {k: getattr(run_cfg, k) for k in SHAPE}, f"init_from={source}")
        return cfg, {name: tensor[:cfg.block_size] if name == "transformer.wpe.weight" else tensor
                     for name, tensor in model.state_dict().items()}
    raise Error(f"init_from={source}: not scratch, one of {', '.join(GPT2_NAMES)}, a folder holding a Hugging Face "
                f"GPT-2 (config.json) nor a run's out_dir (ckpt.pt)")


def with_shape(cfg, given, shape, source):
    """cfg with the shape settings of `shape` (a model's) where they were not given (the keys of given): a
    given setting that contradicts it is an error naming both values, but for a block_size that crops
    its position embedding."""
    for key, value in shape.items():
        if key in given and given[key] != value and not (key == "block_size" and given[key] < value):
            raise Error(f"{key} is {given[key]} but {source} has {value}"
                        + (" (block_size may be smaller: the position embedding is cropped)" if key == "block_size" else ""))
    return replace(cfg, **{key: value for key, value in shape.items() if key not in given})


def hf_gpt2_weights(source):
    """({n_layer, n_head, n_embd, block_size}, the state_dict) of a Hugging Face GPT-2: one of
    GPT2_NAMES (downloaded by transformers, or from its cache offline) or a folder."""
    try:
        from transformers import GPT2LMHeadModel
    except ImportError:
        raise Error(f"init_from={source} needs transformers: pip install transformers")
    try:
        hf = GPT2LMHeadModel.from_pretrained(source)
    except (OSError, ValueError) as e:
        raise Error(f"init_from={source}: transformers cannot load it: {first_line(e)}")
    c = hf.config
    return {"n_layer": c.n_layer, "n_head": c.n_head, "n_embd": c.n_embd, "block_size": c.n_positions}, hf.state_dict()
