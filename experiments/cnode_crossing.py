"""Crossing trajectories: C-NODE maps ±1 to ∓1, a NODE cannot.

    python -m experiments.cnode_crossing [--profile quick|cpu] [--out DIR]

Left: the exact construction a(s, z) = -2z, T = 1 (U(s) = z (1 - 2s)) through
`characteristic_flow`'s field, for several starting points: the trajectories cross at s = 1/2.
Right: a C-NODE (k = 1) and a NODE, each trained on -1 -> +1, +1 -> -1 with the final state
itself as output. The time-1 map of an ODE on the line is increasing, so a NODE's mean
squared error is at least 1 (both points sent to 0); the C-NODE drives it towards 0.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

from adjoint_lab.cnode import CNODE, NODE, BatchedField, CharacteristicField, Integrator, data
from adjoint_lab.config import OptimConfig
from adjoint_lab.core import CheckpointedBackprop, solve
from adjoint_lab.train import TrainState, make_optimizer, train_step, value_and_grad_of
from experiments import cnode_common as common
from experiments.report import Report

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

NAME = "cnode_crossing"
PROFILES = {"quick": {"steps": 120}, "cpu": {"steps": 300}}
INTEGRATOR = Integrator(
    solver=diffrax.Tsit5(),
    controller=diffrax.PIDController(rtol=1e-5, atol=1e-6),
    dt0=0.1,
    gradient=CheckpointedBackprop(max_steps=256),
)
S = np.linspace(0.0, 1.0, 101)


def exact_trajectories(starts: np.ndarray) -> np.ndarray:
    """U(s) on `S` for a(s, z) = -2z, T = 1, solved numerically: `[len(S), len(starts)]`."""
    field = BatchedField(CharacteristicField(lambda s, z: -2.0 * z, lambda u: u[:, None] * 0 + 1))
    z = jnp.asarray(starts, jnp.float32)[:, None]
    sol = solve(
        field,
        0.0,
        1.0,
        z,
        z,
        solver=INTEGRATOR.solver,
        controller=diffrax.PIDController(rtol=1e-7, atol=1e-9),
        dt0=0.1,
        ts=jnp.asarray(S),
    )
    return np.asarray(sol.ys[..., 0])


def train(model: eqx.Module, steps: int) -> tuple[eqx.Module, list[float]]:
    """Adam (lr 1e-2, warm-up then cosine) on the mean squared error of the two points."""
    inputs, targets = data.crossing_map()
    params, static = eqx.partition(model, eqx.is_inexact_array)
    config = OptimConfig(name="adam", lr=1e-2, schedule="warmup_cosine", warmup_steps=10)
    optimizer = make_optimizer(config, steps)

    def loss(params, batch, key):
        x, y = batch
        return jnp.mean((eqx.combine(params, static)(x) - y) ** 2), {}

    step = jax.jit(train_step(value_and_grad_of(loss), optimizer))
    state, key, losses = TrainState.create(params, optimizer), jax.random.PRNGKey(0), []
    for _ in range(steps):
        state, value, _ = step(state, (inputs, targets), key)
        losses.append(float(value))
    return eqx.combine(state.params, static), losses


def trajectories(model: eqx.Module, starts: np.ndarray) -> np.ndarray:
    """The model's U(s) on `S` from each start (the whole set is one solve)."""
    x = jnp.asarray(starts, jnp.float32)[:, None]
    return np.asarray(model.trajectory(x, jnp.asarray(S)))[..., 0]


def build_models(key: jax.Array) -> dict[str, eqx.Module]:
    """The C-NODE (k = 1) and NODE of `experiment=cnode_crossing` (width 16, no head)."""
    k1, k2 = jax.random.split(key)
    return {
        "C-NODE": CNODE((1,), None, width=16, k=1, path_width=16, integrator=INTEGRATOR, key=k1),
        "NODE": NODE((1,), None, width=16, integrator=INTEGRATOR, key=k2),
    }


def main(argv: Sequence[str] | None = None) -> Path:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = common.base_parser(__doc__.splitlines()[0], PROFILES).parse_args(argv)
    steps = PROFILES[args.profile]["steps"]
    report = Report(
        NAME, "Crossing trajectories: C-NODE vs NODE", common.command(NAME, argv), out=args.out
    )
    starts = np.linspace(-1.0, 1.0, 9)
    exact = exact_trajectories(starts)
    inputs, targets = data.crossing_map()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharey=True)
    for i, z in enumerate(starts):
        axes[0].plot(S, exact[:, i], color=plt.cm.coolwarm((z + 1) / 2))
    axes[0].set(xlabel="s", ylabel="U(s)", title="a(s, z) = -2z, T = 1 (exact construction)")

    rows, raw = [], {}
    models = build_models(jax.random.PRNGKey(0))
    for axis, (name, model) in zip(axes[1:], models.items(), strict=True):
        trained, losses = train(model, steps)
        paths = trajectories(trained, np.array([-1.0, 1.0]))
        fan = trajectories(trained, starts)
        mse = float(np.mean((paths[-1] - targets[:, 0]) ** 2))
        for i, z in enumerate(starts):
            axis.plot(S, fan[:, i], color=plt.cm.coolwarm((z + 1) / 2), lw=0.8, alpha=0.5)
        for j in range(2):
            axis.plot(S, paths[:, j], lw=2.5, label=f"U(0) = {inputs[j, 0]:+g}")
        axis.scatter([1.0, 1.0], targets[:, 0], color="k", marker="x", zorder=3, label="targets")
        axis.set(xlabel="s", title=f"trained {name}: MSE {mse:.2g}")
        axis.legend(loc="lower left", fontsize=8)
        rows.append([name, steps, mse, float(paths[-1, 0]), float(paths[-1, 1])])
        raw[name] = {"losses": losses, "trajectories_pm1": paths.T, "mse": mse}
    fig.tight_layout()

    report.text(
        f"Profile `{args.profile}`: {steps} Adam steps (lr 1e-2), Tsit5 rtol 1e-5 / atol 1e-6, "
        "width 16, k = 1, no head (the output is U(1)). A NODE's time-1 map on the line is "
        "increasing, so its MSE on this task is at least 1."
    )
    report.table(["model", "steps", "MSE", "U(1) from -1", "U(1) from +1"], rows, key="trained")
    max_error = float(np.max(np.abs(exact - starts[None] * (1 - 2 * S[:, None]))))
    report.text(
        f"Exact construction: max |U(s) - z (1 - 2s)| over the 9 starts and 101 times = "
        f"{max_error:.2e} (solver tolerance 1e-7)."
    )
    report.data["exact_max_error"] = max_error
    report.data["trained_runs"] = raw
    report.figure(fig, f"{NAME}.png", "crossing trajectories")
    plt.close(fig)
    return report.write()


if __name__ == "__main__":
    print(main())
