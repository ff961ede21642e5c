"""pace.py against a plain float64 transcription of the update rule (its steps on every path, and its
telemetry), AdamW parity, the EMA conventions, eval()/train(), state_dict round trips, the fused path's
graphs and the argument checks. Where the fused path cannot run: test_pace_fallback.py."""

import copy
import math

import pytest
import torch

import pace
from pace import PACE

PATHS = {  # implementation switches -> the path they select
    "single": dict(foreach=False, fused=False),
    "foreach": dict(foreach=True, fused=False),
    "fused": dict(fused=True),
}
NEEDS_FUSED = pytest.mark.skipif(pace._fused_unsupported() is not None, reason=str(pace._fused_unsupported()))
PATH_NAMES = [pytest.param(name, marks=NEEDS_FUSED) if PATHS[name].get("fused") else name for name in PATHS]


@pytest.fixture(autouse=True)
def small_fused_chunks(monkeypatch):
    """Two tensors per compiled call, so that the few tensors of these tests go through
    both the chunks and the leftover calls of the fused path."""
    monkeypatch.setattr(pace, "FUSED_CHUNK", 2)


class ReferencePACE:
    """The update rule of pace.py's docstring, one coordinate formula at a time, in float64; the
    quantities of the last step that PACE's telemetry reports are kept in `last`, per tensor."""

    def __init__(self, params, groups):
        self.groups = [dict(g) for g in groups]
        self.max_gain = [0.0] * len(groups)  # largest lambda before clamping, per group
        self.last = []
        self.state = [
            [dict(theta=p.detach().double().clone(), m=torch.zeros_like(p, dtype=torch.float64),
                  v=torch.zeros_like(p, dtype=torch.float64), ema=p.detach().double().clone(), t=0)
             for p in group_params]
            for group_params in params
        ]

    def step(self, grads):
        self.last = []
        for index, (group, states, group_grads) in enumerate(zip(self.groups, self.state, grads)):
            beta1, beta2 = group["betas"]
            for s, g in zip(states, group_grads):
                if g is None:
                    continue
                g, t = g.double(), s["t"]
                s["m"] = beta1 * s["m"] + (1 - beta1) * g
                s["v"] = beta2 * s["v"] + (1 - beta2) * g * g
                m_hat = s["m"] / (1 - beta1 ** (t + 1))
                v_hat = s["v"] / (1 - beta2 ** (t + 1))
                theta = s["theta"]
                adamw = theta - group["lr"] * group["weight_decay"] * theta - group["lr"] * m_hat / (v_hat.sqrt() + group["eps"])
                if group["ema_kappa"] is None:
                    decay = group["beta_ema"]
                else:
                    decay = max((1 + group["ema_gamma"] * max(0, t - group["ema_rho"])) ** -group["ema_kappa"], 1e-4)
                raw_gain = group["lr"] * group["lambda_pullback"] * decay / (v_hat.sqrt() + group["eps"])
                self.max_gain[index] = max(self.max_gain[index], raw_gain.max().item())
                lam = raw_gain.clamp(max=1) if group["clamp_pullback"] else raw_gain
                new = adamw + lam * (s["ema"] - theta)
                self.last.append(dict(raw_gain=raw_gain, gain=lam, adamw_update=adamw - theta,
                                      pullback=lam * (s["ema"] - theta), to_ema=s["ema"] - theta))
                if t % group["ema_update_freq"] == 0:
                    s["ema"] = (1 - decay) * s["ema"] + decay * new
                s["theta"], s["t"] = new, t + 1


GROUP_SETTINGS = [
    dict(lr=3e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1, lambda_pullback=5.0, clamp_pullback=True,
         beta_ema=0.01, ema_kappa=0.5, ema_rho=3.0, ema_gamma=0.5, ema_update_freq=1),
    dict(lr=1e-2, betas=(0.8, 0.9), eps=1e-3, weight_decay=0.0, lambda_pullback=800.0, clamp_pullback=False,
         beta_ema=0.2, ema_kappa=None, ema_rho=0.0, ema_gamma=1.0, ema_update_freq=3),
    dict(lr=5e-2, betas=(0.5, 0.999), eps=1e-6, weight_decay=0.05, lambda_pullback=1e4, clamp_pullback=True,
         beta_ema=0.01, ema_kappa=1.0, ema_rho=0.0, ema_gamma=2.0, ema_update_freq=2),
]
SHAPES = [[(7, 5), (13,)], [(3, 4, 2)], [(1,), (64, 3)]]


