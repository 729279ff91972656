"""Figure 4 (canonical 10-d PDEs, zero-shot) of "Base Models for Parabolic PDEs": the Neural
Girsanov Operator against direct Girsanov re-weighting and Euler-Maruyama, at equal paths.

    python -m experiments.parabolic_figure4 [--profile quick|cpu] [--out DIR]

Two NGOs are trained over the random-basis drift family (mu_i = c0 + c1 x_i + c2 x_i^2,
c ~ U(-1, 1)^3: the paper's basis, with a symmetric range so that the canonical drifts,
e.g. the OU density's -x, lie inside it): the paper's (zero read-outs: it starts blind to
the drift) and one started at the exact Girsanov weight (`init="girsanov"`: untrained, it
equals direct Girsanov; training against Girsanov targets, the paper's objective, can only
learn a correction). Both are then used zero-shot on

- held-out affine members of the family (exact closed form), batched over many drifts;
- HJB (Cole-Hopf, log terminal cost; error on the value u = -log p), OU Fokker-Planck
  density (correct -x auxiliary drift), Black-Scholes-Barenblatt (sigma 0.1, r 0.05) and a
  best-of-d rainbow call (r 0.1, sigma 0.5, K 0.1; reference: exact lognormal Monte Carlo).

All three estimators use the same base increments (common random numbers), the same number
of paths and steps, and are timed jitted (feature construction included), after warm-up.
Errors: the paper's normalized error NE = mean((u - u_ref)^2) / mean|u_ref| and the relative
L2 error |u - u_ref| / |u_ref|.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from adjoint_lab import parabolic
from adjoint_lab.parabolic import problems
from experiments.report import Report

NAME = "parabolic_figure4"
PROFILES = {
    # For the tests: 2-d, a few training steps, a few hundred paths.
    "quick": dict(
        d=2,
        n_paths=200,
        n_steps=10,
        n_points=4,
        n_test_drifts=4,
        reference_paths=20_000,
        train=dict(steps=20, n_paths=32, n_target_paths=128, n_tasks=2, n_points=2),
        learning_rate={"zero": 1e-2, "girsanov": 1e-3},
        width=16,
        repeats=2,
    ),
    # ~15 min on a shared 2-core CPU: the paper's d = 10 and 40 steps, 1000 paths.
    "cpu": dict(
        d=10,
        n_paths=1000,
        n_steps=40,
        n_points=8,
        n_test_drifts=16,
        reference_paths=1 << 20,
        train=dict(steps=300, n_paths=128, n_target_paths=512, n_tasks=4, n_points=4),
        # A start at the exact weight gets a 10x smaller step: it is already a good estimator.
        learning_rate={"zero": 1e-2, "girsanov": 1e-3},
        width=32,
        repeats=5,
    ),
}
T = 0.25  # the middle column of the paper's Figure 4c
PAPER_NGO_NE = {"HJB": 1.1e-3, "OU density": 1.0e-7, "BSB": 2.2e-3, "rainbow call": 4.9e-2}
PAPER_EM_NE = {"HJB": 4.7e-3, "OU density": 3.6e-7, "BSB": 5.2e-6, "rainbow call": 2.0e-3}


class RainbowCall(eqx.Module):
    """Best-of-d call max(max_k s_k - K, 0) in log-prices x = log s: drift r - sigma^2/2,
    volatility sigma, discount r (the Lamperti transform of d independent GBMs)."""

    r: float = 0.1
    sigma: float = 0.5
    strike: float = 0.1

    def drift(self, t, x):
        return jnp.full_like(x, self.r - 0.5 * self.sigma**2)

    def p0(self, x):
        return jnp.maximum(jnp.max(jnp.exp(x)) - self.strike, 0.0)

    def rate(self, t, x):
        return self.r * jnp.ones((), x.dtype)

    def reference(self, T: float, x: Float[Array, "m d"], n: int, key) -> tuple[Array, Array]:
        """Exact lognormal sampling of X_T (no time stepping): mean and stderr per point."""
        chunks = max(1, n // (1 << 16))
        keys = jax.random.split(key, chunks)

        @jax.jit
        def chunk(k):
            z = jax.random.normal(k, (n // chunks, x.shape[1]), x.dtype)
            end = x[:, None] + (self.r - 0.5 * self.sigma**2) * T + self.sigma * np.sqrt(T) * z
            pay = jnp.exp(-self.r * T) * jax.vmap(jax.vmap(self.p0))(end)
            return pay.mean(1), (pay**2).mean(1)

        first, second = (np.mean(v, 0) for v in zip(*[chunk(k) for k in keys], strict=True))
        return first, np.sqrt((second - first**2) / n)


def normalized_error(u, ref) -> float:
    u, ref = np.asarray(u, np.float64), np.asarray(ref, np.float64)
    return float(np.mean((u - ref) ** 2) / np.mean(np.abs(ref)))


def relative_l2(u, ref) -> float:
    u, ref = np.asarray(u, np.float64), np.asarray(ref, np.float64)
    return float(np.linalg.norm(u - ref) / np.linalg.norm(ref))


def timed(fn, *args, repeats: int) -> tuple[object, float]:
    """Result and best wall time of a jitted call, after one warm-up (compile) call."""
    out = jax.block_until_ready(fn(*args))
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return out, best


NGO_NAMES = {"zero": "NGO", "girsanov": "NGO (Girsanov init)"}


def estimators(operators: dict[str, parabolic.NeuralGirsanovOperator]):
    """The estimators as jitted functions of (paths, drift, p0, rate): one per trained
    operator (keyed by its init), direct Girsanov and Euler-Maruyama."""

    def ngo(operator):
        return eqx.filter_jit(
            lambda paths, drift, p0, rate: parabolic.ngo_expectation(
                operator, paths, drift, p0, rate
            )
        )

    return {
        **{NGO_NAMES[init]: ngo(operator) for init, operator in operators.items()},
        "Girsanov": eqx.filter_jit(
            lambda paths, drift, p0, rate: paths.expectation(drift, p0, rate)
        ),
        "Euler-Maruyama": eqx.filter_jit(parabolic.euler_maruyama_expectation),
    }


def train_operator(
    profile: dict, key, init: str = "zero"
) -> tuple[parabolic.NeuralGirsanovOperator, np.ndarray, float]:
    config = parabolic.NGOTrainingConfig(
        T=T,
        n_steps=profile["n_steps"],
        c_low=(-1.0, -1.0, -1.0),
        c_high=(1.0, 1.0, 1.0),
        learning_rate=profile["learning_rate"][init],
        **profile["train"],
    )
    operator = parabolic.NeuralGirsanovOperator(
        profile["d"], width=profile["width"], init=init, key=key
    )
    start = time.perf_counter()
    operator, losses = parabolic.train_ngo(operator, config, jax.random.fold_in(key, 1))
    return operator, losses, time.perf_counter() - start


def held_out_family(profile, methods, key) -> list[list]:
    """Held-out affine drifts with the exact solution; every method vmapped over drifts."""
    d, m = profile["d"], profile["n_points"]
    kx, kc, kp = jax.random.split(key, 3)
    x = jax.random.uniform(kx, (m, d), minval=0.1, maxval=0.6)
    c = parabolic.sample_coefficients(kc, profile["n_test_drifts"], (-1, -1, 0), (1, 1, 0))
    initial = parabolic.SineInitial(np.pi, 0.3)
    paths = parabolic.BasePaths.sample(
        kp, x, T=T, n_paths=profile["n_paths"], n_steps=profile["n_steps"]
    )
    exact = jax.vmap(lambda ci: parabolic.affine_sine_exact(ci, initial, T, x))(c)
    rows = []
    for name, method in methods.items():
        batched = jax.jit(
            lambda paths, c, method=method: jax.lax.map(
                lambda ci: method(paths, parabolic.RandomBasisDrift(ci), initial, None).value, c
            )
        )
        value, seconds = timed(batched, paths, c, repeats=profile["repeats"])
        rows.append(
            [
                name,
                normalized_error(value, exact),
                relative_l2(value, exact),
                1e3 * seconds / len(c),
            ]
        )
    return rows


def canonical(profile, key) -> dict[str, tuple]:
    """name -> (problem, points, reference fn of estimate value, reference, transform)."""
    d, m = profile["d"], profile["n_points"]
    kx, kr = jax.random.split(key)
    x = jax.random.uniform(kx, (m, d), minval=0.1, maxval=0.6)
    hjb = problems.LogTerminalHJB()
    bsb = problems.BlackScholesBarenblatt(r=0.05, sigma=0.1)
    ou = problems.OrnsteinUhlenbeckDensity()
    rainbow = RainbowCall()
    rainbow_x = jnp.log(x - 0.05)  # spot prices in [0.05, 0.55]
    rainbow_ref, rainbow_se = rainbow.reference(T, rainbow_x, profile["reference_paths"], kr)
    identity = lambda p: p
    return {
        # The HJB error is on the value u = -log p / lam, as in the paper.
        "HJB": (hjb, x, hjb.exact_value(T, x), hjb.value, 0.0),
        "OU density": (ou, x, ou.exact(T, x), identity, 0.0),
        "BSB": (bsb, jnp.log(x), bsb.exact(T, jnp.log(x)), identity, 0.0),
        "rainbow call": (rainbow, rainbow_x, rainbow_ref, identity, float(np.max(rainbow_se))),
    }


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile]
    key = jax.random.PRNGKey(0)
    command = f"python -m experiments.parabolic_figure4 --profile {args.profile}"
    report = Report(
        NAME,
        "Parabolic base models: Figure 4 (NGO vs Girsanov vs Euler-Maruyama)",
        command,
        out=args.out,
    )

    operators, training = {}, []
    for init in NGO_NAMES:
        operator, losses, seconds = train_operator(profile, key, init)
        operators[init] = operator
        training.append(
            f"{NGO_NAMES[init]} (lr {profile['learning_rate'][init]:g}) in {seconds:.0f} s, "
            f"loss {losses[:10].mean():.3g} -> {losses[-20:].mean():.3g}"
        )
    n_params = sum(
        a.size for a in jax.tree.leaves(eqx.filter(operators["zero"], eqx.is_inexact_array))
    )
    methods = estimators(operators)
    report.text(
        f"d = {profile['d']}, T = {T}, {profile['n_steps']} steps, {profile['n_paths']} paths "
        f"per estimate for every method (common random numbers), {profile['n_points']} points "
        f"x ~ U[0.1, 0.6]^d. NGOs: {n_params} parameters each, trained "
        f"{profile['train']['steps']} steps over c ~ U(-1, 1)^3: " + "; ".join(training) + ". "
        "Times are per drift, jitted, after warm-up, feature construction included. "
        "NE = mean((u - u_ref)^2) / mean|u_ref| (the paper's metric; scale-dependent), "
        "rel L2 = |u - u_ref| / |u_ref|."
    )

    report.section("Held-out drifts of the family (exact solution), batched over drifts")
    family = held_out_family(profile, methods, jax.random.fold_in(key, 2))
    report.table(["method", "NE", "rel L2", "ms per drift"], family, key="family")

    report.section(f"Canonical {profile['d']}-d PDEs, zero-shot, T = {T}")
    rows = []
    for name, (problem, x, ref, transform, ref_se) in canonical(
        profile, jax.random.fold_in(key, 3)
    ).items():
        paths = parabolic.BasePaths.sample(
            jax.random.fold_in(key, 4),
            x,
            T=T,
            n_paths=profile["n_paths"],
            n_steps=profile["n_steps"],
            sigma=problem.sigma,
        )
        rate = None if isinstance(problem, problems.AbstractColeHopfHJB) else problem.rate
        for method, fn in methods.items():
            est, seconds = timed(
                fn, paths, problem.drift, problem.p0, rate, repeats=profile["repeats"]
            )
            u = transform(est.value)
            rows.append(
                [
                    name,
                    method,
                    normalized_error(u, ref),
                    relative_l2(u, ref),
                    1e3 * seconds,
                    PAPER_NGO_NE[name]
                    if method.startswith("NGO")
                    else PAPER_EM_NE[name]
                    if method == "Euler-Maruyama"
                    else None,
                    ref_se or None,
                ]
            )
    report.table(
        ["PDE", "method", "NE", "rel L2", "ms", "paper NE (Fig. 4c, T=0.25)", "reference stderr"],
        rows,
        key="canonical",
    )
    report.text(
        "The Girsanov-init NGO starts as the direct Girsanov estimator (tested: identical "
        "weights path by path); comparing its row with Girsanov's shows what training "
        "against Girsanov targets adds to, or takes from, the exact weight. "
        "The paper's claim 'NGO 20-70x faster than E-M' is measured here as the ms columns: "
        "all three are one jitted, vectorised pass over paths and steps, so the ratio is "
        "the NGO network's cost per (path, step) against one drift evaluation per step."
    )
    return report.write()


if __name__ == "__main__":
    main()
