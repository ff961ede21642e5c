"""
The noisy quadratic: does pulling the iterate toward its EMA lower the error of the EMA?

Setting (the paper's stylized model). The loss is f(x) = 1/2 sum_i a_i x_i^2, minimized at
x = 0, and every step sees the gradient g = a*x + sigma*xi with fresh xi ~ N(0, I). The
returned model is the EMA of the iterates, e_{t+1} = (1 - beta) e_t + beta x_{t+1}, with a
fixed decay beta. With a constant lr the pair (x, e) settles into a stationary
distribution; we compare the EMA's limiting squared error E||e||^2 without the pullback
(the EMA baseline) and with it (PACE): factor = baseline error / PACE error.

Two optimizers, each followed by the pullback x <- x_new + lambda_i (e - x) as in pace.py
(with the weights and the EMA from before the step):
- sgd: x_new = x - eta g. PACE's gain is c * beta times a coordinate's step size per unit
  of gradient: AdamW's is eta / (sqrt(v_hat_i) + eps), which gives pace.py's
  lambda_i = eta c beta / (sqrt(v_hat_i) + eps); SGD's is eta on every coordinate, so its
  gain is lambda = min(1, eta c beta), the same on all coordinates. (Dividing an SGD step's
  gain by the gradient scale instead would mix units: it would change with a rescaling of x.)
  With fixed gains the system is linear: the stationary covariance of (x, e) solves the
  discrete Lyapunov equation S = A S A^T + b b^T exactly, and the slowest mode of A gives
  the number of steps the returned model needs to forget where it started (relaxation time).
- adamw: AdamW (betas 0.9, 0.999, eps 1e-8, no weight decay: with the optimum at 0 decay
  would only help) and pace.py's clamped gain from v_hat at every step. Not linear:
  simulation only.

Instances I(s), s >= 1: two coordinates, a stiff, low-noise one (a = 1, sigma = 1) and a
flat, high-noise one (a = 1/s, sigma = s^q, q = --noise = 0.5). As s grows the flat
coordinate dominates the error, and the EMA, whose window 1/beta is short next to that
coordinate's time scale s/eta, averages it poorly: that is where the pullback helps.
A rule of thumb from the exact sgd solution: away from the stability edge a coordinate's
factor is a little below 1 + lambda / (beta + h), h = eta a its contraction per step
(within 20% for h <= 1, beta <= 0.3, lambda <= 0.5). So for sgd the factor grows with s
until it saturates near 1 + lambda/beta, unbounded only as beta -> 0 with lambda -> 1.
For adamw the flat coordinate's step and gain are both divided by its gradient scale
s^q (h is about eta a / sigma there), so its lambda shrinks and the factor levels off
early. Near the stability edge (eta a = 1.8 on the stiff coordinate) a strong sgd
pullback raises the error, and larger gains there make the iteration diverge.

Limiting errors by simulation: many independent chains (vectorized numpy, fixed seed)
start at the optimum, run a burn-in of 5 relaxation times, then average ||e||^2 over 20
more; the standard error comes from the spread between chains. The baseline and PACE
see the same noise, so their ratio is more precise than either error.

What the pullback costs. On a stationary quadratic a smaller step size or a longer EMA
also lowers the limiting error, at the price of speed. The last column compares PACE
with the EMA baseline whose decay beta' gives it PACE's relaxation time
(beta' = 1/relaxation time): above 1 PACE is better at equal speed, below 1 a plain longer
EMA is. The EMA schedule beta_t = (1+t)^(-kappa) of train.py changes on a time scale of
t/kappa steps; where that is long next to the relaxation time, the error at step t is
about the fixed-beta one with beta = beta_t, so a row for beta describes kappa at the
step where the two are equal (beta = 0.01 is kappa = 0.5 at t = 10^4).

Examples:

    python -m studies.quadratic                                       # the default table, ~1 minute
    python -m studies.quadratic --form sgd --spread 1,10,100,1000 --c 1,10,50 --beta 0.01,0.001 --chains 64
    python -m studies.quadratic --form adamw --noise 0 --plot ''      # equal noise: no 1/sigma in the gain
"""

import argparse
import itertools
import sys

import numpy as np

ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8


class InputError(Exception):
    """Bad command-line input: reported as one line, exit code 1."""


