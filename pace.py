"""PACE: AdamW that trains for the exponential moving average it returns.

Au & Block (2026), "Training for the Model You Return: Improving Optimization for
Iterate-Averaged Language Models", arXiv:2606.25086. Depends on torch alone: copy it.

Step t (t = 0 at the first step, counted per parameter), coordinate i:

    1. theta'    = theta_t - AdamW_step(theta_t)     (m, v updated with this step's
                   gradient; bias correction; decoupled weight decay)
    2. decay_t   = max((1 + gamma * max(0, t - rho)) ** -kappa, 1e-4)   (beta_ema if kappa is None)
    3. lam_t,i   = min(1, lr * c * decay_t / (sqrt(v_hat_i) + eps))     (no min: clamp_pullback=False)
    4. theta_t+1 = theta' + lam_t,i * (ema_t-1 - theta_t)
    5. ema_t     = (1 - decay_t) * ema_t-1 + decay_t * theta_t+1        (when t % uf == 0)

The EMA starts as a copy of the weights and stays float32 (float64 for float64 weights);
v_hat is after this step's update, so the pullback shares AdamW's denominator; lr is the
group's current lr, so schedules scale the pullback too. With rho = 0, gamma = 1, kappa = 1
the EMA is exactly the mean of theta_1 ... theta_t+1.

    lambda_pullback  use_ema_eval  method
    0                False         plain AdamW (no EMA is allocated)
    0                True          EMA baseline: AdamW training, the EMA returned
    > 0              True          PACE

    opt = PACE(model.parameters(), lr=1e-3, lambda_pullback=0.15, ema_kappa=0.2, use_ema_eval=True)
    for batch in loader:
        model(batch).backward()
        opt.step()
        opt.zero_grad()
    opt.eval()        # the model holds the EMA weights: validate or save it
    opt.train()       # the last iterate is back, bit for bit

eval()/train() are idempotent; the mode lives in param_groups, so state_dict() saves it, and
step() refuses to run in eval mode. DDP needs no collectives (every process holds the same
state); with FSDP2/DTensor parameters each process steps the shard it holds.

Implementations of the same update, the fastest available by default: fused=True compiles it
with torch.compile, 8 tensors to a kernel that reads and writes each once (torch >= 2.5; a C++
compiler on CPU, Triton on GPU); fused=None falls back to foreach, with one warning, where it
cannot run. foreach=True uses torch._foreach_*; both False is the plain loop, the reference.
log_stats=True records get_step_stats() by a read-only pass of the plain loop on copies,
before the step: the step is the same whether it is observed or not.
"""

import contextlib
import functools
import math
import warnings
from typing import NamedTuple

import torch
from torch.optim import Optimizer

__all__ = ["PACE", "fused_error"]

MIN_EMA_DECAY = 1e-4  # floor of the decaying EMA schedule (step 2)


def ema_decay(t, beta_ema, ema_kappa, ema_rho, ema_gamma):
    """decay_t of step 2 for t completed steps."""
    if ema_kappa is None:
        return beta_ema
    return max((1.0 + ema_gamma * max(0.0, t - ema_rho)) ** -ema_kappa, MIN_EMA_DECAY)


class Constants(NamedTuple):
    """The step's scalars that only hyperparameters set (compiled into the kernel as numbers)."""
    beta1: float
    one_minus_beta1: float
    beta2: float
    one_minus_beta2: float
    eps: float
    max_gain: float  # 1 when gains are clamped, else inf


class PerStep(NamedTuple):
    """The step's scalars that follow t, the lr schedule and the EMA schedule (one tensor when compiled)."""
    inv_bias_correction2_sqrt: float
    weight_decay_factor: float  # 1 - lr * weight_decay: decoupled weight decay
    neg_step_size: float  # -lr / bias correction 1
    pull_scale: float  # lr * c * decay_t: the gain before its denominator
    ema_weight: float  # decay_t on the steps that update the EMA, else 0


