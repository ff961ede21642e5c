"""get_step_stats(): each number against the update rule of pace.py's docstring, written out."""

import pytest
import torch

from pace import PACE

LR, BETAS, EPS, WD, C = 1e-2, (0.9, 0.99), 1e-8, 0.1, 5.0
KAPPA, RHO, GAMMA = 0.2, 0.5, 2.0


def gradients(shapes, seed):
    """Gradients whose sizes span 1e-4 to 10, so that some gains are clamped at 1 and some not."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=torch.float64) * 10 ** (5 * torch.rand(s, generator=g, dtype=torch.float64) - 4)
            for s in shapes]


def reference_step(p, grad, m, v, ema, t):
    """Steps 1-4 of the rule for a tensor that has completed t steps: the new weights and the
    parts the telemetry reports."""
    m = BETAS[0] * m + (1 - BETAS[0]) * grad
    v = BETAS[1] * v + (1 - BETAS[1]) * grad * grad
    denom = (v / (1 - BETAS[1] ** (t + 1))).sqrt() + EPS
    adamw_update = -LR * WD * p - LR * (m / (1 - BETAS[0] ** (t + 1))) / denom
    decay = max((1 + GAMMA * max(0, t - RHO)) ** -KAPPA, 1e-4)
    raw_gain = LR * C * decay / denom
    gain = raw_gain.clamp(max=1)
    to_ema = ema - p
    pull = gain * to_ema
    return p + adamw_update + pull, raw_gain, gain, adamw_update, pull, to_ema


def test_step_stats_are_the_rule_s_quantities():
    shapes = [(6, 5), (7,)]
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, dtype=torch.float64)) for s in shapes]
    opt = PACE(params, lr=LR, betas=BETAS, eps=EPS, weight_decay=WD, lambda_pullback=C, ema_kappa=KAPPA,
               ema_rho=RHO, ema_gamma=GAMMA, use_ema_eval=True, log_stats=True)
    for step in range(3):  # two steps to move the weights off their EMA, then the one checked
        for p, g in zip(params, gradients(shapes, seed=step)):
            p.grad = g
        if step == 2:
            before = [(p.detach().clone(), p.grad, *(opt.state[p][k].clone() for k in ("exp_avg", "exp_avg_sq", "ema")))
                      for p in params]
        opt.step()
    parts = [reference_step(*b, t=2) for b in before]
    for p, (new, *_) in zip(params, parts):
        torch.testing.assert_close(p.detach(), new, rtol=1e-12, atol=1e-15)  # the reference is the rule pace.py follows

    raw_gain, gain, adamw_update, pull, to_ema = (torch.cat([part[k].flatten() for part in parts]) for k in range(1, 6))
    want = {
        "lambda_mean": gain.mean().item(),
        "lambda_max": gain.max().item(),
        "lambda_clip_fraction": (raw_gain > 1).double().mean().item(),
        "adamw_update_norm": adamw_update.norm().item(),
        "pullback_norm": pull.norm().item(),
        "ema_distance_norm": to_ema.norm().item(),
    }
    assert 0.1 < want["lambda_clip_fraction"] < 0.9 and want["lambda_max"] == 1  # both kinds of coordinates
    assert min(want.values()) > 1e-3  # every quantity is there to be seen (the EMA is not the weights)
    assert opt.get_step_stats() == pytest.approx(want, rel=1e-9)