def instance(s, q=0.5):
    """I(s): (a, sigma) of a stiff, low-noise coordinate and a flat one with noise s^q (high for q > 0)."""
    return np.array([1.0, 1.0 / s]), np.array([1.0, s ** q])


def sgd_gain(eta, c, beta):
    """PACE's clamped gain for SGD: c * beta times SGD's step size eta (see the docstring)."""
    return np.minimum(eta * c * beta, 1.0)


# -----------------------------------------------------------------------------
# exact: the stationary covariance of the linear (sgd) system

def sgd_system(a, sigma, eta, lam, beta):
    """(x, e)_{t+1} = A (x, e)_t + b xi_t, batched over coordinates (all arguments broadcast).

    x' = (1 - eta a - lam) x + lam e - eta sigma xi
    e' = (1 - beta) e + beta x'
    """
    a, sigma, eta, lam, beta = np.broadcast_arrays(*map(np.asarray, (a, sigma, eta, lam, beta)))
    keep = 1 - eta * a - lam
    A = np.stack([np.stack([keep, lam], -1),
                  np.stack([beta * keep, 1 - beta + beta * lam], -1)], -2)
    b = np.stack([-eta * sigma, -beta * eta * sigma], -1)
    return A, b


def stationary_cov(A, b):
    """Solve S = A S A^T + b b^T for every system in the batch: (I - A kron A) vec S = vec(b b^T)."""
    n = A.shape[-1]
    kron = np.einsum("...il,...jm->...ijlm", A, A).reshape(*A.shape[:-2], n * n, n * n)
    rhs = np.einsum("...i,...j->...ij", b, b).reshape(*b.shape[:-1], n * n, 1)
    return np.linalg.solve(np.eye(n * n) - kron, rhs)[..., 0].reshape(A.shape)


def relaxation_steps(A):
    """1 / (1 - spectral radius): steps for the slowest mode to shrink by e; inf when unstable."""
    rho = np.abs(np.linalg.eigvals(A)).max(-1)
    with np.errstate(divide="ignore"):
        return np.where(rho < 1, 1 / (1 - rho), np.inf)


def exact_sgd(a, sigma, eta, lam, beta):
    """-> (E[e_i^2] per coordinate, relaxation steps per coordinate); nan error when unstable."""
    A, b = sgd_system(a, sigma, eta, lam, beta)
    relax = relaxation_steps(A)
    return np.where(np.isfinite(relax), stationary_cov(A, b)[..., 1, 1], np.nan), relax


# -----------------------------------------------------------------------------
# simulation

def adamw_step(x, m, v, t, g, eta, c, beta):
    """One AdamW step (no weight decay) and pace.py's clamped gain; t is Adam's step count, 1 first.

    -> (the AdamW-updated x, m, v, lambda)."""
    b1, b2 = ADAM_BETAS
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    denom = np.sqrt(v / (1 - b2 ** t)) + ADAM_EPS
    x_new = x - eta * (m / (1 - b1 ** t)) / denom
    return x_new, m, v, np.minimum(eta * c * beta / denom, 1.0)


def simulate(form, a, sigma, eta, c, beta, noise_id, *, steps, burn, chains, seed):
    """Run `chains` independent copies of every coordinate (all parameters are arrays over
    coordinates) from x = e = 0 for `steps` steps. Coordinates with the same noise_id
    see the same gradient noise: comparing the baseline and PACE on common noise makes
    their ratio far more precise, and halves the draws.

    -> (time average of e^2 over the steps after `burn`, shape (chains, coordinates);
        time and chain average of the gain lambda, shape (coordinates,))."""
    rng = np.random.default_rng(seed)
    noise_id = np.asarray(noise_id)
    x = np.zeros((chains, len(a)))
    e, m, v, sum_e2, sum_lam = (np.zeros_like(x) for _ in range(5))
    with np.errstate(over="ignore", invalid="ignore"):  # a diverging row ends as inf/nan, and is reported so
        for t in range(1, steps + 1):
            g = a * x + sigma * rng.standard_normal((chains, noise_id.max() + 1))[:, noise_id]
            if form == "sgd":
                x_new, lam = x - eta * g, sgd_gain(eta, c, beta)
            else:
                x_new, m, v, lam = adamw_step(x, m, v, t, g, eta, c, beta)
            x = x_new + lam * (e - x)  # the pullback uses the EMA and the weights from before the step
            e = (1 - beta) * e + beta * x
            if t > burn:
                sum_e2 += e * e
                sum_lam += lam
    n = steps - burn
    return sum_e2 / n, sum_lam.mean(0) / n