def _step_scalars(group, t):
    """(Constants, PerStep) for a parameter that has completed t steps: what depends only
    on hyperparameters is computed here once, not per coordinate."""
    beta1, beta2 = group["betas"]
    lr = group["lr"]
    decay = ema_decay(t, group["beta_ema"], group["ema_kappa"], group["ema_rho"], group["ema_gamma"])
    return (Constants(beta1, 1 - beta1, beta2, 1 - beta2, group["eps"], 1.0 if group["clamp_pullback"] else math.inf),
            PerStep(1 / math.sqrt(1 - beta2 ** (t + 1)), 1 - lr * group["weight_decay"], -lr / (1 - beta1 ** (t + 1)),
                    lr * group["lambda_pullback"] * decay, decay if t % group["ema_update_freq"] == 0 else 0.0))


def _pace_tensor_step(param, grad, exp_avg, exp_avg_sq, ema, const, per_step, stats=None):
    """One step on one tensor, in place: the rule. ema is None for plain AdamW; const and per_step are
    Constants and PerStep (Python floats, or 0-d tensors when compiled); stats, when given,
    holds the running sums get_step_stats() reads."""
    exp_avg.mul_(const.beta1).add_(grad * const.one_minus_beta1)
    exp_avg_sq.mul_(const.beta2).add_(grad * grad * const.one_minus_beta2)
    # AdamW's step and the pullback share the denominator sqrt(v_hat) + eps: one division
    # per coordinate serves both (the compiled kernel is compute-bound on CPU).
    inv_denom = (exp_avg_sq.sqrt() * per_step.inv_bias_correction2_sqrt).add_(const.eps).reciprocal_()
    adamw_result = param * per_step.weight_decay_factor + exp_avg * inv_denom * per_step.neg_step_size  # theta'
    if ema is None:
        param.copy_(adamw_result)
        return
    raw_gain = inv_denom * per_step.pull_scale
    gain = raw_gain.clamp(max=const.max_gain)
    to_ema = ema - param  # from the weights before this step (rule step 4)
    pull = to_ema * gain
    if stats is not None:
        stats["lambda_sum"] += gain.sum(dtype=torch.float64)
        stats["lambda_max"] = torch.maximum(stats["lambda_max"], gain.max().double())
        stats["clipped"] += (raw_gain > gain).sum()
        stats["numel"] += gain.numel()
        stats["adamw_update_sq"] += (adamw_result - param).double().square().sum()
        stats["pullback_sq"] += pull.double().square().sum()
        stats["ema_distance_sq"] += to_ema.double().square().sum()
    param.copy_(adamw_result + pull)
    ema.add_((param.to(ema.dtype) - ema) * per_step.ema_weight)


def _record_stats(tensor_lists, const, per_step, stats):
    """The telemetry of a step, read-only: the rule on copies of the state, one tensor at a time, adds its
    sums to stats; the step itself is then taken as on any other step, so observing never changes a run."""
    for param, grad, *state in zip(*tensor_lists):
        copies = (None if t is None else t.clone() for t in state)
        _pace_tensor_step(param.clone(), grad, *copies, const, per_step, stats)


def _foreach_step(tensor_lists, const, per_step):
    """The same update with torch._foreach_* ops, per device and dtype."""
    for params, grads, exp_avgs, exp_avg_sqs, emas in _by_device_and_dtype(tensor_lists):
        torch._foreach_lerp_(exp_avgs, grads, const.one_minus_beta1)
        torch._foreach_mul_(exp_avg_sqs, const.beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, const.one_minus_beta2)
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_mul_(denom, per_step.inv_bias_correction2_sqrt)
        torch._foreach_add_(denom, const.eps)
        if emas[0] is not None:
            gain = torch._foreach_reciprocal(denom)
            torch._foreach_mul_(gain, per_step.pull_scale)
            torch._foreach_clamp_max_(gain, const.max_gain)
            pull = torch._foreach_sub(emas, params)
            torch._foreach_mul_(pull, gain)
            del gain
        torch._foreach_mul_(params, per_step.weight_decay_factor)
        torch._foreach_addcdiv_(params, exp_avgs, denom, per_step.neg_step_size)
        if emas[0] is not None:
            torch._foreach_add_(params, pull)
            iterates = [p.to(ema.dtype) for p, ema in zip(params, emas)]  # no copy if same dtype
            torch._foreach_lerp_(emas, iterates, per_step.ema_weight)