def make_params(dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [[torch.nn.Parameter(torch.randn(s, generator=gen, dtype=dtype)) for s in shapes] for shapes in SHAPES]


def run_both(path, dtype, steps=12, log_stats=False):
    params = make_params(dtype)
    groups = [dict(params=ps, **settings) for ps, settings in zip(params, GROUP_SETTINGS)]
    opt = PACE(groups, use_ema_eval=True, log_stats=log_stats, **PATHS[path])
    ref = ReferencePACE(params, GROUP_SETTINGS)
    gen = torch.Generator().manual_seed(1)
    for step in range(steps):
        grads = [[torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in ps] for ps in params]
        grads[0][1] = None if step % 4 == 1 else grads[0][1]  # a parameter without gradient is skipped
        for ps, gs in zip(params, grads):
            for p, g in zip(ps, gs):
                p.grad = None if g is None else g.to(dtype)
        for i, group in enumerate(opt.param_groups):  # an lr schedule changes lr every step
            group["lr"] = ref.groups[i]["lr"] = GROUP_SETTINGS[i]["lr"] * (1 + 0.3 * math.sin(step))
        opt.step()
        ref.step(grads)
    return params, opt, ref


@pytest.mark.parametrize("path", PATH_NAMES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_update_rule_matches_reference(path, dtype):
    params, opt, ref = run_both(path, dtype)
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=2e-5, atol=2e-6)
    for ps, states in zip(params, ref.state):
        for p, s in zip(ps, states):
            torch.testing.assert_close(p.detach().double(), s["theta"], **tol)
            torch.testing.assert_close(opt.state[p]["ema"].double(), s["ema"], **tol)
            assert opt.state[p]["ema"].dtype == dtype
            assert opt.state[p]["step"] == s["t"]
    # gains above 1 occurred both where the clamp caps them (group 2) and where it is off (group 1)
    assert ref.max_gain[1] > 1 and ref.max_gain[2] > 1


def adamw_run(make_opt, steps=100, seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    opt = make_opt(model.parameters())
    data = torch.randn(steps, 32, 8)
    for x in data:
        loss = model(x).sin().mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
    return model, opt


@pytest.mark.parametrize("path", PATH_NAMES)
def test_plain_adamw_matches_torch_and_allocates_no_ema(path):
    hyper = dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    ours, opt = adamw_run(lambda ps: PACE(ps, **hyper, **PATHS[path]))
    theirs, _ = adamw_run(lambda ps: torch.optim.AdamW(ps, **hyper, foreach=False))
    for a, b in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert all(set(s) == {"step", "exp_avg", "exp_avg_sq"} for s in opt.state.values())


@pytest.mark.parametrize("path", PATH_NAMES)
def test_ema_baseline_trains_exactly_like_adamw(path):
    hyper = dict(lr=1e-2, ema_kappa=0.5, **PATHS[path])
    adamw, _ = adamw_run(lambda ps: PACE(ps, **hyper))
    ema_baseline, opt = adamw_run(lambda ps: PACE(ps, use_ema_eval=True, **hyper))
    for a, b in zip(adamw.parameters(), ema_baseline.parameters()):
        assert torch.equal(a, b)
        assert not torch.equal(b, opt.state[b]["ema"])


@pytest.mark.parametrize("path", PATH_NAMES)
def test_kappa_one_ema_is_running_mean_of_iterates(path):
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(10, dtype=torch.float64))
    opt = PACE([p], lr=0.1, use_ema_eval=True, ema_kappa=1.0, ema_rho=0.0, ema_gamma=1.0, **PATHS[path])
    iterates = []
    for _ in range(20):
        p.grad = torch.randn_like(p)
        opt.step()
        iterates.append(p.detach().clone())
        torch.testing.assert_close(opt.state[p]["ema"], torch.stack(iterates).mean(0), rtol=1e-12, atol=1e-12)


def test_ema_starts_as_copy_of_initial_weights():
    p = torch.nn.Parameter(torch.randn(5))
    initial = p.detach().clone()
    opt = PACE([p], lr=0.1, lambda_pullback=1.0, ema_kappa=None, beta_ema=0.25, foreach=False, fused=False)
    p.grad = torch.ones(5)
    opt.step()
    # one step: ema = 0.75 * initial + 0.25 * theta_1
    torch.testing.assert_close(opt.state[p]["ema"], 0.75 * initial + 0.25 * p.detach())


def test_pullback_uses_weights_before_the_step():
    # With a huge c and clamping, lambda = 1: theta_1 = theta' + (ema_0 - theta_0) = theta' exactly
    # offset by nothing, since ema_0 = theta_0; at step 2 theta_2 = theta'_2 + (ema_1 - theta_1).
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = PACE([p], lr=0.1, weight_decay=0.0, lambda_pullback=1e9, beta_ema=0.5, foreach=False, fused=False)
    p.grad = torch.tensor([1.0, 1.0], dtype=torch.float64)
    opt.step()
    theta1, ema1 = p.detach().clone(), opt.state[p]["ema"].clone()
    torch.testing.assert_close(theta1, torch.tensor([0.9, -2.1], dtype=torch.float64))
    p.grad = torch.tensor([1.0, 1.0], dtype=torch.float64)
    opt.step()
    torch.testing.assert_close(p.detach(), theta1 - 0.1 + (ema1 - theta1))


def test_eval_train_exact_idempotent_and_mode_in_state_dict():
    model, opt = adamw_run(lambda ps: PACE(ps, lr=1e-2, lambda_pullback=0.5, ema_kappa=0.3, use_ema_eval=True), steps=10)
    last = [p.detach().clone() for p in model.parameters()]
    emas = [opt.state[p]["ema"].clone() for p in model.parameters()]
    opt.eval()
    opt.eval()  # idempotent
    for p, ema in zip(model.parameters(), emas):
        assert torch.equal(p, ema)
    assert all(not g["train_mode"] for g in opt.state_dict()["param_groups"])
    with pytest.raises(RuntimeError, match="train()"):
        opt.step()
    opt.train()
    opt.train()
    for p, w in zip(model.parameters(), last):
        assert torch.equal(p, w)


def test_eval_is_noop_without_use_ema_eval():
    model, opt = adamw_run(lambda ps: PACE(ps, lr=1e-2, lambda_pullback=0.5), steps=5)
    last = [p.detach().clone() for p in model.parameters()]
    opt.eval()
    assert all(torch.equal(p, w) for p, w in zip(model.parameters(), last))
    opt.train()


@pytest.mark.parametrize("path", PATH_NAMES)
def test_low_precision_params_keep_float32_ema_through_eval_and_load(path):
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(64).to(torch.bfloat16))
    opt = PACE([p], lr=1e-2, lambda_pullback=0.5, ema_kappa=0.5, use_ema_eval=True, **PATHS[path])
    for _ in range(5):
        p.grad = torch.randn(64).to(torch.bfloat16)
        opt.step()
    ema, last = opt.state[p]["ema"].clone(), p.detach().clone()
    assert ema.dtype == torch.float32
    opt.eval()
    assert torch.equal(p, ema.to(torch.bfloat16))
    saved = copy.deepcopy(opt.state_dict())
    opt.train()
    assert torch.equal(p, last) and torch.equal(opt.state[p]["ema"], ema)

    # a fresh optimizer loaded from the eval-mode checkpoint, with the model as saved
    q = torch.nn.Parameter(ema.to(torch.bfloat16))
    fresh = PACE([q], lr=1e-2, lambda_pullback=0.5, ema_kappa=0.5, use_ema_eval=True)
    fresh.load_state_dict(saved)
    assert fresh.state[q]["ema"].dtype == torch.float32 and torch.equal(fresh.state[q]["ema"], ema)
    fresh.train()
    assert torch.equal(q, last)


