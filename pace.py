"""PACE: AdamW that trains for the exponential moving average it returns.

Au & Block (2026), "Training for the Model You Return: Improving Optimization for
Iterate-Averaged Language Models", arXiv:2606.25086.

Many training pipelines return an exponential moving average (EMA) of the weights
rather than the last iterate. PACE takes an AdamW step and then pulls every
coordinate of the live weights a little toward that EMA, with a per-coordinate gain
that is large where Adam's second moment is small, so that the averaged model ends
up better. This file depends on torch alone: copy it into your project.

Update rule, for step t (t = 0 at the first step) and coordinate i:

    1. theta'   = theta_t - AdamW_step(theta_t)          (moments m, v updated with
                                                          this step's gradient, bias
                                                          correction, decoupled decay)
    2. decay_t  = max((1 + gamma * max(0, t - rho)) ** -kappa, 1e-4)
                  (decay_t = beta_ema when ema_kappa is None)
    3. lam_t,i  = lr * c * decay_t / (sqrt(v_hat_i) + eps),  clamped to <= 1
    4. theta_t+1 = theta' + lam_t,i * (ema_t-1 - theta_t)  (pullback from the weights
                                                            before this step)
    5. ema_t    = (1 - decay_t) * ema_t-1 + decay_t * theta_t+1   when t % uf == 0,
                  otherwise ema_t = ema_t-1

Conventions: t counts the steps this parameter has completed, so with rho = 0,
gamma = 1, kappa = 1 the EMA is exactly the running mean of theta_1 ... theta_t+1.
The EMA starts as an exact copy of the weights at the first step and is kept in
float32 (or float64 for float64 weights) whatever the parameter dtype. v_hat is Adam's
bias-corrected second moment after this step's update, so the pullback shares
AdamW's denominator; lr is the group's current lr, so LR schedules scale the
pullback too.

Two arguments place the three methods on one axis:

    lambda_pullback  use_ema_eval  method
    0                False         plain AdamW (no EMA is allocated)
    0                True          EMA baseline: AdamW training, EMA returned
    > 0              True          PACE

Usage:

    opt = PACE(model.parameters(), lr=1e-3, lambda_pullback=0.15, ema_kappa=0.2,
               use_ema_eval=True)
    for batch in loader:
        loss = model(batch)
        loss.backward()
        opt.step()
        opt.zero_grad()
    opt.eval()        # the model now holds the EMA weights: validate or save it
    validate(model)
    opt.train()       # the live training weights are back, bit for bit

eval() and train() are idempotent and keep the mode in param_groups, so it is saved
by state_dict() and restored by load_state_dict(); step() refuses to run in eval
mode. Every process of a DDP job holds identical state, so no collectives are needed.
With FSDP2 (fully_shard) or other DTensor parameters each process steps the shard it
holds: the update is elementwise, and the state is sharded like the parameters.

Implementations (the fastest available is the default):
    fused=True     the per-tensor update compiled by torch.compile, 8 tensors to a
                   kernel that reads and writes each tensor once (torch >= 2.5 and
                   a C++ compiler on CPU, Triton on GPU; the first step compiles one
                   graph: for GPT-2-124M ~20 s of CPU time with a cold cache, ~6 s
                   warm; fused=True on an older torch raises, fused=None falls back
                   to foreach with one warning when the compiled path cannot run)
    foreach=True   torch._foreach_* over the parameters of each device and dtype
    both False     a plain loop over tensors, the readable reference
log_stats=True records telemetry for get_step_stats() and runs the plain loop (with
DTensor parameters: of this process's shards).

Citation:
    @article{au2026pace,
      title   = {Training for the Model You Return: Improving Optimization for
                 Iterate-Averaged Language Models},
      author  = {Au, Kwok Chun and Block, Adam},
      journal = {arXiv preprint arXiv:2606.25086},
      year    = {2026}}
"""

import contextlib
import functools
import math
import warnings

import torch
from torch.optim import Optimizer