def _by_device_and_dtype(tensor_lists):
    """The lists regrouped by the device and dtype of the first list's tensors."""
    groups = {}
    for tensors in zip(*tensor_lists):
        slots = groups.setdefault((tensors[0].device, tensors[0].dtype), [[] for _ in tensors])
        for slot, tensor in zip(slots, tensors):
            slot.append(tensor)
    return groups.values()


class PACE(Optimizer):
    """AdamW with a per-coordinate pullback toward the EMA of the weights; see the
    module docstring for the update rule, the method table and an example."""

    def __init__(
        self,
        params,
        lr=1e-4,  # AdamW learning rate
        betas=(0.9, 0.999),  # AdamW moment decay rates
        eps=1e-8,  # AdamW epsilon, also the floor of the pullback denominator
        weight_decay=0.01,  # decoupled weight decay, as torch.optim.AdamW
        lambda_pullback=0.0,  # c, pullback strength; 0 disables the pullback
        clamp_pullback=True,  # gains <= 1: interpolate toward the EMA, never past it
        beta_ema=0.01,  # fixed EMA decay, used only when ema_kappa is None
        use_ema_eval=False,  # eval() puts the EMA weights into the model
        ema_kappa=None,  # exponent of the decaying EMA schedule; None: fixed beta_ema
        ema_rho=0.0,  # steps held before the schedule decays
        ema_gamma=1.0,  # schedule rate
        ema_update_freq=1,  # update the EMA every uf steps (pullback every step)
        log_stats=False,  # record telemetry for get_step_stats(): a read-only pass, the step unchanged
        *,
        foreach=None,  # multi-tensor path; None: on when fused is off
        fused=None,  # compiled single-kernel path; None: on when it compiles
    ):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, lambda_pullback=lambda_pullback,
                        clamp_pullback=clamp_pullback, beta_ema=beta_ema, use_ema_eval=use_ema_eval, ema_kappa=ema_kappa,
                        ema_rho=ema_rho, ema_gamma=ema_gamma, ema_update_freq=ema_update_freq, log_stats=log_stats,
                        foreach=foreach, fused=fused, train_mode=True)  # train_mode: False between eval() and train()
        self._stats = None
        super().__init__(params, defaults)

    def add_param_group(self, param_group):
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        for name, ok, requirement in _CHECKS:
            if not ok(group[name]):
                raise ValueError(f"Invalid {name}: {group[name]!r} ({requirement})")
        if group["fused"] and _fused_unsupported():
            raise RuntimeError(f"fused=True: {_fused_unsupported()}")

    @staticmethod
    def _needs_ema(group):
        return group["lambda_pullback"] > 0 or group["use_ema_eval"]

    @torch.no_grad()
    def step(self, closure=None):
        if not all(group["train_mode"] for group in self.param_groups):
            raise RuntimeError("PACE.step() was called in eval mode: call optimizer.train() first")
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._stats = None
        for group in self.param_groups:
            self._group_step(group)
        return loss

    def _group_step(self, group):
        needs_ema = self._needs_ema(group)
        by_step = {}  # completed steps -> tensors; parameters skipped on some step lag
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("PACE does not support sparse gradients")
            state = self.state[p]
            if not state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if needs_ema and "ema" not in state:
                state["ema"] = p.detach().to(_ema_dtype(p), copy=True)
            tensors = by_step.setdefault(state["step"], ([], [], [], [], []))
            for slot, tensor in zip(tensors, (p, p.grad, state["exp_avg"], state["exp_avg_sq"], state.get("ema"))):
                slot.append(_local(tensor))
            state["step"] += 1
        for t, tensors in by_step.items():
            const, per_step = _step_scalars(group, t)
            if group["log_stats"]:
                _record_stats(tensors, const, per_step, self._stat_sums(tensors[0][0].device))
            if _use_fused(group, tensors[0][0].device):
                _fused_step(tensors, const, per_step)
            elif group["foreach"] is not False:
                _foreach_step(tensors, const, per_step)
            else:  # the plain loop, the reference: the rule, one tensor at a time
                for one_tensor in zip(*tensors):
                    _pace_tensor_step(*one_tensor, const, per_step)

    def _stat_sums(self, device):
        if self._stats is None:
            self._stats = {name: torch.zeros((), dtype=torch.float64, device=device) for name in
                           ("lambda_sum", "lambda_max", "clipped", "numel", "adamw_update_sq", "pullback_sq", "ema_distance_sq")}
        return self._stats

    @torch.no_grad()
    def eval(self):
        """Put the EMA weights into the parameters of groups with use_ema_eval."""
        for group in self.param_groups:
            if group["train_mode"] and group["use_ema_eval"]:
                for p in group["params"]:
                    state = self.state[p]
                    if "ema" not in state:  # no step yet: the EMA equals the weights
                        continue
                    if state["ema"].dtype == p.dtype:  # exchanged: the "ema" slot holds the last iterate
                        _exchange(p, state["ema"])
                    else:  # a low-precision parameter cannot hold the float32 EMA: the last iterate waits
                        state["live_weights"] = p.detach().clone()  # the key's old name: saved state dicts hold it
                        p.copy_(state["ema"])
            group["train_mode"] = False

    @torch.no_grad()
    def train(self):
        """Put the last iterate back into the parameters (bit for bit) after eval()."""
        for group in self.param_groups:
            if not group["train_mode"] and group["use_ema_eval"]:
                for p in group["params"]:
                    state = self.state[p]
                    if "live_weights" in state:
                        p.copy_(state.pop("live_weights"))
                    elif "ema" in state:
                        _exchange(p, state["ema"])
            group["train_mode"] = True

    def load_state_dict(self, state_dict):
        # torch casts floating-point state to the parameter dtype on load; the EMA
        # must keep its own precision, so it is set aside and restored after.
        emas = {key: s["ema"] for key, s in state_dict["state"].items() if "ema" in s}
        # How a step is computed (fused, foreach) is this machine's choice, not the saving one's:
        # fused=True from a machine with a compiler would crash on one without.
        implementations = [(group["fused"], group["foreach"]) for group in self.param_groups]
        super().load_state_dict(state_dict)
        for group, (fused, foreach) in zip(self.param_groups, implementations):
            group["fused"], group["foreach"] = fused, foreach
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for saved_id, p in zip(saved_ids, params):
            if saved_id in emas:
                self.state[p]["ema"] = emas[saved_id].to(device=p.device, dtype=_ema_dtype(p))

    def get_step_stats(self):
        """Telemetry of the last step as Python floats (this synchronizes with the device): mean and max
        pullback gain lambda, the fraction of coordinates whose gain was clamped, and the norms of the
        AdamW update, of the pullback and of theta - EMA before the step. Needs log_stats=True."""
        if not any(g["log_stats"] for g in self.param_groups):
            raise RuntimeError("get_step_stats() needs PACE(..., log_stats=True)")
        if self._stats is None:
            return {}
        s = {k: v.item() for k, v in self._stats.items()}
        numel = max(s["numel"], 1.0)
        return {"lambda_mean": s["lambda_sum"] / numel, "lambda_max": s["lambda_max"],
                "lambda_clip_fraction": s["clipped"] / numel, "adamw_update_norm": math.sqrt(s["adamw_update_sq"]),
                "pullback_norm": math.sqrt(s["pullback_sq"]), "ema_distance_norm": math.sqrt(s["ema_distance_sq"])}