@pytest.mark.parametrize("path", PATH_NAMES)
@pytest.mark.parametrize("save_in_eval_mode", [False, True])
def test_state_dict_round_trip_is_bit_exact(path, save_in_eval_mode):
    hyper = dict(lr=1e-2, lambda_pullback=0.2, ema_kappa=0.4, ema_update_freq=2, use_ema_eval=True, **PATHS[path])

    def batches():
        gen = torch.Generator().manual_seed(3)
        return [torch.randn(16, 8, generator=gen) for _ in range(12)]

    def train(model, opt, data):
        for x in data:
            model(x).square().mean().backward()
            opt.step()
            opt.zero_grad()

    torch.manual_seed(0)
    straight = torch.nn.Linear(8, 4)
    resumed = copy.deepcopy(straight)
    opt = PACE(straight.parameters(), **hyper)
    train(straight, opt, batches())

    first = PACE(resumed.parameters(), **hyper)
    train(resumed, first, batches()[:5])
    if save_in_eval_mode:
        first.eval()
    checkpoint = copy.deepcopy({"model": resumed.state_dict(), "opt": first.state_dict()})
    model = torch.nn.Linear(8, 4)
    model.load_state_dict(checkpoint["model"])
    second = PACE(model.parameters(), **hyper)
    second.load_state_dict(checkpoint["opt"])
    second.train()
    train(model, second, batches()[5:])
    for a, b in zip(straight.parameters(), model.parameters()):
        assert torch.equal(a, b)
        assert torch.equal(opt.state[a]["ema"], second.state[b]["ema"])


