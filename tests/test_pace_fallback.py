"""fused=None where the fused path does not compile: one warning, then the foreach path."""

import warnings

import pytest
import torch

import pace
from pace import PACE


@pytest.fixture
def fused_fails(monkeypatch):
    """A machine where torch.compile fails, after scribbling over the tensors it was given
    (as a compile error halfway through a step could); the cache of the verdict starts empty."""
    def broken(tensor_lists, *args):
        for p in tensor_lists[0]:
            p.add_(1.0)
        raise RuntimeError("InductorError: no working C++ compiler")

    monkeypatch.setattr(pace, "_fused_step", broken)
    monkeypatch.setattr(pace, "_FUSED_ERRORS", {})


def train(steps=4, **paths):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s)) for s in ((5, 3), (3,), (2, 2, 2))]
    opt = PACE(params, lr=1e-2, lambda_pullback=0.3, ema_kappa=0.2, use_ema_eval=True, **paths)
    for step in range(steps):
        for i, p in enumerate(params):
            p.grad = torch.sin(torch.arange(p.numel(), dtype=torch.float32) * (i + 1) + step).view_as(p)
        opt.step()
    return params, opt


def test_failed_compile_warns_once_then_steps_like_foreach(fused_fails):
    with pytest.warns(UserWarning, match="fused path does not run here.*no working C\\+\\+ compiler.*using foreach"):
        params, opt = train()
    want, want_opt = train(foreach=True, fused=False)
    for p, q in zip(params, want):
        assert torch.equal(p, q)  # the failed attempt touched no real tensor
        assert all(torch.equal(opt.state[p][k], want_opt.state[q][k]) for k in ("exp_avg", "exp_avg_sq", "ema"))
    assert pace.fused_error("cpu").endswith("no working C++ compiler")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the verdict is remembered: no second warning, no second attempt
        again, _ = train()
    assert all(torch.equal(p, q) for p, q in zip(again, want))


def test_a_state_saved_with_fused_true_loads_on_a_machine_without_a_compiler(fused_fails):
    # saved where the compiled path runs (fused=True is only recorded: the steps here take foreach)
    params, saved = train(steps=2, foreach=True, fused=False)
    state = saved.state_dict()
    for group in state["param_groups"]:
        group["fused"] = True
    # loaded where it does not: the loading optimizer's own choice (fused=None) decides, with one warning
    loaded = PACE(params, lr=1e-2, lambda_pullback=0.3, ema_kappa=0.2, use_ema_eval=True)
    loaded.load_state_dict(state)
    assert all(group["fused"] is None for group in loaded.param_groups)
    for p in params:
        p.grad = torch.ones_like(p)
    with pytest.warns(UserWarning, match="no working C\\+\\+ compiler.*using foreach"):
        loaded.step()