__all__ = ["PACE", "fused_error"]

MIN_EMA_DECAY = 1e-4  # floor of the decaying EMA schedule (step 2)


def ema_decay(t, beta_ema, ema_kappa, ema_rho, ema_gamma):
    """decay_t of step 2 for t completed steps."""
    if ema_kappa is None:
        return beta_ema
    return max((1.0 + ema_gamma * max(0.0, t - ema_rho)) ** -ema_kappa, MIN_EMA_DECAY)


STEP_CONSTANTS = 6  # the first scalars of _step_scalars; the others change every step


def _step_scalars(group, t):
    """The step's scalars for a parameter that has completed t steps, in the order
    _pace_tensor_step unpacks them. Everything that depends only on hyperparameters
    is computed here, once, rather than per coordinate."""
    beta1, beta2 = group["betas"]
    lr = group["lr"]
    decay = ema_decay(t, group["beta_ema"], group["ema_kappa"], group["ema_rho"], group["ema_gamma"])
    return (
        beta1,
        1 - beta1,
        beta2,
        1 - beta2,
        group["eps"],
        1.0 if group["clamp_pullback"] else math.inf,  # largest allowed gain
        # from here on, values that follow the lr schedule, t and the EMA schedule
        1 / math.sqrt(1 - beta2 ** (t + 1)),  # 1 / sqrt of bias correction 2
        1 - lr * group["weight_decay"],  # decoupled weight decay as a factor
        -lr / (1 - beta1 ** (t + 1)),  # minus the step size after bias correction 1
        lr * group["lambda_pullback"] * decay,  # pullback gain before the denominator
        decay if t % group["ema_update_freq"] == 0 else 0.0,  # EMA weight; 0 leaves it unchanged
    )


def _pace_tensor_step(param, grad, exp_avg, exp_avg_sq, ema, scalars, stats=None):
    """One step on one tensor, in place. ema is None for plain AdamW. scalars are
    Python floats (eager) or 0-d tensors (compiled); stats, when given, is a dict of
    running sums that get_step_stats() reads."""
    (beta1, one_minus_beta1, beta2, one_minus_beta2, eps, max_gain,
     inv_bias_correction2_sqrt, weight_decay_factor, neg_step_size, pull_scale, ema_weight) = scalars
    exp_avg.mul_(beta1).add_(grad * one_minus_beta1)
    exp_avg_sq.mul_(beta2).add_(grad * grad * one_minus_beta2)
    # AdamW's step and the pullback share the denominator sqrt(v_hat) + eps: one
    # division per coordinate serves both (the compiled kernel is compute-bound on CPU).
    inv_denom = (exp_avg_sq.sqrt() * inv_bias_correction2_sqrt).add_(eps).reciprocal_()
    adamw_result = param * weight_decay_factor + exp_avg * inv_denom * neg_step_size  # theta'
    if ema is None:
        param.copy_(adamw_result)
        return
    raw_gain = inv_denom * pull_scale
    gain = raw_gain.clamp(max=max_gain)
    to_ema = ema - param  # from the weights before this step (rule step 4)
    pull = to_ema * gain
    if stats is not None:
        _accumulate_stats(stats, raw_gain, gain, adamw_result - param, pull, to_ema)
    param.copy_(adamw_result + pull)
    ema.add_((param.to(ema.dtype) - ema) * ema_weight)


def _accumulate_stats(stats, raw_gain, gain, adamw_update, pull, to_ema):
    stats["lambda_sum"] += gain.sum(dtype=torch.float64)
    stats["lambda_max"] = torch.maximum(stats["lambda_max"], gain.max().double())
    stats["clipped"] += (raw_gain > gain).sum()
    stats["numel"] += gain.numel()
    stats["adamw_update_sq"] += adamw_update.double().square().sum()
    stats["pullback_sq"] += pull.double().square().sum()
    stats["ema_distance_sq"] += to_ema.double().square().sum()


