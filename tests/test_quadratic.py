"""quadratic.py: the limiting error of the EMA against closed forms, the update rules, the CLI."""

import math

import numpy as np
import pytest
from studies import quadratic as q


def ema_sgd_closed_form(h, beta, noise):
    """Stationary E[e^2] of plain EMA-SGD on a 1-D quadratic, derived by hand.

    x_{t+1} = rho x_t - noise xi_t with rho = 1 - eta a = 1 - h and noise = eta sigma, so
    Var x = noise^2 / (1 - rho^2) =: V and Cov(x_t, x_{t-j}) = V rho^|j|. Unrolling
    e_{t+1} = (1 - beta) e_t + beta x_{t+1} gives e_t = beta sum_k r^k x_{t-k}, r = 1 - beta, so
    E[e^2] = beta^2 V sum_{j,k>=0} r^(j+k) rho^|j-k|. The diagonal j = k sums to 1/(1 - r^2),
    each off-diagonal side to r rho / ((1 - r^2)(1 - r rho)), so the double sum is
    (1 + r rho) / ((1 - r^2)(1 - r rho)); with 1 - r^2 = beta (2 - beta):
    E[e^2] = beta V (1 + r rho) / ((2 - beta)(1 - r rho)).
    """
    rho, r = 1 - h, 1 - beta
    V = noise ** 2 / (1 - rho ** 2)
    return beta * V * (1 + r * rho) / ((2 - beta) * (1 - r * rho)), V


# (eta * a, beta): overdamped, underdamped (eta a > 1), an EMA that is the iterate (beta = 1)
CASES = [(0.5, 0.05), (0.01, 0.3), (1.5, 0.01), (1.0, 1.0), (1.9, 0.5), (0.2, 0.2)]


@pytest.mark.parametrize("h, beta", CASES)
def test_lyapunov_matches_the_hand_derived_formula(h, beta):
    eta, sigma = 0.1, 2.0
    want_e2, want_x2 = ema_sgd_closed_form(h, beta, eta * sigma)
    e2, relax = q.exact_sgd(h / eta, sigma, eta, 0.0, beta)
    assert e2 == pytest.approx(want_e2, rel=1e-10)
    S = q.stationary_cov(*q.sgd_system(h / eta, sigma, eta, 0.0, beta))
    assert S[0, 0] == pytest.approx(want_x2, rel=1e-10)
    # without pullback A is triangular: its eigenvalues are 1 - h and 1 - beta
    assert relax == pytest.approx(1 / (1 - max(abs(1 - h), 1 - beta)), rel=1e-10)


def test_lyapunov_solution_is_a_fixed_point():
    rng = np.random.default_rng(0)
    A = rng.uniform(-0.6, 0.6, size=(5, 2, 2))  # random stable systems, with a non-symmetric A
    assert np.all(np.abs(np.linalg.eigvals(A)) < 1)
    b = rng.standard_normal((5, 2))
    S = q.stationary_cov(A, b)
    assert np.allclose(S, A @ S @ A.transpose(0, 2, 1) + b[:, :, None] * b[:, None, :], rtol=0, atol=1e-12)


def test_simulation_matches_the_closed_form():
    # two 1-D problems in one vectorized simulation, on independent noise
    h, beta = np.array([0.5, 0.05]), np.array([0.05, 0.5])
    eta, sigma = 0.1, np.array([1.0, 3.0])
    e2, lam = q.simulate("sgd", h / eta, sigma, eta, 0.0, beta, [0, 1], steps=6000, burn=1000, chains=1000, seed=0)
    want = ema_sgd_closed_form(h, beta, eta * sigma)[0]
    assert np.all(np.abs(e2.mean(0) / want - 1) < 0.03)
    assert np.all(lam == 0)


