"""Where the fused path cannot run (a torch before 2.5, or a failed compile): fused=None warns once and
steps like foreach, fused=True refuses at construction, and a state saved where it ran loads."""

import warnings

import pytest
import torch

import pace
from pace import PACE

REASONS = {"compile fails": "no working C\\+\\+ compiler", "old torch": "needs torch >= 2\\.5"}


@pytest.fixture(params=REASONS)
def fused_fails(request, monkeypatch):
    """A machine where the fused path does not run: torch.compile fails, after scribbling over the
    tensors it was given (as a compile error halfway through a step could), or the torch is too old;
    the cache of the verdict starts empty. -> the pattern of the reason the warning gives."""
    def broken(tensor_lists, *args):
        for p in tensor_lists[0]:
            p.add_(1.0)
        raise RuntimeError("InductorError: no working C++ compiler")

    monkeypatch.setattr(pace, "_fused_step", broken)
    if request.param == "old torch":
        monkeypatch.setattr(pace, "_fused_settings", lambda: None)
    monkeypatch.setattr(pace, "_FUSED_ERRORS", {})
    return REASONS[request.param]


def train(steps=4, **paths):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s)) for s in ((5, 3), (3,), (2, 2, 2))]
    opt = PACE(params, lr=1e-2, lambda_pullback=0.3, ema_kappa=0.2, use_ema_eval=True, **paths)
    for step in range(steps):
        for i, p in enumerate(params):
            p.grad = torch.sin(torch.arange(p.numel(), dtype=torch.float32) * (i + 1) + step).view_as(p)
        opt.step()
    return params, opt


def test_fused_none_warns_once_then_steps_like_foreach(fused_fails):
    with pytest.warns(UserWarning, match=f"fused path does not run here.*{fused_fails}.*using foreach"):
        params, opt = train()
    want, want_opt = train(foreach=True, fused=False)
    for p, q in zip(params, want):
        assert torch.equal(p, q)  # the failed attempt touched no real tensor
        assert all(torch.equal(opt.state[p][k], want_opt.state[q][k]) for k in ("exp_avg", "exp_avg_sq", "ema"))
    assert pace.fused_error("cpu") is not None
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
    with pytest.warns(UserWarning, match=f"{fused_fails}.*using foreach"):
        loaded.step()


def test_fused_true_on_a_torch_without_the_compiled_path_raises_at_construction(monkeypatch):
    monkeypatch.setattr(pace, "_fused_settings", lambda: None)  # as on torch 2.4
    with pytest.raises(RuntimeError, match=r"fused=True: .*needs torch >= 2\.5; this is torch"):
        PACE([torch.nn.Parameter(torch.zeros(2))], fused=True)
    with pytest.raises(RuntimeError, match=r"needs torch >= 2\.5"):
        PACE([{"params": [torch.nn.Parameter(torch.zeros(2))], "fused": True}])