_STAT_SUMS = ("lambda_sum", "lambda_max", "clipped", "numel", "adamw_update_sq", "pullback_sq", "ema_distance_sq")


def _single_tensor_step(params, grads, exp_avgs, exp_avg_sqs, emas, scalars, stats=None):
    for p, g, m, v, ema in zip(params, grads, exp_avgs, exp_avg_sqs, emas):
        _pace_tensor_step(p, g, m, v, ema, scalars, stats)


def _multi_tensor_step(params, grads, exp_avgs, exp_avg_sqs, emas, constants, per_step):
    for tensors in zip(params, grads, exp_avgs, exp_avg_sqs, emas):
        _pace_tensor_step(*tensors, (*constants, *per_step))


# Tensors per compiled call. Compile time grows with it, Python time per step shrinks:
# on GPT-2-124M (measured under load: CPU seconds of a cold first step; relative step
# time in one process) 4: 16.7 s, 1.06x; 8: 20.5 s, 1.04x; 16: 28.2 s, 1x.
FUSED_CHUNK = 8
FUSED_MIN_TORCH = "2.5"  # the first release with the settings _fused_settings needs


@functools.cache  # looked up once, not at every step
def _fused_settings():
    """The private torch settings the fused path changes, as (config, {name: value})
    pairs, or None on a torch that lacks the one it cannot do without. Their names
    move between releases, so each is looked up before it is set."""
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
    # Duck sizing off: equal sizes within the first chunk would otherwise be baked into
    # the graph, and a chunk of other sizes recompile.
    return [(dynamo_config, dynamo), (fx_config, {"use_duck_shape": False})]


def _fused_unsupported():
    """Why this torch cannot run the fused path, or None when it can."""
    if _fused_settings() is None:
        return f"PACE's fused path needs torch >= {FUSED_MIN_TORCH}; this is torch {torch.__version__}"
    return None


_compiled_multi_tensor_step = None


def _fused_chunk_step(*args):
    """_multi_tensor_step compiled into one kernel. Sizes are dynamic and the scalars
    that change every step come as one tensor, so neither new sizes nor a changing lr
    recompile; the constant ones (betas, eps, the clamp) are compiled in as numbers,
    which spares the kernel a load per coordinate each. A graph is made per dtype,
    with/without EMA and per value of the constants."""
    global _compiled_multi_tensor_step
    if _compiled_multi_tensor_step is None:
        import torch._inductor.config as inductor_config

        # dynamic_threads: every kernel runs on all threads; by default inductor would
        # choose from the sizes it first saw, which later calls do not share.
        options = {"cpp.dynamic_threads": True} if hasattr(inductor_config.cpp, "dynamic_threads") else {}
        _compiled_multi_tensor_step = torch.compile(_multi_tensor_step, dynamic=True, fullgraph=True, options=options)
    return _compiled_multi_tensor_step(*args)


# A compiled call costs ~0.1 ms of Python, as much as stepping a 768x768 matrix, so
# tensors go FUSED_CHUNK to a call, as 1-D aliases, so that any mix of shapes shares
# one graph, and the last call is padded with scratch tensors, so that every call has
# the same length: one graph in all, and the one fused_error() compiled.
def _fused_step(params, grads, exp_avgs, exp_avg_sqs, emas, scalars):
    constants = scalars[:STEP_CONSTANTS]
    with contextlib.ExitStack() as settings:
        settings.enter_context(torch.no_grad())  # as in step(): grad mode is part of the graph's guards
        for config, values in _fused_settings():
            settings.enter_context(config.patch(**values))
        for tensors in _by_device_and_dtype([params, grads, exp_avgs, exp_avg_sqs, emas]):
            per_step = _scalars_tensor(scalars[STEP_CONSTANTS:], tensors[0][0].device, _ema_dtype(tensors[0][0]))
            # one tuple per tensor; empty ones (a rank's share of a small FSDP2 parameter) have nothing to step
            vectors = [_as_vectors(ts) for ts in zip(*tensors) if ts[0].numel() > 0]
            if not vectors:
                continue
            _compile_on_large_tensors(vectors[0], constants, per_step)
            vectors += _padding(vectors[0], -len(vectors) % FUSED_CHUNK)
            for i in range(0, len(vectors), FUSED_CHUNK):
                _fused_chunk_step(*zip(*vectors[i:i + FUSED_CHUNK]), constants, per_step)