def linear_relaxation(form, a, sigma, eta, c, beta):
    """Relaxation steps of the sgd system, or of AdamW linearized (step eta/sigma, no momentum):
    only to size the simulation."""
    step = eta if form == "sgd" else eta / sigma
    return relaxation_steps(sgd_system(a, 1.0, step, sgd_gain(step, c, beta), beta)[0])


# -----------------------------------------------------------------------------
# the table

def rows_of(args):
    return [dict(form=f, eta=eta, beta=beta, c=c, s=sp, q=args.noise)
            for f, eta, beta, c, sp in itertools.product(args.form, args.lr, args.beta, args.c, args.spread)]


def evaluate(rows, chains, seed, max_steps):
    """Fill the rows with the limiting errors of the baseline and PACE: simulated, and exact for sgd."""
    for form in ("sgd", "adamw"):
        mine = [r for r in rows if r["form"] == form]
        if mine:
            simulate_rows(form, mine, chains, seed, max_steps)
        if form == "sgd":
            for r in mine:
                exact_fill(r)


def coordinates(rows):
    """Every row twice (the baseline with c = 0, then PACE), each with its two coordinates,
    as flat arrays a, sigma, eta, c, beta, and the noise stream of each: a row's baseline
    and PACE share theirs."""
    coords = [(r, c, i) for r in rows for c in (0.0, r["c"]) for i in range(2)]
    a = np.array([instance(r["s"], r["q"])[0][i] for r, _, i in coords])
    sigma = np.array([instance(r["s"], r["q"])[1][i] for r, _, i in coords])
    eta, beta = (np.array([r[k] for r, _, _ in coords]) for k in ("eta", "beta"))
    c = np.array([c for _, c, _ in coords])
    noise_id = [2 * k + i for k in range(len(rows)) for _ in (0, 1) for i in range(2)]
    return a, sigma, eta, c, beta, noise_id


def simulate_rows(form, rows, chains, seed, max_steps):
    """One vectorized simulation of the rows of a form: a burn-in of 5 relaxation times of
    the slowest row, then 20 more to average over. Rows that would need more than
    max_steps in all are not simulated (their 'sim_needs' says how many)."""
    floor = 100.0 if form == "sgd" else 1000.0  # AdamW's v_hat takes ~1/(1 - beta2) steps to settle
    taus = []
    for r in rows:
        relax = linear_relaxation(form, *coordinates([r])[:5])
        taus.append(max(relax[np.isfinite(relax)].max(initial=0.0), floor))  # a diverging coordinate shows in the sim
    for r, tau in zip(rows, taus):
        if 25 * tau > max_steps:
            r["sim_needs"] = int(25 * tau)
    todo = [r for r in rows if "sim_needs" not in r]
    if not todo:
        return
    tau = max(t for r, t in zip(rows, taus) if "sim_needs" not in r)
    burn, steps = int(5 * tau), int(25 * tau)
    e2, lam = simulate(form, *coordinates(todo), steps=steps, burn=burn, chains=chains, seed=seed)
    per_chain = e2.reshape(chains, len(todo), 2, 2).sum(-1)  # ||e||^2 per chain, row, (baseline, PACE)
    mean, se = per_chain.mean(0), per_chain.std(0, ddof=1) / np.sqrt(chains)
    for k, r in enumerate(todo):
        r.update(sim=mean[k], sim_se=se[k], lam=lam.reshape(len(todo), 2, 2)[k, 1])


def exact_fill(r):
    """Exact errors, gains, relaxation times and the equal-speed baseline of an sgd row."""
    a, sigma = instance(r["s"], r["q"])
    lam = sgd_gain(r["eta"], r["c"], r["beta"])
    e0, t0 = exact_sgd(a, sigma, r["eta"], 0.0, r["beta"])
    e1, t1 = exact_sgd(a, sigma, r["eta"], lam, r["beta"])
    r.update(exact=np.array([e0.sum(), e1.sum()]), relax=(t0.max(), t1.max()), lam=np.array([lam, lam]))
    # the baseline's slowest mode is max(|1 - eta a_i|, 1 - beta'): beta' = 1/relax gives it PACE's
    # relaxation time, unless a coordinate's own iterate is already slower
    beta_eq = 1 / t1.max()
    if np.isfinite(t1.max()) and np.all(np.abs(1 - r["eta"] * a) <= 1 - beta_eq):
        r["exact_eq"] = exact_sgd(a, sigma, r["eta"], 0.0, beta_eq)[0].sum()


