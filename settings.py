"""
The settings of a training run, and what they make: the model, the optimizer, the
learning-rate schedule and the arithmetic precision. train.py reads them; the tools that
load a run (sample.py, tools/, studies/) read them back from its checkpoint.

Settings start at their defaults, which are the GPT-2-124M recipe. Config files are Python
files that assign some of them; --key=value arguments set one, its value a Python literal
(--compile=False, --betas=(0.9,0.95)); a string may be bare (--out_dir=out/x). Later files
and arguments win. What the defaults cost is worked out in docs/measurements.md.
"""

import ast
import importlib.util
import math
import os
import runpy
import types
import typing
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields, replace

import torch

from errors import Error
from model import AUTO_LOSS, GPT, LOSSES, GPTConfig
from pace import PACE


@dataclass
class Settings:
    # data and output
    data_dir: str = "data/fineweb10B"  # the shards written by prepare_fineweb.py
    out_dir: str = "out"
    resume: bool = False  # continue the run in out_dir from its ckpt.pt
    # system
    device: str = "auto"  # auto (cuda if available) | cpu | cuda
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16 (autocast; float16 with a gradient scaler); auto: bfloat16 on GPUs that have it, float16 on older GPUs, float32 on CPUs; a run keeps its choice when resumed
    compile: bool | None = None  # torch.compile the model; None: on for cuda, off for cpu
    loss: str = "auto"  # auto | chunked | full | liger: the output layer and loss (model.LOSSES); auto: chunked on CPUs, full on GPUs (model.AUTO_LOSS)
    deterministic: bool = False  # torch's deterministic algorithms: a GPU run repeats and resumes bit for bit, more slowly (docs/gpus.md)
    seed: int = 1337  # of the model's initialization
    init_from: str = "scratch"  # scratch | gpt2 | gpt2-medium | gpt2-large | gpt2-xl | a Hugging Face GPT-2 folder | a run's out_dir
    init_weights: str = "returned"  # init_from a run: its returned model (the EMA for ema and pace) or its last iterate
    # model: GPT-2-124M
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    block_size: int = 1024
    vocab_size: int = 50304  # GPT-2's 50257 padded to a multiple of 64
    # batch: gradient accumulation steps = total_batch_size / (batch_size * block_size * processes)
    batch_size: int = 16  # sequences per micro-batch per process: as many as fit in memory
    total_batch_size: int = 524288  # tokens per optimizer step: 2**19, about GPT-3 small's 0.5M
    max_steps: int = 19073  # 10B tokens / total_batch_size: one pass over FineWeb 10B
    # optimizer: the three methods are one PACE optimizer at three settings (make_optimizer)
    optimizer: str = "adamw"  # adamw | ema (AdamW, the EMA returned) | pace (AdamW pulled toward the EMA, the EMA returned)
    lr: float = 6e-4  # peak learning rate, GPT-3 small's
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    lambda_pullback: float = 0.15  # c, the pullback strength; used by pace only
    clamp_pullback: bool = True  # clamp each coordinate's pullback gain to at most 1
    pullback_params: str = "all"  # pace: the weights pulled toward the EMA: all | embedding (the token embedding) | matrices (the other 2-D weights); the EMA covers all
    ema_kappa: float | None = 0.2  # κ: the EMA decays as (1 + γ·max(0, t − ρ))^(−κ); None: a fixed beta_ema
    ema_rho: float = 0.0  # ρ, steps before the EMA decay starts to shrink
    ema_gamma: float = 1.0  # γ, the rate at which it shrinks
    beta_ema: float = 0.01  # the fixed EMA decay when ema_kappa is None
    ema_update_freq: int = 1  # update the EMA every this many steps
    grad_clip: float = 1.0  # clip the global gradient norm to this; 0 disables clipping
    # learning-rate schedule: linear warmup, then const | cos | wsd
    schedule: str = "cos"  # cos: cosine decay to min_lr_ratio·lr; wsd: lr, then linear decay over the last decay_frac of the steps
    warmup_steps: int = 700
    min_lr_ratio: float = 0.1  # cos and wsd end at min_lr_ratio·lr
    decay_frac: float = 0.2  # wsd only
    # evaluation, logging, checkpoints (what evaluation costs: docs/measurements.md)
    eval_interval: int = 500  # evaluate the returned model every this many steps, and after the last
    vanilla_eval_interval: int = 1000  # ema, pace: the last iterate too, at evaluations of multiples of this and after the last
    eval_tokens: int = 10_485_760  # the first this many tokens of the validation shard: the community's 10M
    log_interval: int = 10  # read the training loss back from the device every this many steps
    ckpt_interval: int = 1000  # write ckpt.pt every this many steps, and after the last
    stats_interval: int = 250  # ema, pace: PACE's telemetry into step_logs every this many steps (its cost: docs/measurements.md); 0: never
    # Weights & Biases, as nanoGPT: the master process logs step_logs, eval_logs and the summary to it
    wandb_log: bool = False  # needs pip install wandb
    wandb_project: str = "pace"
    wandb_run_name: str | None = None  # None: out_dir's last folder name