# Sizes of the scratch tensors a graph is first compiled with. The sizes are dynamic, but
# inductor chooses a GPU kernel's block size from the sizes it is compiled with, and the
# on-disk cache keeps that choice for every later size: compiled on tiny tensors, a kernel
# would step GPT-2's matrices in blocks of a few elements. From 2**17 on the blocks are the
# largest inductor uses (on a CPU the size does not matter: cpp.dynamic_threads).
COMPILE_NUMEL = 2 ** 17
_COMPILED_ON_LARGE = set()  # the graphs (devices, dtypes, constants) already compiled


def _compile_on_large_tensors(like, constants, per_step):
    """Before the first step of a graph, one step of it on scratch tensors of COMPILE_NUMEL
    elements with the devices and dtypes of `like`, so that it is compiled on them."""
    key = (tuple(None if t is None else (t.device, t.dtype) for t in like), constants)
    if key in _COMPILED_ON_LARGE:
        return
    scratch = [tuple(None if t is None else torch.zeros(COMPILE_NUMEL, device=t.device, dtype=t.dtype) for t in like)
               for _ in range(FUSED_CHUNK)]
    _fused_chunk_step(*zip(*scratch), constants, per_step)
    _COMPILED_ON_LARGE.add(key)


def _as_vectors(tensors):
    """1-D aliases of a parameter, its gradient and state, when all are contiguous.
    detach() drops the link of a view to its base, whose shape dynamo would guard on."""
    if all(t is None or t.is_contiguous() for t in tensors):
        return tuple(None if t is None else t.view(-1).detach() for t in tensors)
    return tensors


_PADDING = {}  # (device, dtype) of each slot -> scratch tensors that fill the last chunk


def _padding(like, count):
    """count tuples of scratch tensors of size 2 (dynamo specializes sizes 0 and 1)
    with the devices and dtypes of `like`, each its own storage: aliased inputs would
    make another graph."""
    key = tuple(None if t is None else (t.device, t.dtype) for t in like)
    scratch = _PADDING.setdefault(key, [])
    while len(scratch) < count:
        scratch.append(tuple(None if t is None else torch.zeros(2, device=t.device, dtype=t.dtype) for t in like))
    return scratch[:count]


_FUSED_ERRORS = {}  # device type -> None when the fused path runs there, else why it does not


def fused_error(device, group=None):
    """None when the fused path compiles and runs on `device`, else why it does not.

    Decided once per device type by stepping a scratch tensor (with `group`'s
    hyperparameters, or PACE's defaults), so that a failure touches no real state;
    the graph it compiles is the one float32 parameters with these hyperparameters use.
    Processes that must take the same path combine their answers first and then pass
    fused=True or fused=False explicitly (train.py does)."""
    device = torch.device(device)
    if device.type not in _FUSED_ERRORS:
        _FUSED_ERRORS[device.type] = _fused_unsupported()
        if _FUSED_ERRORS[device.type] is None:
            group = group or PACE([torch.zeros(1)]).param_groups[0]
            scratch = [[torch.zeros(8, device=device)] for _ in range(4)]
            scratch.append([torch.zeros(8, device=device) if PACE._needs_ema(group) else None])
            try:
                _fused_step(*scratch, _step_scalars(group, 0))
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