def test_simulation_matches_lyapunov_with_the_pullback():
    # the pullback couples x and e: sgd_system's matrix against the update rule as simulate runs it
    eta, beta = 0.1, 0.05
    a, sigma = np.array([2.0, 0.5]), np.array([1.0, 2.0])
    c = 0.3 / (eta * beta)  # lambda = 0.3
    want, _ = q.exact_sgd(a, sigma, eta, q.sgd_gain(eta, c, beta), beta)
    e2, lam = q.simulate("sgd", a, sigma, eta, c, beta, [0, 1], steps=6000, burn=1000, chains=1000, seed=1)
    assert lam == pytest.approx([0.3, 0.3])
    assert np.all(np.abs(e2.mean(0) / want - 1) < 0.03)
    no_pullback, _ = q.exact_sgd(a, sigma, eta, 0.0, beta)
    assert np.all(want < 0.9 * no_pullback)  # the comparison above is not between two baselines


def reference_run(form, a, sigma, eta, c, beta, steps, seed):
    """pace.py's update rule (issue 2) on one scalar coordinate, step by step in Python floats."""
    rng = np.random.default_rng(seed)
    x = e = m = v = 0.0
    e2 = []
    for t in range(1, steps + 1):
        g = a * x + sigma * float(rng.standard_normal((1, 1))[0, 0])
        if form == "sgd":
            x_new, lam = x - eta * g, min(eta * c * beta, 1.0)
        else:
            m = 0.9 * m + 0.1 * g
            v = 0.999 * v + 0.001 * g * g
            denom = math.sqrt(v / (1 - 0.999 ** t)) + 1e-8
            x_new = x - eta * (m / (1 - 0.9 ** t)) / denom
            lam = min(eta * c * beta / denom, 1.0)
        x = x_new + lam * (e - x)  # the pullback toward the EMA before this step, from the weights before it
        e = (1 - beta) * e + beta * x
        e2.append(e * e)
    return e2


@pytest.mark.parametrize("form, c", [("sgd", 5.0), ("adamw", 5.0), ("adamw", 500.0)])  # 500: the clamp at 1
def test_simulation_follows_the_update_rule(form, c):
    steps, burn = 7, 3
    want = reference_run(form, 0.7, 1.3, 0.2, c, 0.3, steps, seed=4)
    e2, _ = q.simulate(form, np.array([0.7]), np.array([1.3]), 0.2, c, 0.3, [0], steps=steps, burn=burn,
                       chains=1, seed=4)
    assert e2[0, 0] == pytest.approx(np.mean(want[burn:]), rel=1e-12)


def test_divergence_is_reported_not_solved():
    e2, relax = q.exact_sgd(np.array([2.5, 1.8]), 1.0, 1.0, np.array([0.0, 0.9]), 0.01)
    assert np.all(np.isnan(e2)) and np.all(np.isinf(relax))
    stable, _ = q.exact_sgd(1.8, 1.0, 1.0, 0.0, 0.01)  # the same stiff coordinate without the pullback
    assert np.isfinite(stable)


def exact_factor(s, eta, c, beta=0.01):
    a, sigma = q.instance(s)
    base, _ = q.exact_sgd(a, sigma, eta, 0.0, beta)
    pace, _ = q.exact_sgd(a, sigma, eta, q.sgd_gain(eta, c, beta), beta)
    return base.sum() / pace.sum()


def test_the_instance_family_behaves_as_documented():
    factors = [exact_factor(s, eta=1.0, c=10) for s in (1, 10, 100, 1000, 1e6)]
    assert all(b > a for a, b in zip(factors, factors[1:]))  # grows with s ...
    assert factors[0] < 1.2 and factors[2] > 5
    assert factors[-1] == pytest.approx(1 + 0.1 / 0.01, rel=0.02)  # ... and saturates near 1 + lambda/beta
    assert exact_factor(1, eta=1.8, c=10) < 0.9  # near the stability edge the pullback hurts


def test_rule_of_thumb_in_the_docstring():
    # a coordinate's factor is a little below 1 + lambda / (beta + h), within 20%, away from the edge
    h, beta, lam = (x.ravel() for x in np.meshgrid(np.geomspace(1e-4, 1, 9), np.geomspace(1e-3, 0.3, 6),
                                                   np.geomspace(1e-4, 0.5, 9), indexing="ij"))
    keep = 1 - h - lam > -0.5
    h, beta, lam = h[keep], beta[keep], lam[keep]
    base, _ = q.exact_sgd(h, 1.0, 1.0, 0.0, beta)
    pace, _ = q.exact_sgd(h, 1.0, 1.0, lam, beta)
    ratio = (base / pace) / (1 + lam / (beta + h))
    assert ratio.max() <= 1 + 1e-9 and ratio.min() > 0.8