def factor(r, kind):
    """baseline error / PACE error, exact or simulated; nan when unknown or diverged."""
    if kind not in r:
        return np.nan
    base, pace = r[kind]
    return base / pace if np.isfinite(base) and np.isfinite(pace) else np.nan


def fmt(x, spec):
    return "–" if x is None or not np.isfinite(x) else format(x, spec)


def table(rows):
    header = ["form", "lr η", "β", "c", "s", "gain λ (stiff, flat)", "E‖e‖² EMA: exact / sim",
              "E‖e‖² PACE: exact / sim", "factor: exact / sim", "relaxation steps EMA → PACE", "vs equal-speed EMA"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r["form"], f"{r['eta']:g}", f"{r['beta']:g}", f"{r['c']:g}", f"{r['s']:g}",
                 ", ".join(f"{x:.3g}" for x in r["lam"]) if "lam" in r else "–"]
        for k in (0, 1):
            exact = ("diverges" if not np.isfinite(r["exact"][k]) else f"{r['exact'][k]:.3e}") if "exact" in r else "–"
            if "sim" not in r:
                sim = f"not run (needs {r['sim_needs']:.2g} steps)" if k == 0 else "not run"
            elif not np.isfinite(r["sim"][k]):
                sim = "diverges"
            else:
                sim = f"{r['sim'][k]:.3e} ± {100 * r['sim_se'][k] / r['sim'][k]:.1f}%"
            cells.append(f"{exact} / {sim}")
        cells.append(f"{fmt(factor(r, 'exact'), '.3g')} / {fmt(factor(r, 'sim'), '.3g')}")
        if "exact" in r:
            t0, t1 = r["relax"]
            cells.append(f"{t0:.3g} → {fmt(t1, '.3g') if np.isfinite(t1) else 'diverges'}")
            cells.append(fmt(r["exact_eq"] / r["exact"][1] if "exact_eq" in r else None, ".3g"))
        else:
            cells += ["–", "–"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict(rows):
    """The table's answers in plain sentences (exact factors where there are, else simulated)."""
    best_factor = lambda r: factor(r, "exact") if "exact" in r else factor(r, "sim")
    diverged = [r for r in rows if "exact" in r and not np.isfinite(r["exact"][1])
                or "exact" not in r and "sim" in r and not np.isfinite(r["sim"][1])]
    known = [r for r in rows if np.isfinite(best_factor(r))]
    helped = [r for r in known if best_factor(r) > 1.01]
    hurt = [r for r in known if best_factor(r) < 0.99]
    out = [f"The pullback lowers the EMA's limiting error (factor > 1.01) in {len(helped)} of {len(rows)} rows, "
           f"changes it by less than 1% in {len(known) - len(helped) - len(hurt)}, raises it in {len(hurt)}, "
           f"makes the iteration diverge in {len(diverged)}"
           + (f"; {len(rows) - len(known) - len(diverged)} not run" if len(rows) > len(known) + len(diverged) else "")
           + "."]
    if helped:
        top = max(helped, key=best_factor)
        out.append(f"Largest factor: {best_factor(top):.3g} ({top['form']}, η={top['eta']:g}, β={top['beta']:g}, "
                   f"c={top['c']:g}, s={top['s']:g}).")
    eq = [r["exact_eq"] / r["exact"][1] for r in rows if "exact_eq" in r]
    if eq:
        out.append(f"Against the EMA baseline with PACE's relaxation time (a longer EMA), PACE is better "
                   f"(ratio > 1.01) in {sum(x > 1.01 for x in eq)} of {len(eq)} sgd rows; "
                   f"ratios {min(eq):.3g} to {max(eq):.3g}.")
    return "\n".join(out)


def plot(rows, path):
    """The factor against s (log-log), one line per (form, lr, beta, c). False without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.6))
    lines = {}
    for r in rows:
        lines.setdefault((r["form"], r["eta"], r["beta"], r["c"]), []).append(r)
    for (form, eta, beta, c), rs in lines.items():
        label = f"{form}, η={eta:g}, β={beta:g}, c={c:g}"
        s = [r["s"] for r in rs]
        line, = axes[0].plot(s, [factor(r, "sim") for r in rs], "o" if form == "sgd" else "s",
                             ls="-" if form == "sgd" else "--", ms=4, label=label)
        if form == "sgd":
            axes[0].plot(s, [factor(r, "exact") for r in rs], "x", color=line.get_color(), ms=7)
            axes[1].plot(s, [r["exact_eq"] / r["exact"][1] if "exact_eq" in r else np.nan for r in rs],
                         "o-", ms=4, color=line.get_color(), label=label)
    for ax, title in zip(axes, ("EMA error / PACE error (× exact)", "equal-speed EMA error / PACE error (sgd, exact)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.axhline(1, color="k", lw=0.8)
        ax.set_xlabel(f"spread s (flat coordinate: a = 1/s, σ = s^{rows[0]['q']:g})")
        ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return True


def parse_numbers(text, arg, low, strict=True, high=None):
    try:
        values = [float(x) for x in text.split(",")]
    except ValueError:
        raise InputError(f"{arg}: {text!r} is not a comma list of numbers")
    for v in values:
        if not np.isfinite(v) or (v <= low if strict else v < low) or (high is not None and v > high):
            bound = f"{'>' if strict else '>='} {low:g}" + (f" and <= {high:g}" if high is not None else "")
            raise InputError(f"{arg}: {v:g} must be {bound}")
    return values


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--form", default="sgd,adamw", help="comma list of sgd, adamw (default both)")
    p.add_argument("--lr", default="1,1.8", help="step sizes η (default 1,1.8: the stiff coordinate's η·a; 2 is unstable)")
    p.add_argument("--beta", default="0.01", help="fixed EMA decays β (default 0.01)")
    p.add_argument("--c", default="1,10", help="pullback strengths c, > 0 (default 1,10)")
    p.add_argument("--spread", default="1,10,100", help="instance spreads s >= 1 (default 1,10,100)")
    p.add_argument("--noise", type=float, default=0.5, help="the flat coordinate's noise is s^noise (default 0.5)")
    p.add_argument("--chains", type=int, default=256, help="independent chains per simulation (default 256)")
    p.add_argument("--max_steps", type=int, default=200_000,
                   help="simulate only rows that need at most this many steps (default 200000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", default="quadratic.png", help="PNG to write; '' for none (default quadratic.png)")
    args = p.parse_args(argv)
    forms = args.form.split(",")
    if not forms or any(f not in ("sgd", "adamw") for f in forms):
        raise InputError(f"--form: {args.form!r} is not a comma list of sgd, adamw")
    args.form = forms
    args.lr = parse_numbers(args.lr, "--lr", 0)
    args.beta = parse_numbers(args.beta, "--beta", 0, high=1)
    args.c = parse_numbers(args.c, "--c", 0)
    args.spread = parse_numbers(args.spread, "--spread", 1, strict=False)
    if args.chains < 2:
        raise InputError("--chains must be >= 2 (the standard error needs two)")
    if args.max_steps < 1:
        raise InputError("--max_steps must be positive")
    if not np.isfinite(args.noise):
        raise InputError("--noise must be a finite number")
    return args


def main(argv=None):
    try:
        args = parse_args(argv)
    except InputError as e:
        print(f"quadratic.py: error: {e}", file=sys.stderr)
        return 1
    rows = rows_of(args)
    evaluate(rows, args.chains, args.seed, args.max_steps)
    print(f"Noisy quadratic, instances I(s): a = (1, 1/s), σ = (1, s^{args.noise:g}). Limiting E‖e‖² of the returned EMA "
          f"without (EMA) and with the pullback (PACE); factor = EMA / PACE, > 1 means PACE is better. "
          f"sim: {args.chains} chains, seed {args.seed}, ± one standard error.\n")
    print(table(rows))
    print()
    print(verdict(rows))
    if args.plot:
        if plot(rows, args.plot):
            print(f"\nplot: {args.plot}", file=sys.stderr)
        else:
            print("\nmatplotlib is not installed: no plot (pip install matplotlib)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