def _local(tensor):
    """This process's part of a DTensor (FSDP2, tensor parallelism), else the tensor
    itself: the update is elementwise, so each process steps the coordinates it holds."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def _by_device_and_dtype(tensor_lists):
    """The lists regrouped by the device and dtype of the first list's tensors, for
    the kernels that take one device and dtype at a time."""
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
        log_stats=False,  # record telemetry for get_step_stats() (synchronizes)
        *,
        foreach=None,  # multi-tensor path; None: on when fused is off
        fused=None,  # compiled single-kernel path; None: on when it compiles
    ):
        defaults = dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
            lambda_pullback=lambda_pullback, clamp_pullback=clamp_pullback,
            beta_ema=beta_ema, use_ema_eval=use_ema_eval, ema_kappa=ema_kappa,
            ema_rho=ema_rho, ema_gamma=ema_gamma, ema_update_freq=ema_update_freq,
            log_stats=log_stats, foreach=foreach, fused=fused,
            train_mode=True,  # False between eval() and train()
        )
        self._stats = None
        super().__init__(params, defaults)

    def add_param_group(self, param_group):
        super().add_param_group(param_group)
        _check_hyperparameters(self.param_groups[-1])
        if self.param_groups[-1]["fused"] and _fused_unsupported():
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
            scalars = _step_scalars(group, t)
            if group["log_stats"]:
                _single_tensor_step(*tensors, scalars, self._stat_sums(tensors[0][0].device))
            elif _use_fused(group, tensors[0][0].device):
                _fused_step(*tensors, scalars)
            elif group["foreach"] is not False:
                _foreach_step(*tensors, scalars)
            else:
                _single_tensor_step(*tensors, scalars)

    def _stat_sums(self, device):
        if self._stats is None:
            self._stats = {name: torch.zeros((), dtype=torch.float64, device=device) for name in _STAT_SUMS}
        return self._stats

    @torch.no_grad()
    def eval(self):
        """Put the EMA weights into the parameters of groups with use_ema_eval."""
        for group in self.param_groups:
            if group["train_mode"] and group["use_ema_eval"]:
                for p in group["params"]:
                    self._swap_ema_in(p)
            group["train_mode"] = False

    @torch.no_grad()
    def train(self):
        """Restore the live training weights (bit for bit) after eval()."""
        for group in self.param_groups:
            if not group["train_mode"] and group["use_ema_eval"]:
                for p in group["params"]:
                    self._swap_ema_out(p)
            group["train_mode"] = True

    def _swap_ema_in(self, p):
        state = self.state[p]
        if "ema" not in state:  # no step yet: the EMA equals the weights
            return
        if state["ema"].dtype == p.dtype:
            # Exchange in place: while in eval mode the "ema" slot holds the live weights.
            live = p.detach().clone()
            p.copy_(state["ema"])
            state["ema"].copy_(live)
        else:
            # A low-precision parameter cannot hold the float32 EMA, so the live
            # weights wait in the state until train().
            state["live_weights"] = p.detach().clone()
            p.copy_(state["ema"])

    def _swap_ema_out(self, p):
        state = self.state[p]
        if "ema" not in state:
            return
        if "live_weights" in state:
            p.copy_(state.pop("live_weights"))
        else:
            ema = p.detach().clone()
            p.copy_(state["ema"])
            state["ema"].copy_(ema)

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
        """Telemetry of the last step as Python floats (this synchronizes with the
        device): mean and max pullback gain lambda, the fraction of coordinates whose
        gain was clamped, and the norms of the AdamW update, of the pullback and of
        theta - EMA before the step. Needs log_stats=True."""
        if not any(g["log_stats"] for g in self.param_groups):
            raise RuntimeError("get_step_stats() needs PACE(..., log_stats=True)")
        if self._stats is None:
            return {}
        s = {k: v.item() for k, v in self._stats.items()}
        numel = max(s["numel"], 1.0)
        return {
            "lambda_mean": s["lambda_sum"] / numel,
            "lambda_max": s["lambda_max"],
            "lambda_clip_fraction": s["clipped"] / numel,
            "adamw_update_norm": math.sqrt(s["adamw_update_sq"]),
            "pullback_norm": math.sqrt(s["pullback_sq"]),
            "ema_distance_norm": math.sqrt(s["ema_distance_sq"]),
        }


def _ema_dtype(p):
    """float32 for low-precision parameters; the EMA never loses precision."""
    return torch.promote_types(p.dtype, torch.float32)


def _scalars_tensor(scalars, device, dtype):
    """In the parameters' compute dtype, as eager ops cast Python scalars to it."""
    values = torch.tensor(scalars, dtype=dtype)
    if device.type == "cpu":
        return values
    # A pinned buffer copied asynchronously: no host-device synchronization per step.
    return values.pin_memory().to(device, non_blocking=True)