def pace_sgd_closed_form(h, beta, lam, noise):
    """Stationary E[e^2] of EMA-SGD with the pullback, and its relaxation steps, from the rule
    x' = (1 - h - lam) x + lam e - noise xi, e' = (1 - beta) e + beta x'. The covariance of
    (x, e) is sum_k A^k b b^T (A^k)^T, summed by doubling: S_2n = S_n + A^n S_n (A^n)^T."""
    keep = 1 - h - lam
    A = np.array([[keep, lam], [beta * keep, 1 - beta + beta * lam]])
    b = np.array([-noise, -beta * noise])
    S, power = np.outer(b, b), A
    for _ in range(40):  # 2^40 terms
        S, power = S + power @ S @ power.T, power @ power
    return S[1, 1], 1 / (1 - np.abs(np.linalg.eigvals(A)).max())


def cli_numbers(s, eta=1.0, c=10.0, beta=0.01):
    """The exact cells of an sgd row for the instance I(s) (a = 1, 1/s; sigma = 1, s^0.5):
    E||e||^2 of the EMA and of PACE, and the slowest relaxation with the pullback."""
    a, sigma = np.array([1.0, 1 / s]), np.array([1.0, s ** 0.5])
    lam = min(eta * c * beta, 1.0)
    ema = sum(ema_sgd_closed_form(eta * ai, beta, eta * si)[0] for ai, si in zip(a, sigma))
    pace, relax = zip(*(pace_sgd_closed_form(eta * ai, beta, lam, eta * si) for ai, si in zip(a, sigma)))
    return ema, sum(pace), max(relax)


def test_cli_table(capsys):
    assert q.main(["--form", "sgd", "--lr", "1", "--c", "10", "--spread", "1,100", "--chains", "64", "--plot", ""]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| sgd")]
    assert len(rows) == 2
    ema, pace, _ = cli_numbers(100)
    assert rows[1].startswith(f"| sgd | 1 | 0.01 | 10 | 100 | 0.1, 0.1 | {ema:.3e} / ")
    assert f"| {pace:.3e} / " in rows[1]
    exact_factor = f"{ema / pace:.3g}"
    sim_factor = float(rows[1].split(f"| {exact_factor} / ")[1].split(" |")[0])
    assert sim_factor == pytest.approx(ema / pace, rel=0.1)
    assert "lowers the EMA's limiting error (factor > 1.01) in 2 of 2 rows" in out


def test_cli_budget_keeps_the_exact_numbers(capsys):
    assert q.main(["--form", "sgd", "--lr", "1", "--c", "10", "--spread", "100", "--max_steps", "100",
                   "--plot", ""]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| sgd"))
    # 25 relaxation times are needed to simulate: the row keeps its exact numbers only
    ema, pace, relax = cli_numbers(100)
    assert 25 * relax > 100
    assert f"| {ema:.3e} / not run (needs {int(25 * relax):.2g} steps) | {pace:.3e} / not run | {ema / pace:.3g} / – |" in row


@pytest.mark.parametrize("args, message", [
    (["--form", "sgd,adam"], "--form: 'sgd,adam' is not a comma list of sgd, adamw"),
    (["--lr", "0"], "--lr: 0 must be > 0"),
    (["--beta", "1.5"], "--beta: 1.5 must be > 0 and <= 1"),
    (["--c", "x"], "--c: 'x' is not a comma list of numbers"),
    (["--spread", "0.5"], "--spread: 0.5 must be >= 1"),
    (["--chains", "1"], "--chains must be >= 2"),
    (["--max_steps", "0"], "--max_steps must be positive"),
])
def test_bad_input_is_a_one_line_error(capsys, args, message):
    assert q.main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("quadratic.py: error: ") and message in err and err.count("\n") == 1