# settings a resumed run may change: where files are and how the steps are executed or observed, not what
# they compute (loss and deterministic are not: their steps round differently)
RESUMABLE_CHANGES = ("data_dir", "out_dir", "resume", "device", "compile", "batch_size",
                     "eval_interval", "vanilla_eval_interval", "log_interval", "ckpt_interval", "stats_interval",
                     "wandb_log", "wandb_project", "wandb_run_name")
DEFAULTS = Settings()  # what a checkpoint written before a setting existed ran with
SETTING_TYPES = {f.name: f.type for f in fields(Settings)}


def load_settings(args):
    """Settings from the defaults, then config files and --key=value arguments in order."""
    return Settings(**given_settings(args))


def given_settings(args):
    """{key: value} of the settings that config files and --key=value arguments give, in order."""
    values = {}
    for arg in args:
        if arg.startswith("--"):
            key, eq, text = arg[2:].partition("=")
            if not eq:
                raise Error(f"{arg}: expected --key=value")
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                value = text  # a bare string
            if SETTING_TYPES.get(key) is str and not isinstance(value, str):
                value = text  # --out_dir=1e3 is the folder "1e3"
            values[key] = setting(key, value, arg)
        else:
            if not os.path.isfile(arg):
                raise Error(f"config file {arg} not found")
            for key, value in runpy.run_path(arg).items():
                if not key.startswith("_"):
                    values[key] = setting(key, value, arg)
    return values


def settings_of(config):
    """The Settings of a run from the config dict its checkpoint or result.json holds."""
    return Settings(**{key: setting(key, value, "the run's config") for key, value in config.items()})


def setting(key, value, source):
    """value, given for the setting key by source, as a value of its type, or a clear error."""
    if key not in SETTING_TYPES:
        raise Error(f"unknown setting {key!r} ({source}); valid settings: {', '.join(SETTING_TYPES)}")
    return typed(key, value, SETTING_TYPES[key], source)


def typed(key, value, typ, source):
    """value as a value of type typ (an int is a float too), or a clear error."""
    expected = typ
    if isinstance(typ, types.UnionType):  # X | None
        if value is None:
            return None
        typ = typing.get_args(typ)[0]
    if typing.get_origin(typ) is tuple:
        items = typing.get_args(typ)
        if isinstance(value, (tuple, list)) and len(value) == len(items):
            return tuple(typed(key, v, t, source) for v, t in zip(value, items))
    elif typ is float and type(value) is int:
        return float(value)
    elif type(value) is typ:
        return value
    raise Error(f"{key} must be {expected.__name__ if isinstance(expected, type) else expected}, got {value!r} ({source})")