def _foreach_step(params, grads, exp_avgs, exp_avg_sqs, emas, scalars):
    """The same update with torch._foreach_* ops, per device and dtype."""
    (beta1, one_minus_beta1, beta2, one_minus_beta2, eps, max_gain,
     inv_bias_correction2_sqrt, weight_decay_factor, neg_step_size, pull_scale, ema_weight) = scalars
    grouped = _by_device_and_dtype([params, grads, exp_avgs, exp_avg_sqs, emas])
    for device_params, device_grads, device_exp_avgs, device_exp_avg_sqs, device_emas in grouped:
        torch._foreach_lerp_(device_exp_avgs, device_grads, one_minus_beta1)
        torch._foreach_mul_(device_exp_avg_sqs, beta2)
        torch._foreach_addcmul_(device_exp_avg_sqs, device_grads, device_grads, one_minus_beta2)
        denom = torch._foreach_sqrt(device_exp_avg_sqs)
        torch._foreach_mul_(denom, inv_bias_correction2_sqrt)
        torch._foreach_add_(denom, eps)
        if device_emas[0] is not None:
            gain = torch._foreach_reciprocal(denom)
            torch._foreach_mul_(gain, pull_scale)
            torch._foreach_clamp_max_(gain, max_gain)
            pull = torch._foreach_sub(device_emas, device_params)
            torch._foreach_mul_(pull, gain)
            del gain
        torch._foreach_mul_(device_params, weight_decay_factor)
        torch._foreach_addcdiv_(device_params, device_exp_avgs, denom, neg_step_size)
        if device_emas[0] is not None:
            torch._foreach_add_(device_params, pull)
            live = [p.to(ema.dtype) for p, ema in zip(device_params, device_emas)]  # no copy if same dtype
            torch._foreach_lerp_(device_emas, live, ema_weight)


def _check_hyperparameters(group):
    def check(name, ok, requirement):
        if not ok:
            raise ValueError(f"Invalid {name}: {group[name]!r} ({requirement})")

    check("lr", _is_number(group["lr"]) and group["lr"] >= 0, "must be >= 0")
    check("eps", _is_number(group["eps"]) and group["eps"] >= 0, "must be >= 0")
    check("weight_decay", _is_number(group["weight_decay"]) and group["weight_decay"] >= 0, "must be >= 0")
    check("lambda_pullback", _is_number(group["lambda_pullback"]) and group["lambda_pullback"] >= 0, "must be >= 0")
    betas = group["betas"]
    check(
        "betas",
        isinstance(betas, (tuple, list)) and len(betas) == 2 and all(_is_number(b) and 0 <= b < 1 for b in betas),
        "must be two numbers in [0, 1)",
    )
    check("beta_ema", _is_number(group["beta_ema"]) and 0 < group["beta_ema"] <= 1, "must be in (0, 1]")
    kappa = group["ema_kappa"]
    check("ema_kappa", kappa is None or (_is_number(kappa) and kappa >= 0), "must be None or >= 0")
    check("ema_rho", _is_number(group["ema_rho"]) and group["ema_rho"] >= 0, "must be >= 0")
    check("ema_gamma", _is_number(group["ema_gamma"]) and group["ema_gamma"] >= 0, "must be >= 0")
    uf = group["ema_update_freq"]
    check("ema_update_freq", isinstance(uf, int) and not isinstance(uf, bool) and uf >= 1, "must be a positive integer")


def _is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and not math.isnan(x)
