"""Time and error of the Neural Girsanov Operator, direct Girsanov re-weighting and
Euler-Maruyama, at equal paths and at equal error: the paper's "NGO 20-70x faster than
Euler-Maruyama", measured rather than assumed.

    python -m experiments.parabolic_speed [--profile quick|cpu] [--out DIR]

Setting: Figure 4's (`experiments.parabolic_figure4`): d = 10, T = 0.25, 40 steps, held-out
affine drifts of the random-basis family with their exact solution, and the NGO trained as
there (same key and configuration: the same operator). Every method is jitted and batched
over the drifts (`lax.map` over drifts, vectorised over points and paths), all three on the
same base increments (common random numbers); times are per drift after a warm-up call,
best of a few repeats, feature construction included.

For a grid of path counts n: the relative L2 error over all drifts and points (root mean
square over independent path banks) and the time per drift. The measured errors are noisy, so
equal error is read from a fitted Monte-Carlo model, error(n)^2 = b^2 + v / n (a bias floor b,
which the trained NGO has and the unbiased estimators should not, and a variance v): for each
target error, the path count each method needs and the time that costs (times interpolated on
the measured grid, linear in n beyond it); a method whose floor lies above the target cannot
reach it at any n.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import numpy as np

from adjoint_lab import parabolic
from experiments import parabolic_figure4 as figure4
from experiments.report import Report

NAME = "parabolic_speed"
PROFILES = {
    "quick": dict(
        figure4="quick",
        n_grid=(32, 64, 128),
        n_drifts=3,
        seeds=2,
        repeats=1,
        targets=(0.3, 0.2),
    ),
    "cpu": dict(
        figure4="cpu",
        n_grid=(125, 250, 500, 1000, 2000, 4000),
        n_drifts=8,
        seeds=4,
        repeats=3,
        targets=(0.15, 0.1, 0.05, 0.03, 0.02),
    ),
}


def fit_error_model(paths: np.ndarray, errors: np.ndarray) -> tuple[float, float]:
    """(bias floor b, variance per path v) of the Monte-Carlo error model
    error(n)^2 = b^2 + v / n, fitted by least squares in relative terms (each point weighted
    by 1 / error^2, so that every grid point counts alike); b = 0 if the fit wants it below."""
    weights = 1.0 / errors**2
    design = np.stack([np.ones_like(paths), 1.0 / paths], axis=1) * weights[:, None]
    (floor2, variance), *_ = np.linalg.lstsq(design, errors**2 * weights, rcond=None)
    if floor2 < 0:  # no visible floor: pure 1/n variance
        floor2 = 0.0
        variance = float(np.sum(weights**2 * errors**2 / paths) / np.sum((weights / paths) ** 2))
    return float(np.sqrt(floor2)), float(variance)


def paths_for_error(floor: float, variance: float, target: float) -> float | None:
    """The paths n with b^2 + v / n = target^2; None if the bias floor is at or above it."""
    gap = target**2 - floor**2
    return variance / gap if gap > 0 else None


def time_at(paths: np.ndarray, seconds: np.ndarray, n: float) -> float:
    """Time for n paths: log-log interpolation of the measured times, extended beyond the grid
    in proportion to n (every method's cost is linear in the paths)."""
    if n <= paths[0]:
        return float(seconds[0] * n / paths[0])
    if n >= paths[-1]:
        return float(seconds[-1] * n / paths[-1])
    return float(np.exp(np.interp(np.log(n), np.log(paths), np.log(seconds))))


def sweep(profile: dict, methods: dict, key) -> dict[str, np.ndarray]:
    """method -> rows of (paths, rel L2, ms per drift) over the grid."""
    fig4 = figure4.PROFILES[profile["figure4"]]
    d, m = fig4["d"], fig4["n_points"]
    kx, kc, kp = jax.random.split(key, 3)
    x = jax.random.uniform(kx, (m, d), minval=0.1, maxval=0.6)
    c = parabolic.sample_coefficients(kc, profile["n_drifts"], (-1, -1, 0), (1, 1, 0))
    initial = parabolic.SineInitial(np.pi, 0.3)
    exact = jax.vmap(lambda ci: parabolic.affine_sine_exact(ci, initial, figure4.T, x))(c)
    curves: dict[str, list] = {name: [] for name in methods}
    for n in profile["n_grid"]:
        banks = [
            parabolic.BasePaths.sample(
                jax.random.fold_in(kp, 1000 * n + s),
                x,
                T=figure4.T,
                n_paths=n,
                n_steps=fig4["n_steps"],
            )
            for s in range(profile["seeds"])
        ]
        for name, method in methods.items():
            batched = jax.jit(
                lambda paths, c, method=method: jax.lax.map(
                    lambda ci: method(paths, parabolic.RandomBasisDrift(ci), initial, None).value,
                    c,
                )
            )
            value, seconds = figure4.timed(batched, banks[0], c, repeats=profile["repeats"])
            errors = [figure4.relative_l2(value, exact)]
            errors += [figure4.relative_l2(batched(bank, c), exact) for bank in banks[1:]]
            error = float(np.sqrt(np.mean(np.square(errors))))
            curves[name].append((n, error, 1e3 * seconds / len(c)))
            print(f"[{NAME}] n={n} {name}: rel L2 {error:.4g}, {curves[name][-1][2]:.3g} ms")
    return {name: np.array(rows) for name, rows in curves.items()}


def equal_error_rows(curves: dict[str, np.ndarray], targets) -> list[list]:
    """Per target error and method: the paths the fitted error model needs, their time, the
    ratio to Euler-Maruyama's time, and a note (bias floor too high, or beyond the grid)."""
    fits = {name: fit_error_model(rows[:, 0], rows[:, 1]) for name, rows in curves.items()}
    rows = []
    for target in targets:
        needed = {name: paths_for_error(*fits[name], target) for name in curves}
        times = {
            name: None if n is None else time_at(curves[name][:, 0], curves[name][:, 2], n)
            for name, n in needed.items()
        }
        em = times.get("Euler-Maruyama")
        for name, n in needed.items():
            if n is None:
                note = f"not reachable (bias floor {fits[name][0]:.3g})"
                rows.append([target, name, None, None, None, note])
                continue
            grid = curves[name][:, 0]
            note = "" if grid[0] <= n <= grid[-1] else "extrapolated beyond the grid"
            ratio = times[name] / em if em else None
            rows.append([target, name, round(n), times[name], ratio, note])
    return rows


def fit_rows(curves: dict[str, np.ndarray]) -> list[list]:
    rows = []
    for name, r in curves.items():
        floor, variance = fit_error_model(r[:, 0], r[:, 1])
        rows.append([name, floor, np.sqrt(variance), np.sqrt(floor**2 + variance / 1000)])
    return rows


def speed_figure(curves: dict[str, np.ndarray]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, rows in curves.items():
        ax.loglog(rows[:, 2], rows[:, 1], "o-", label=name)
        for n, e, ms in rows:
            ax.annotate(f"{int(n)}", (ms, e), fontsize=7, xytext=(2, 2), textcoords="offset points")
    ax.set_xlabel("ms per drift (jitted, batched over drifts)")
    ax.set_ylabel("relative L2 error vs exact")
    ax.set_title("Error against time (labels: paths)")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    return fig


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile]
    key = jax.random.PRNGKey(0)  # Figure 4's key: the same trained operator
    command = f"python -m experiments.parabolic_speed --profile {args.profile}"
    report = Report(
        NAME,
        "Parabolic base models: NGO vs Girsanov vs Euler-Maruyama, at equal paths and equal error",
        command,
        out=args.out,
    )
    fig4 = figure4.PROFILES[profile["figure4"]]
    operator, losses, train_seconds = figure4.train_operator(fig4, key)
    methods = figure4.estimators({"zero": operator})
    report.text(
        f"d = {fig4['d']}, T = {figure4.T}, {fig4['n_steps']} steps, {fig4['n_points']} "
        f"points, {profile['n_drifts']} held-out affine drifts (exact solution); errors are "
        f"the RMS over {profile['seeds']} independent path banks of the relative L2 error "
        f"over all drifts and points. NGO: Figure 4's (paper's zero init), trained "
        f"{fig4['train']['steps']} steps in {train_seconds:.0f} s (loss {losses[:10].mean():.3g} "
        f"-> {losses[-20:].mean():.3g})."
    )
    curves = sweep(profile, methods, jax.random.fold_in(key, 2))

    report.section("At equal paths")
    em = curves["Euler-Maruyama"]
    rows = [
        [int(n), name, e, ms, ms / em[i, 2]]
        for name, r in curves.items()
        for i, (n, e, ms) in enumerate(r)
    ]
    report.table(
        ["paths", "method", "rel L2", "ms per drift", "time / Euler-Maruyama"], rows, key="paths"
    )

    report.section("Error model: rel L2(n)^2 = b^2 + v / n, fitted per method")
    report.table(
        ["method", "bias floor b", "sqrt(v) (error of one path)", "fitted rel L2 at n = 1000"],
        fit_rows(curves),
        key="fit",
    )
    report.section("At equal error (paths from the fitted model)")
    columns = ["target rel L2", "method", "paths needed", "ms per drift", "time / E-M", "note"]
    report.table(columns, equal_error_rows(curves, profile["targets"]), key="error")
    report.figure(speed_figure(curves), f"{NAME}.png", "error against time per drift")
    report.text(
        "Reading: at equal paths the NGO runs its network over every (path, step) while "
        "Girsanov and Euler-Maruyama evaluate the drift once per step, so the ratio measures "
        "the network's cost against one drift evaluation. At equal error the NGO also pays "
        "for its training error, which more paths do not remove. The paper's 20-70x comes from "
        "asymmetric timers (its notes, pitfall 8): the NGO's excludes feature construction, "
        "Euler-Maruyama's includes a Python loop over steps; here all three are jitted and "
        "timed the same way."
    )
    return report.write()


if __name__ == "__main__":
    main()