def check_settings(cfg):
    """The checks of values that the types alone do not catch."""
    for key, allowed in (("device", ("auto", "cpu", "cuda")), ("dtype", ("auto", "float32", "bfloat16", "float16")),
                         ("loss", ("auto", *LOSSES)), ("init_weights", ("returned", "last")),
                         ("optimizer", ("adamw", "ema", "pace")), ("schedule", ("const", "cos", "wsd")),
                         ("pullback_params", PULLBACK_PARAMS)):
        if getattr(cfg, key) not in allowed:
            raise Error(f"{key} must be one of {', '.join(allowed)}, got {getattr(cfg, key)!r}")
    for key in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size", "batch_size", "total_batch_size",
                "max_steps", "eval_interval", "vanilla_eval_interval", "eval_tokens", "log_interval", "ckpt_interval"):
        if getattr(cfg, key) <= 0:
            raise Error(f"{key} must be positive, got {getattr(cfg, key)}")
    if cfg.n_embd % cfg.n_head:
        raise Error(f"n_embd ({cfg.n_embd}) must be a multiple of n_head ({cfg.n_head})")
    if cfg.eval_tokens % cfg.block_size:
        raise Error(f"eval_tokens ({cfg.eval_tokens}) must be a multiple of block_size ({cfg.block_size})")
    for key in ("warmup_steps", "grad_clip", "stats_interval"):
        if getattr(cfg, key) < 0:
            raise Error(f"{key} must not be negative, got {getattr(cfg, key)}")
    if not 0 <= cfg.min_lr_ratio <= 1:
        raise Error(f"min_lr_ratio must be in [0, 1], got {cfg.min_lr_ratio}")
    if not 0 < cfg.decay_frac <= 1:
        raise Error(f"decay_frac must be in (0, 1], got {cfg.decay_frac}")
    if cfg.optimizer == "pace" and cfg.lambda_pullback <= 0:
        raise Error("optimizer=pace needs lambda_pullback > 0 (with 0 it is optimizer=ema)")


def check_resumable(cfg, saved, device_type):
    """The settings that change what is computed must be those of the run resumed (saved: its config)."""
    for key, value in asdict(cfg).items():
        kept = saved.get(key, getattr(DEFAULTS, key))  # a setting newer than the run: its default
        if kept == "auto" and key in ("dtype", "loss"):  # a run older than resolve_auto: auto as it is now
            kept = auto_choice(key, device_type)
        if key not in RESUMABLE_CHANGES and kept != value:
            raise Error(f"{key} is {value!r} but the run in {cfg.out_dir} has {kept!r}; "
                        f"a resumed run must keep it (or start a new out_dir)")


def device_type(cfg):
    """cuda or cpu, from the device setting."""
    if cfg.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise Error("device=cuda but no CUDA device is available")
    return cfg.device


def auto_choice(key, device_type):
    """What dtype=auto and loss=auto mean on a device type."""
    if key == "loss":
        return AUTO_LOSS[device_type]
    return "float32" if device_type == "cpu" else "bfloat16" if torch.cuda.is_bf16_supported() else "float16"


def resolve_auto(cfg, device_type, saved=None):
    """(cfg with its dtype and loss `auto` replaced by what they mean, a printable line for each kept
    choice that differs from the device's). For a run resumed from a checkpoint (saved: its config), what
    the run chose when it started, so that it keeps its arithmetic on another device; else the device
    type's choice."""
    chosen, notes = {}, []
    for key in ("dtype", "loss"):
        if getattr(cfg, key) != "auto":
            continue
        choice = auto_choice(key, device_type)
        kept = (saved or {}).get(key, "auto")  # "auto" in a checkpoint of a run older than this rule
        if kept not in ("auto", choice):
            notes.append(f"{key}={kept}, as the run in {cfg.out_dir} started ({key}=auto would choose {choice} on {device_type})")
        chosen[key] = choice if kept == "auto" else kept
    cfg = replace(cfg, **chosen)
    if cfg.loss == "liger":
        if device_type != "cuda":
            raise Error("loss=liger runs Triton kernels: it needs device=cuda")
        if importlib.util.find_spec("liger_kernel") is None:
            raise Error("loss=liger needs liger-kernel: pip install liger-kernel")
    return cfg, notes