def test_gradients_are_not_modified_and_sparse_is_rejected():
    p = torch.nn.Parameter(torch.randn(6))
    opt = PACE([p], lr=0.1, lambda_pullback=1.0, use_ema_eval=True)
    p.grad = torch.randn(6)
    before = p.grad.clone()
    opt.step()
    assert torch.equal(p.grad, before)
    emb = torch.nn.Embedding(5, 3, sparse=True)
    opt = PACE(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()


@pytest.mark.parametrize("path", PATH_NAMES)
def test_telemetry_reports_the_rule_s_quantities_and_changes_no_bit(path):
    params, opt, ref = run_both(path, torch.float64, steps=3, log_stats=True)
    parts = {k: torch.cat([part[k].flatten() for part in ref.last]) for k in ref.last[0]}
    want = {
        "lambda_mean": parts["gain"].mean().item(),
        "lambda_max": parts["gain"].max().item(),
        "lambda_clip_fraction": (parts["raw_gain"] > parts["gain"]).double().mean().item(),
        "adamw_update_norm": parts["adamw_update"].norm().item(),
        "pullback_norm": parts["pullback"].norm().item(),
        "ema_distance_norm": parts["to_ema"].norm().item(),
    }
    assert 0.05 < want["lambda_clip_fraction"] < 0.95 and want["lambda_max"] > 1  # clamped, unclamped, and above 1
    assert min(want.values()) > 1e-3  # every quantity is there to be seen (the EMA is not the weights)
    assert opt.get_step_stats() == pytest.approx(want, rel=1e-9)
    # observed or not, the same bits: the telemetry is a read-only pass
    for dtype in (torch.float64, torch.float32):
        observed, observed_opt, _ = run_both(path, dtype, steps=3, log_stats=True)
        unobserved, unobserved_opt, _ = run_both(path, dtype, steps=3)
        for p, q in zip(sum(observed, []), sum(unobserved, [])):
            assert torch.equal(p, q) and torch.equal(observed_opt.state[p]["ema"], unobserved_opt.state[q]["ema"])
    with pytest.raises(RuntimeError, match="log_stats"):
        unobserved_opt.get_step_stats()


@NEEDS_FUSED
def test_fused_path_compiles_one_graph_whatever_the_shapes_and_lr():
    torch.manual_seed(0)
    torch._dynamo.reset()
    # 1-D views in chunks of two: sizes (64, 64), (33, 35), then 9 with a scratch tensor.
    # The equal sizes of the first chunk must not be baked into the graph, or the second
    # recompiles; the padded last chunk must not make a graph of its own.
    params = [torch.nn.Parameter(torch.randn(s)) for s in [(4, 4, 4), (64,), (33,), (5, 7), (3, 3)]]
    opt = PACE(params, lr=1e-3, lambda_pullback=0.1, ema_kappa=0.2, use_ema_eval=True, fused=True)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    for i in range(6):
        for p in params:
            p.grad = torch.randn_like(p)
        opt.param_groups[0]["lr"] = 1e-3 * (1 + i)
        opt.step()
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs == 1


@NEEDS_FUSED
def test_default_path_compiles_one_graph_for_the_probe_and_the_steps(monkeypatch):
    monkeypatch.setattr(pace, "_FUSED_ERRORS", {})  # the probe has not run in this process
    torch._dynamo.reset()
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    params = [torch.nn.Parameter(torch.randn(s)) for s in [(4, 3), (5,), (7,)]]  # no size 1: dynamo specializes it
    opt = PACE(params, lr=1e-2, betas=(0.8, 0.95), lambda_pullback=0.5, use_ema_eval=True)
    for _ in range(3):
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
    assert pace._FUSED_ERRORS == {"cpu": None}
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs == 1


BAD_ARGUMENTS = [
    ("lr", dict(lr=-1e-3)), ("eps", dict(eps=-1e-8)), ("weight_decay", dict(weight_decay=-0.1)),
    ("lambda_pullback", dict(lambda_pullback=-0.1)), ("ema_kappa", dict(ema_kappa=-0.5)),
    ("ema_gamma", dict(ema_gamma=-1.0)), ("ema_rho", dict(ema_rho=-1.0)),
    ("betas", dict(betas=(1.0, 0.999))), ("betas", dict(betas=(0.9, -0.1))),
    ("beta_ema", dict(beta_ema=0.0)), ("beta_ema", dict(beta_ema=1.5)),
    ("ema_update_freq", dict(ema_update_freq=0)), ("ema_update_freq", dict(ema_update_freq=2.5)),
]


@pytest.mark.parametrize("name,kwargs", BAD_ARGUMENTS)
def test_bad_hyperparameters_raise_named_value_error(name, kwargs):
    with pytest.raises(ValueError, match=f"Invalid {name}"):
        PACE([torch.nn.Parameter(torch.zeros(2))], **kwargs)
    with pytest.raises(ValueError, match=f"Invalid {name}"):  # also per parameter group
        PACE([{"params": [torch.nn.Parameter(torch.zeros(2))], **kwargs}])
