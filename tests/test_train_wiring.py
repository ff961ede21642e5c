"""train.py's wiring: the settings reach PACE, and the training loop applies the schedule, the
clipping and the gradient accumulation (on one process and under DDP) as specified. Only the
files a run writes are read, never main()'s internals."""

import os
import sys

import numpy as np
import pytest
import torch

from checkpoint import load_run
from conftest import args_for, finish, read_result, run, start
from data import shard_paths
from model import GPT, GPTConfig
from pace import PACE
from settings import get_lr, load_settings, make_optimizer
from tools.evaluate import last_step_gains

pytestmark = pytest.mark.usefixtures("one_thread")

# every optimizer setting away from its default, and no two of them equal, so that one
# passed in another's place shows
OPTIMIZER_SETTINGS = {"betas": (0.8, 0.85), "eps": 1e-7, "weight_decay": 0.05, "lambda_pullback": 0.3,
                      "clamp_pullback": False, "ema_kappa": 0.5, "ema_rho": 2.0, "ema_gamma": 3.0,
                      "beta_ema": 0.2, "ema_update_freq": 2}


def setting_args(settings):
    return [f"--{k}={v!r}" for k, v in settings.items()]


@pytest.mark.parametrize("method", ["adamw", "ema", "pace"])
def test_every_optimizer_setting_reaches_pace(data_dir, tmp_path, method):
    extra = [f"--optimizer={method}", "--max_steps=1", *setting_args(OPTIMIZER_SETTINGS)]
    run(data_dir, tmp_path, *extra)
    saved = torch.load(tmp_path / "ckpt.pt")["optimizer"]
    want = {**OPTIMIZER_SETTINGS, "lambda_pullback": OPTIMIZER_SETTINGS["lambda_pullback"] if method == "pace" else 0.0,
            "use_ema_eval": method != "adamw", "lr": get_lr(0, load_settings(args_for(data_dir, tmp_path, *extra)))}
    # model.optim_groups: weight decay on the matrices only
    model = GPT(GPTConfig(block_size=32, vocab_size=64, n_layer=2, n_head=2, n_embd=32))
    groups = model.optim_groups(OPTIMIZER_SETTINGS["weight_decay"])
    assert [len(g["params"]) for g in saved["param_groups"]] == [len(g["params"]) for g in groups]
    for saved_group, group in zip(saved["param_groups"], groups):
        got = {k: saved_group[k] for k in want}
        assert got == {**want, "weight_decay": group["weight_decay"]}
        shapes = [tuple(saved["state"][i]["exp_avg"].shape) for i in saved_group["params"]]
        assert shapes == [tuple(p.shape) for p in group["params"]]
        assert all(("ema" in saved["state"][i]) == (method != "adamw") for i in saved_group["params"])


def train_shards(data_dir):
    """The training stream: the shards concatenated in order."""
    return np.concatenate([np.fromfile(path, dtype="<u2", offset=1024) for path in shard_paths(data_dir)])