def _exchange(a, b):
    a_values = a.detach().clone()
    a.copy_(b)
    b.copy_(a_values)


def _ema_dtype(p):
    """float32 for low-precision parameters; the EMA never loses precision."""
    return torch.promote_types(p.dtype, torch.float32)


def _local(tensor):
    """This process's part of a DTensor (FSDP2, tensor parallelism), else the tensor itself."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def _is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and not math.isnan(x)


_CHECKS = (  # (argument, its test, what it must be): a ValueError names the argument
    *((name, lambda v: _is_number(v) and v >= 0, "must be >= 0") for name in ("lr", "eps", "weight_decay", "lambda_pullback")),
    ("betas", lambda v: isinstance(v, (tuple, list)) and len(v) == 2 and all(_is_number(b) and 0 <= b < 1 for b in v),
     "must be two numbers in [0, 1)"),
    ("beta_ema", lambda v: _is_number(v) and 0 < v <= 1, "must be in (0, 1]"),
    ("ema_kappa", lambda v: v is None or (_is_number(v) and v >= 0), "must be None or >= 0"),
    *((name, lambda v: _is_number(v) and v >= 0, "must be >= 0") for name in ("ema_rho", "ema_gamma")),
    ("ema_update_freq", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "must be a positive integer"),
)


# ---------------------------------------------------------------------------------------
# The compiled path. One entry point, _fused_step; fused_error() tells whether it runs.
# A compiled call costs ~0.1 ms of Python, as much as stepping a 768x768 matrix, so tensors
# go FUSED_CHUNK to a call, as 1-D aliases so that any mix of shapes shares one graph, and
# the last call is padded with scratch tensors so that every call has the same length.

FUSED_CHUNK = 8  # tensors per compiled call: more compile longer, fewer cost more Python per step
FUSED_MIN_TORCH = "2.5"  # the first release with the settings _fused_settings needs
# The sizes a graph is first compiled with. Sizes are dynamic, but inductor chooses a GPU
# kernel's block size from the sizes it is compiled with, and its disk cache keeps that choice
# for every later size: compiled on tiny tensors, a kernel would step GPT-2's matrices a few
# elements per block. From 2**17 on the blocks are the largest inductor uses.
COMPILE_NUMEL = 2 ** 17
_compiled = None  # _multi_tensor_step compiled, made at the first fused step
_COMPILED_ON_LARGE = set()  # the graphs (devices, dtypes, constants) compiled so far
_PADDING = {}  # (device, dtype) of each slot -> scratch tensors that fill the last chunk
_FUSED_ERRORS = {}  # device type -> None where the fused path runs, else why it does not


def _fused_step(tensor_lists, const, per_step):
    """The step of these tensors through the compiled kernels, under the torch settings they need."""
    with contextlib.ExitStack() as settings:
        settings.enter_context(torch.no_grad())  # as in step(): grad mode is part of the graph's guards
        for config, values in _fused_settings():
            settings.enter_context(config.patch(**values))
        for tensors in _by_device_and_dtype(tensor_lists):
            # the PerStep scalars in the parameters' compute dtype, as eager ops cast Python scalars;
            # to a GPU from pinned memory, asynchronously: no synchronization per step
            device, per_step_tensor = tensors[0][0].device, torch.tensor(per_step, dtype=_ema_dtype(tensors[0][0]))
            if device.type != "cpu":
                per_step_tensor = per_step_tensor.pin_memory().to(device, non_blocking=True)
            # one tuple per tensor; empty ones (a rank's share of a small FSDP2 parameter) have nothing to step
            vectors = [_as_vectors(ts) for ts in zip(*tensors) if ts[0].numel() > 0]
            if not vectors:
                continue
            if (_slots(vectors[0]), const) not in _COMPILED_ON_LARGE:  # a new graph: compiled on large tensors
                scratch = [_scratch(vectors[0], COMPILE_NUMEL) for _ in range(FUSED_CHUNK)]
                _compiled_step(*zip(*scratch), const, per_step_tensor)
                _COMPILED_ON_LARGE.add((_slots(vectors[0]), const))
            vectors += _padding(vectors[0], -len(vectors) % FUSED_CHUNK)
            for i in range(0, len(vectors), FUSED_CHUNK):
                _compiled_step(*zip(*vectors[i:i + FUSED_CHUNK]), const, per_step_tensor)


def _multi_tensor_step(params, grads, exp_avgs, exp_avg_sqs, emas, const, per_step_tensor):
    """What is compiled: the rule on every tensor of a chunk, the PerStep scalars from one tensor."""
    for tensors in zip(params, grads, exp_avgs, exp_avg_sqs, emas):
        _pace_tensor_step(*tensors, const, PerStep(*per_step_tensor))


def _compiled_step(*args):
    """_multi_tensor_step compiled. Sizes are dynamic and the per-step scalars one tensor, so that
    neither new sizes nor a changing lr recompile; the Constants are compiled in as numbers, which
    spares the kernel a load per coordinate each. A graph per dtype, with/without EMA, and Constants."""
    global _compiled
    if _compiled is None:
        import torch._inductor.config as inductor_config
        # dynamic_threads: every CPU kernel runs on all threads; by default inductor would
        # choose from the sizes it first saw, which later calls do not share.
        options = {"cpp.dynamic_threads": True} if hasattr(inductor_config.cpp, "dynamic_threads") else {}
        _compiled = torch.compile(_multi_tensor_step, dynamic=True, fullgraph=True, options=options)
    return _compiled(*args)


def _as_vectors(tensors):
    """1-D aliases of a parameter, its gradient and state, when all are contiguous.
    detach() drops the link of a view to its base, whose shape dynamo would guard on."""
    if all(t is None or t.is_contiguous() for t in tensors):
        return tuple(None if t is None else t.view(-1).detach() for t in tensors)
    return tensors


def _padding(like, count):
    """count scratch tuples of size 2 (dynamo specializes sizes 0 and 1), kept for the next steps."""
    scratch = _PADDING.setdefault(_slots(like), [])
    while len(scratch) < count:
        scratch.append(_scratch(like, 2))
    return scratch[:count]


def _slots(like):
    return tuple(None if t is None else (t.device, t.dtype) for t in like)


def _scratch(like, numel):
    """Zero tensors of numel elements with the devices and dtypes of `like`, each its own storage:
    aliased inputs would make another graph."""
    return tuple(None if t is None else torch.zeros(numel, device=t.device, dtype=t.dtype) for t in like)


@functools.cache  # looked up once, not at every step
def _fused_settings():
    """The private torch settings the fused path changes, as (config, {name: value}) pairs, or None on a
    torch that lacks one it cannot do without. Names move between releases."""
    import torch._dynamo.config as dynamo_config

    try:
        import torch.fx.experimental._config as fx_config
    except ImportError:
        return None
    if not hasattr(fx_config, "use_duck_shape"):
        return None  # torch 2.4: equal sizes in a chunk would recompile for every chunk
    dynamo = {}
    for name in ("recompile_limit", "cache_size_limit"):  # the same setting, renamed in 2.7
        if hasattr(dynamo_config, name):
            dynamo[name] = 64  # graphs per process: one per dtype, EMA or not, constants
            break
    if hasattr(dynamo_config, "specialize_float"):  # without it floats are graph inputs: slower, same result
        dynamo["specialize_float"] = True
    # duck sizing off: equal sizes in the first chunk would be baked into the graph
    return [(dynamo_config, dynamo), (fx_config, {"use_duck_shape": False})]


def _fused_unsupported():
    """Why this torch cannot run the fused path, or None when it can."""
    return None if _fused_settings() else (f"PACE's fused path needs torch >= {FUSED_MIN_TORCH}; "
                                           f"this is torch {torch.__version__}")


def fused_error(device, group=None):
    """None when the fused path compiles and runs on `device`, else why it does not.

    Decided once per device type by stepping a scratch tensor (with `group`'s hyperparameters,
    or PACE's defaults), so that a failure touches no real state; the graph it compiles is the
    one float32 parameters with these hyperparameters use. Processes that must take the same
    path combine their answers, then pass fused=True or fused=False (train.py does)."""
    device = torch.device(device)
    if device.type not in _FUSED_ERRORS:
        _FUSED_ERRORS[device.type] = _fused_unsupported()
        if _FUSED_ERRORS[device.type] is None:
            group = group or PACE([torch.zeros(1)]).param_groups[0]
            scratch = [[torch.zeros(8, device=device)] for _ in range(4)]
            scratch.append([torch.zeros(8, device=device) if PACE._needs_ema(group) else None])
            try:
                _fused_step(scratch, *_step_scalars(group, 0))
            except Exception as error:  # any compile failure means: not available here
                _FUSED_ERRORS[device.type] = f"{type(error).__name__}: {error}"
    return _FUSED_ERRORS[device.type]


def _use_fused(group, device):
    if group["fused"] is not None:
        return group["fused"]
    first_time = device.type not in _FUSED_ERRORS
    error = fused_error(device, group)
    # the first device that cannot run it warns; the reason is the same for any other
    if error is not None and first_time and sum(e is not None for e in _FUSED_ERRORS.values()) == 1:
        warnings.warn(f"PACE: the fused path does not run here ({error}); using foreach")
    return error is None
