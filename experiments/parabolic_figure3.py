"""Figure 3 (generative modelling with a meta-learned base distribution) of "Base Models for
Parabolic PDEs": test bits/dim against the Wasserstein distance of each task, for a
meta-learned RealNVP start p_meta against a standard-Gaussian start.

    python -m experiments.parabolic_figure3 [--profile quick|cpu] [--out DIR]

2-d only (the paper's 100-d panel is not run: it does not fit the CPU budget).

- Meta-training: 10 Gaussian tasks N(c (1, 1), s^2 I), c evenly spaced on [0, 10], s drawn
  from U[0.5, 1.5]; 60 samples each, pooled (600), fit a RealNVP p_meta by maximum
  likelihood.
- Test tasks: N(c (1, 1), I) for c up to 20 (inside and beyond p_meta's support). For each
  task and each start law p0 in {N(0, I), p_meta (frozen)}, a drift MLP (|mu| <= 1) and a
  diagonal diffusion MLP of t are trained with ELBO_IS (Hutchinson divergence) on one stored
  bank of 75 base paths, T = 0.1, 40 steps; test bits/dim = -ELBO_IS / (d ln 2) on held-out
  samples with a fresh bank of 75 paths and 50 steps (exact divergence).
- Distances: W2 from N(0, I) in closed form, sqrt(|m|^2 + d (s - 1)^2); W2 from p_meta by
  optimal assignment between equal-size samples.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float
from scipy.optimize import linear_sum_assignment

from adjoint_lab.parabolic import generative
from experiments.report import Report

NAME = "parabolic_figure3"
T = 0.1
PROFILES = {
    # For the tests: seconds.
    "quick": dict(
        flow=dict(n_couplings=2, width=16, depth=1, steps=50),
        test_centres=[2.0, 12.0],
        n_train=64,
        n_test=64,
        n_paths=8,
        train_steps=10,
        test_steps=10,
        task=dict(steps=5, batch=8, width=8, depth=1),
        w2_samples=64,
    ),
    # ~10 min on a shared 2-core CPU: the paper's 75 paths, T = 0.1, 40/50 steps.
    "cpu": dict(
        flow=dict(n_couplings=6, width=64, depth=2, steps=2000),
        test_centres=[1.0, 4.0, 8.0, 12.0, 16.0, 20.0],
        n_train=200,
        n_test=500,
        n_paths=75,
        train_steps=40,
        test_steps=50,
        task=dict(steps=300, batch=16, width=32, depth=2),
        w2_samples=1000,
    ),
}
D = 2
PAPER = (
    "2-d, read from the paper's Fig. 3 (W≈5-10 / ≈130 / ≈230): N(0, I) start ≈3-7 / ≈115-125 / "
    "≈200-207 bits/dim; p_meta start ≈3.7 / ≈16 / ≈18.6. Claim: p_meta beats the "
    "standard-Gaussian start, whose bits/dim grows roughly linearly in W while p_meta's "
    "saturates."
)


def meta_tasks(key) -> tuple[np.ndarray, np.ndarray]:
    """The 10 meta-training Gaussians: centres c (means c (1, 1)) and standard deviations."""
    centres = np.linspace(0.0, 10.0, 10)
    stds = np.asarray(jax.random.uniform(key, (10,), minval=0.5, maxval=1.5))
    return centres, stds


def gaussian_samples(key, centre: float, std: float, n: int) -> Float[Array, "n 2"]:
    return centre + std * jax.random.normal(key, (n, D))


def w2_empirical(a: np.ndarray, b: np.ndarray) -> float:
    """W2 between two equal-size empirical measures (exact optimal assignment)."""
    cost = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    return float(np.sqrt(cost[rows, cols].mean()))


@eqx.filter_jit
def test_elbo(task, log_p0, x, increments) -> Float[Array, " m"]:
    # Exact divergence at test time: d = 2, and it removes the probe noise from the metric.
    return generative.elbo_is(task.drift, task.diffusion, log_p0, x, increments, T, None)


def run_task(profile, key, centre, start, log_p0, train_bank, test_bank):
    k_train, k_test, k_fit = jax.random.split(key, 3)
    train = gaussian_samples(k_train, centre, 1.0, profile["n_train"])
    test = gaussian_samples(k_test, centre, 1.0, profile["n_test"])
    t0 = time.perf_counter()
    task, losses = generative.train_generative_task(
        k_fit, train, log_p0, train_bank, T, **profile["task"]
    )
    elbo = jax.block_until_ready(test_elbo(task, log_p0, test, test_bank))
    seconds = time.perf_counter() - t0
    bpd = float(generative.bits_per_dim(elbo.mean(), D))
    # The start law alone (no SDE): how much the learned dynamics add.
    start_bpd = float(generative.bits_per_dim(jax.vmap(log_p0)(test).mean(), D))
    sigma = np.asarray(jax.vmap(task.diffusion)(jnp.linspace(0, T, 5))).mean()
    return dict(
        start=start,
        bpd=bpd,
        start_bpd=start_bpd,
        loss_first=float(losses[: max(1, len(losses) // 10)].mean()),
        loss_last=float(losses[-max(1, len(losses) // 10) :].mean()),
        sigma=float(sigma),
        seconds=seconds,
    )


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile]
    key = jax.random.PRNGKey(0)
    k_meta, k_pool, k_flow, k_banks, k_tasks, k_w2 = jax.random.split(key, 6)
    command = f"python -m experiments.parabolic_figure3 --profile {args.profile}"
    report = Report(
        NAME,
        "Parabolic base models: Figure 3 (meta-learned base distribution, 2-d)",
        command,
        out=args.out,
    )

    # p_meta: MLE on the pooled meta-training samples.
    centres, stds = meta_tasks(k_meta)
    pool_keys = jax.random.split(k_pool, len(centres))
    pooled = jnp.concatenate(
        [gaussian_samples(k, c, s, 60) for k, c, s in zip(pool_keys, centres, stds, strict=True)]
    )
    t0 = time.perf_counter()
    flow, flow_losses = generative.fit_meta_distribution(k_flow, pooled, **profile["flow"])
    flow_seconds = time.perf_counter() - t0
    pooled_nll = float(-jnp.mean(jax.vmap(flow.log_prob)(pooled)))

    # One stored base bank for training (reused by every task and both starts), one for test.
    k_train_bank, k_test_bank = jax.random.split(k_banks)
    n = profile["n_paths"]
    train_bank = jnp.sqrt(T / profile["train_steps"]) * jax.random.normal(
        k_train_bank, (n, profile["train_steps"], D)
    )
    test_bank = jnp.sqrt(T / profile["test_steps"]) * jax.random.normal(
        k_test_bank, (n, profile["test_steps"], D)
    )
    starts = {"N(0, I)": generative.standard_normal_log_prob, "p_meta": flow.log_prob}
    optimal = 0.5 * math.log2(2 * math.pi * math.e)  # a unit-variance Gaussian target

    rows, records = [], []
    k_meta_samples = jax.random.fold_in(k_w2, 0)
    meta_samples = np.asarray(flow.sample(k_meta_samples, profile["w2_samples"]))
    for i, centre in enumerate(profile["test_centres"]):
        k_task = jax.random.fold_in(k_tasks, i)
        target = np.asarray(
            gaussian_samples(jax.random.fold_in(k_w2, i + 1), centre, 1.0, profile["w2_samples"])
        )
        w2_gauss = math.sqrt(D * centre**2)
        w2_meta = w2_empirical(meta_samples, target)
        result = {}
        for start, log_p0 in starts.items():
            # Same data, same base bank and same initial weights for both starts.
            result[start] = run_task(profile, k_task, centre, start, log_p0, train_bank, test_bank)
            records.append(dict(centre=centre, w2_gauss=w2_gauss, w2_meta=w2_meta, **result[start]))
        g, m = result["N(0, I)"], result["p_meta"]
        rows.append(
            [
                f"({centre:g}, {centre:g})",
                w2_gauss,
                w2_meta,
                g["bpd"],
                m["bpd"],
                g["start_bpd"],
                m["start_bpd"],
                g["seconds"] + m["seconds"],
            ]
        )

    report.text(
        f"d = 2, T = {T}; p_meta: RealNVP ({profile['flow']['n_couplings']} couplings, width "
        f"{profile['flow']['width']}), fitted on {len(pooled)} pooled samples of 10 Gaussians "
        f"N(c(1,1), s^2 I), c on [0, 10], s ~ U[0.5, 1.5], in {flow_seconds:.0f} s (NLL "
        f"{float(flow_losses[0]):.3g} -> {pooled_nll:.3g} nats/sample). Per task: "
        f"{profile['n_train']} training samples, drift MLP width {profile['task']['width']} "
        f"depth {profile['task']['depth']} (tanh-bounded, |mu| <= 1) + diffusion MLP of t, "
        f"{profile['task']['steps']} AdamW steps (lr 8e-4, batch {profile['task']['batch']}) "
        f"of ELBO_IS with a Hutchinson divergence on one stored bank of {n} base paths x "
        f"{profile['train_steps']} steps; test bits/dim on {profile['n_test']} held-out "
        f"samples, {n} fresh paths x {profile['test_steps']} steps, exact divergence. Optimal "
        f"bits/dim for a unit-variance target: {optimal:.3f}. 'start only' = "
        "-E log p0(x) / (d ln 2), the initial law with no dynamics."
    )
    report.section("Bits/dim against Wasserstein distance (ours)")
    report.table(
        [
            "task mean",
            "W2 from N(0,I)",
            "W2 from p_meta",
            "bits/dim, N(0,I) start",
            "bits/dim, p_meta start",
            "start only, N(0,I)",
            "start only, p_meta",
            "train+test s",
        ],
        rows,
        key="tasks",
    )
    report.data["records"] = records
    wins = sum(r[4] < r[3] for r in rows)
    report.section("Paper's claim beside ours")
    report.table(
        ["", "claim"],
        [
            ["paper", PAPER],
            [
                "ours",
                f"p_meta start lower bits/dim on {wins} of {len(rows)} tasks; N(0,I) start "
                f"{rows[0][3]:.3g} -> {rows[-1][3]:.3g}, p_meta start {rows[0][4]:.3g} -> "
                f"{rows[-1][4]:.3g} bits/dim from the nearest to the farthest task.",
            ],
        ],
        key="claim",
    )
    report.text(
        "Reading: compare each start's bits/dim with its 'start only' column. With T = 0.1 "
        "and |mu| <= 1 the learned dynamics move mass by at most ~0.1 per coordinate, so "
        "(as in the paper) the metric mostly measures how close the initial law already is "
        "to the target. p_meta wins wherever its support covers the task; a task beyond the "
        "meta-training range (c > 10) meets p_meta's light tails, and its bits/dim grows "
        "with the distance as the N(0, I) start's does, rather than saturating as in the "
        "paper's Figure 3."
    )
    report.text(
        "The paper's x-axis is 'Wass distance' between the initial and target laws (2-Wasserstein, "
        "squared or not is unstated); we give W2 (not squared) from both starts. The 100-d panel "
        "and the p_meta + mu_meta variant are not run."
    )
    report.data["flow"] = dict(
        seconds=flow_seconds, nll_first=float(flow_losses[0]), nll_pooled=pooled_nll
    )
    report.data["optimal_bits_per_dim"] = optimal

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    arr = np.array([r[1:5] for r in rows], dtype=float)
    for ax, col, label in ((axes[0], 1, "W2 from p_meta"), (axes[1], 0, "W2 from N(0, I)")):
        order = np.argsort(arr[:, col])  # W2 from p_meta is not monotone in the task mean
        ax.plot(arr[order, col], arr[order, 2], "o-", label="N(0, I) start")
        ax.plot(arr[order, col], arr[order, 3], "s-", label="p_meta start")
        ax.axhline(optimal, color="k", ls=":", label="optimal")
        ax.set_xlabel(label)
        ax.set_ylabel("test bits/dim")
        ax.set_yscale("log")
        ax.legend()
    axes[2].scatter(*meta_samples.T, s=3, alpha=0.4, label="p_meta samples")
    cs = np.array(profile["test_centres"])
    axes[2].scatter(cs, cs, c="r", marker="x", label="test task means")
    axes[2].set_aspect("equal")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    report.figure(fig, f"{NAME}.png", "bits/dim vs W2 (2-d); p_meta and the test tasks")
    plt.close(fig)
    return report.write()


if __name__ == "__main__":
    main()