def precision(cfg, device_type):
    """(the autocast context of the dtype setting, its gradient scaler). float16 overflows where
    bfloat16 and float32 do not: its loss is scaled up before backward and the gradients down
    after, and a step whose gradients overflowed is skipped. Other dtypes get a disabled scaler."""
    name = auto_choice("dtype", device_type) if cfg.dtype == "auto" else cfg.dtype
    dtype = getattr(torch, name)
    autocast = nullcontext() if dtype == torch.float32 else torch.autocast(device_type, dtype=dtype)
    return autocast, torch.amp.GradScaler(device_type, enabled=dtype == torch.float16)


def make_model(cfg):
    """The GPT of the settings, initialized with their seed, on the CPU (loss=auto: the CPU's loss)."""
    torch.manual_seed(cfg.seed)
    return GPT(GPTConfig(block_size=cfg.block_size, vocab_size=cfg.vocab_size, n_layer=cfg.n_layer,
                         n_head=cfg.n_head, n_embd=cfg.n_embd),
               loss=auto_choice("loss", "cpu") if cfg.loss == "auto" else cfg.loss)


PULLBACK_PARAMS = ("all", "embedding", "matrices")


def pullback_groups(groups, embedding, pulled):
    """model.optim_groups' groups with the pullback limited to the `pulled` weights (PULLBACK_PARAMS):
    the matrices' group split into the token embedding and the other matrices, lambda_pullback 0 in the
    groups not pulled. Their EMA stays, and with c = 0 their step is the EMA baseline's, bit for bit."""
    if pulled == "all":
        return groups  # PACE's groups as they always were: the same steps, bit for bit
    matrices, vectors = groups
    others = [p for p in matrices["params"] if p is not embedding]
    split = [{**matrices, "params": [embedding]}, {**matrices, "params": others}, vectors]
    kept = split[0] if pulled == "embedding" else split[1]
    return [group if group is kept else {**group, "lambda_pullback": 0.0} for group in split]


def make_optimizer(cfg, model):
    """adamw: no pullback, no EMA; ema: no pullback, the EMA returned; pace: pullback (on the weights of
    pullback_params), the EMA returned."""
    groups = model.optim_groups(cfg.weight_decay)
    if cfg.optimizer == "pace":
        groups = pullback_groups(groups, model.transformer.wte.weight, cfg.pullback_params)
    try:
        return PACE(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                    lambda_pullback=cfg.lambda_pullback if cfg.optimizer == "pace" else 0.0,
                    use_ema_eval=cfg.optimizer != "adamw", clamp_pullback=cfg.clamp_pullback,
                    ema_kappa=cfg.ema_kappa, ema_rho=cfg.ema_rho, ema_gamma=cfg.ema_gamma,
                    beta_ema=cfg.beta_ema, ema_update_freq=cfg.ema_update_freq)
    except ValueError as e:  # PACE names the bad argument, which is also the setting's name
        raise Error(e)


def get_lr(step, cfg):
    """The learning rate of the step that follows `step` completed steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "const":
        return cfg.lr
    decay_start = cfg.warmup_steps
    if cfg.schedule == "wsd":
        decay_start = max(decay_start, cfg.max_steps - round(cfg.decay_frac * cfg.max_steps))
        if step < decay_start:
            return cfg.lr
    progress = (step - decay_start) / (cfg.max_steps - decay_start)  # from 0 to almost 1
    decay = 0.5 * (1 + math.cos(math.pi * progress)) if cfg.schedule == "cos" else 1 - progress
    min_lr = cfg.min_lr_ratio * cfg.lr
    return min_lr + decay * (cfg.lr - min_lr)