def reference_training(data_dir, cfg):
    """The loop as specified, written out: the lr of get_lr, micro-batches whose mean loss is
    backpropagated, the gradient norm clipped to grad_clip, then PACE with every setting.
    -> (model, optimizer, [(lr, loss, grad norm before clipping)] per step)."""
    torch.manual_seed(cfg.seed)
    model = GPT(GPTConfig(block_size=cfg.block_size, vocab_size=cfg.vocab_size, n_layer=cfg.n_layer,
                          n_head=cfg.n_head, n_embd=cfg.n_embd))
    opt = PACE(model.optim_groups(cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
               lambda_pullback=cfg.lambda_pullback, use_ema_eval=True, clamp_pullback=cfg.clamp_pullback,
               ema_kappa=cfg.ema_kappa, ema_rho=cfg.ema_rho, ema_gamma=cfg.ema_gamma, beta_ema=cfg.beta_ema,
               ema_update_freq=cfg.ema_update_freq)
    stream = train_shards(data_dir)
    micro = cfg.batch_size * cfg.block_size
    accum = cfg.total_batch_size // micro
    logs = []
    for step in range(cfg.max_steps):
        lr = get_lr(step, cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        total = 0.0
        for a in range(accum):
            start_pos = step * cfg.total_batch_size + a * micro
            tokens = torch.from_numpy(stream[start_pos:start_pos + micro + 1].astype(np.int64))
            _, loss = model(tokens[:-1].view(cfg.batch_size, -1), tokens[1:].view(cfg.batch_size, -1))
            (loss / accum).backward()
            total += loss.item() / accum
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad()
        logs.append((lr, total, norm.item()))
    return model, opt, logs


def test_the_loop_applies_schedule_clipping_and_accumulation(data_dir, tmp_path):
    # 2 accumulation steps; warmup, then cosine decay; a clip below every step's gradient norm
    extra = ["--optimizer=pace", "--max_steps=5", "--warmup_steps=2", "--schedule=cos", "--grad_clip=0.05",
             "--eval_interval=5", "--log_interval=5", *setting_args(OPTIMIZER_SETTINGS)]
    result = run(data_dir, tmp_path, *extra)
    cfg = load_settings(args_for(data_dir, tmp_path, *extra))
    model, opt, logs = reference_training(data_dir, cfg)
    assert all(norm > 4 * cfg.grad_clip for _, _, norm in logs)  # clipping changes every step
    assert len({round(norm / logs[0][2], 3) for _, _, norm in logs}) == len(logs)  # ... by different factors
    assert [s["lr"] for s in result["step_logs"]] == [lr for lr, _, _ in logs]
    assert [s["lr"] for s in result["step_logs"]] == [get_lr(s["step"] - 1, cfg) for s in result["step_logs"]]
    assert len({lr for lr, _, _ in logs}) == 5  # the schedule moves every step
    for s, (_, loss, norm) in zip(result["step_logs"], logs, strict=True):
        assert s["loss"] == pytest.approx(loss, rel=1e-5) and s["grad_norm"] == pytest.approx(norm, rel=1e-5)
    ckpt = torch.load(tmp_path / "ckpt.pt")
    for name, value in model.state_dict().items():
        torch.testing.assert_close(ckpt["model"][name], value, rtol=1e-5, atol=1e-6, msg=name)
    for i, state in opt.state_dict()["state"].items():
        torch.testing.assert_close(ckpt["optimizer"]["state"][i]["ema"], state["ema"], rtol=1e-5, atol=1e-6)


def test_two_processes_with_two_accumulation_steps_match_one(data_dir, tmp_path):
    # 2 processes x 2 micro-steps of 2 sequences against 1 process x 4: the gradients must be
    # all-reduced exactly once, after the last micro-step's backward pass
    common = ["--optimizer=pace", "--batch_size=2", "--max_steps=4", "--eval_interval=4", "--ckpt_interval=4",
              "--log_interval=1"]
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    out = finish(start(tmp_path / "log", torchrun, "--standalone", "--nproc_per_node=2", "train.py",
                       *args_for(data_dir, tmp_path / "two", *common)))
    assert "2 process(es) on cpu, 2 accumulation step(s)" in out
    two = read_result(tmp_path / "two")
    one = run(data_dir, tmp_path / "one", *common)
    for a, b in zip(one["step_logs"], two["step_logs"], strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5) and a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    assert one["eval_logs"][-1]["val_loss"] == pytest.approx(two["eval_logs"][-1]["val_loss"], rel=1e-5)
    w1, w2 = (torch.load(tmp_path / d / "ckpt.pt")["model"] for d in ("one", "two"))
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], rtol=1e-3, atol=2e-4)


@pytest.mark.parametrize("pulled", ["embedding", "matrices"])
def test_pullback_params_pulls_those_weights_alone(data_dir, tmp_path, pulled):
    # a fixed EMA decay below 1: the EMA trails the weights from the first step, so the second step pulls;
    # until then every run computes the same gradients, so each tensor is pace's where pulled, else ema's
    common = ["--max_steps=2", "--eval_interval=2", "--ema_kappa=None", "--beta_ema=0.3", "--lambda_pullback=0.5"]
    for name, setting in ((pulled, f"--pullback_params={pulled}"), ("all", "--optimizer=pace"), ("ema", "--optimizer=ema")):
        run(data_dir, tmp_path / name, "--optimizer=pace", setting, *common)
    weights = {name: torch.load(tmp_path / name / "ckpt.pt")["model"] for name in (pulled, "all", "ema")}
    is_embedding = {"transformer.wte.weight", "lm_head.weight"}  # tied
    for key, tensor in weights[pulled].items():
        is_pulled = key in is_embedding if pulled == "embedding" else key not in is_embedding and tensor.dim() == 2
        same, other = ("all", "ema") if is_pulled else ("ema", "all")
        assert torch.equal(tensor, weights[same][key]) and not torch.equal(tensor, weights[other][key]), key
    model, opt, cfg = load_run(tmp_path / pulled)  # the last step's gains, per group: zero where not pulled
    gains = last_step_gains(model, opt, cfg)
    assert (gains["token embedding"]["mean_gain"] > 0) == (pulled == "embedding")
    assert (gains["other matrices"]["mean_gain"] > 0) == (pulled == "matrices")
    assert gains["vectors"]["mean_gain"] == 0


def test_pullback_params_all_keeps_pace_s_two_groups():
    # "all" is PACE as it always was: model.optim_groups' two groups, the same parameters, one c
    model = GPT(GPTConfig(block_size=32, vocab_size=64, n_layer=2, n_head=2, n_embd=32))
    cfg = load_settings(["--optimizer=pace", "--lambda_pullback=0.5"])
    groups = make_optimizer(cfg, model).param_groups
    assert [g["params"] for g in groups] == [g["params"] for g in model.optim_groups(cfg.weight_decay)]
    assert [g["lambda_pullback"] for g in groups] == [0.5, 0.5]
    limited = make_optimizer(load_settings(["--optimizer=pace", "--pullback_params=matrices"]), model).param_groups
    assert [p for g in limited for p in g["params"]] == [p for g in groups for p in g["params"]]  # the same order
