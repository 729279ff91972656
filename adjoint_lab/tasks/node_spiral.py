"""The default experiment: learn the dynamics of a cubic spiral with a neural ODE.

The system is dy/dt = A y³ with A = [[-0.1, 2], [-2, -0.1]] (the classic neural-ODE
demonstration of Chen et al. 2018). Trajectories are solved once to tight tolerances; training
fits an MLP vector field on random windows of them, through the configured solver bundle
(`core.Integrator`). Small enough to train in well under a minute on a CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ..config.build import build_integrator
from ..config.errors import ConfigError
from ..config.schema import ExperimentConfig
from ..core.ode import Integrator
from ..train.task import Task

SPIRAL_MATRIX = np.array([[-0.1, 2.0], [-2.0, -0.1]])
ACTIVATIONS = {"tanh": jnp.tanh, "softplus": jax.nn.softplus, "relu": jax.nn.relu}


@dataclass(frozen=True)
class SpiralDataConfig:
    """Cubic-spiral trajectories: `n_times` points on [0, t1] from jittered initial states."""

    n_train: int = 64
    n_test: int = 8
    n_times: int = 101
    t1: float = 10.0
    # Training windows: this many consecutive points, starting at a random time.
    window: int = 10
    initial_spread: float = 0.5
    noise: float = 0.0

    def validate(self) -> None:
        for name in ("n_train", "n_test", "n_times"):
            if getattr(self, name) <= 0:
                raise ConfigError(name, getattr(self, name), "must be > 0")
        if self.t1 <= 0:
            raise ConfigError("t1", self.t1, "must be > 0")
        if not 2 <= self.window <= self.n_times:
            raise ConfigError("window", self.window, f"must be in [2, n_times={self.n_times}]")
        if self.initial_spread < 0 or self.noise < 0:
            raise ConfigError("noise", self.noise, "noise and initial_spread must be >= 0")


@dataclass(frozen=True)
class VectorFieldConfig:
    """An MLP vector field f(t, y) = MLP(y), `depth` hidden layers of `width` units."""

    width: int = 64
    depth: int = 2
    activation: str = "tanh"

    def validate(self) -> None:
        if self.width <= 0:
            raise ConfigError("width", self.width, "must be > 0")
        if self.depth < 0:
            raise ConfigError("depth", self.depth, "must be >= 0")
        if self.activation not in ACTIVATIONS:
            raise ConfigError("activation", self.activation, f"choose one of {list(ACTIVATIONS)}")


class MLPField(eqx.Module):
    """dy/dt = MLP(y): an autonomous neural vector field."""

    mlp: eqx.nn.MLP

    def __init__(self, dim: int, config: VectorFieldConfig, *, key: PRNGKeyArray):
        self.mlp = eqx.nn.MLP(
            dim,
            dim,
            config.width,
            config.depth,
            activation=ACTIVATIONS[config.activation],
            key=key,
        )

    def __call__(self, t: Float[Array, ""], y: Float[Array, " d"], args) -> Float[Array, " d"]:
        return self.mlp(y)


def spiral_field(t, y, args):
    return jnp.asarray(SPIRAL_MATRIX, y.dtype) @ y**3


def spiral_trajectories(
    config: SpiralDataConfig, sizes: Sequence[int], seeds: Sequence[int]
) -> list[Float[np.ndarray, "n t 2"]]:
    """Sets of reference trajectories (`sizes[i]` of them from `seeds[i]`), by SciPy's DOP853 at
    rtol = atol = 1e-10.

    The data comes from an integrator independent of the one being trained, in NumPy: a JAX
    solve would spend seconds tracing an adaptive loop at every start of a run, for a 2-D
    system that SciPy integrates in a fraction of that. All sets go through one solve.
    """
    from scipy.integrate import solve_ivp  # scipy is a dependency of jax

    rngs = [np.random.default_rng(seed) for seed in seeds]
    y0 = np.concatenate(
        [
            np.array([2.0, 0.0]) + config.initial_spread * rng.standard_normal((n, 2))
            for rng, n in zip(rngs, sizes, strict=True)
        ]
    )
    ts = np.linspace(0.0, config.t1, config.n_times)
    matrix = np.asarray(SPIRAL_MATRIX, np.float64)

    def field(t, flat):
        return (flat.reshape(-1, 2) ** 3 @ matrix.T).ravel()

    solution = solve_ivp(
        field, (0.0, config.t1), y0.ravel(), method="DOP853", t_eval=ts, rtol=1e-10, atol=1e-10
    )
    if not solution.success:
        raise RuntimeError(f"the reference spiral solve failed: {solution.message}")
    ys = solution.y.reshape(-1, 2, config.n_times).transpose(0, 2, 1)  # [n, t, 2]
    sets = np.split(ys, np.cumsum(sizes)[:-1])
    return [
        s + config.noise * rng.standard_normal(s.shape) for rng, s in zip(rngs, sets, strict=True)
    ]


def build(config: ExperimentConfig, integrator: Integrator | None = None) -> Task:
    """The spiral-fitting task.

    **Arguments:**

    - `config`: the experiment (`model` a `VectorFieldConfig`, `data` a `SpiralDataConfig`).
    - `integrator`: the solver bundle of every training and test solve; `None` builds it from
        the config's `solver` and `gradient` sections.

    **Returns:**

    A `train.Task`.
    """
    data: SpiralDataConfig = config.data
    if integrator is None:
        integrator = build_integrator(config.solver, config.gradient)
    ts = np.linspace(0.0, data.t1, data.n_times)
    train_ys, test_ys = spiral_trajectories(
        data, (data.n_train, data.n_test), (config.seed, config.seed + 10_000)
    )
    window_ts = jnp.asarray(ts[: data.window] - ts[0])
    _, static = eqx.partition(
        MLPField(2, config.model, key=jax.random.PRNGKey(0)), eqx.is_inexact_array
    )

    def init(key):
        params, _ = eqx.partition(MLPField(2, config.model, key=key), eqx.is_inexact_array)
        return params

    def trajectory(params, y0, times):
        field = eqx.combine(params, static)
        return integrator.solve(field, times[0], times[-1], y0, ts=times)

    def loss(params, batch, key):
        y0, target = batch
        sol = jax.vmap(lambda y: trajectory(params, y, window_ts))(y0)
        return jnp.mean((sol.ys - target) ** 2), {"nfe": jnp.mean(sol.stats["nfe"])}

    def batch(step):
        rng = np.random.default_rng([config.seed, step])
        which = rng.integers(0, data.n_train, config.train.batch_size)
        start = rng.integers(0, data.n_times - data.window + 1, config.train.batch_size)
        windows = np.stack(
            [train_ys[i, s : s + data.window] for i, s in zip(which, start, strict=True)]
        )
        return windows[:, 0], windows

    full_ts = jnp.asarray(ts)

    @jax.jit
    def test_predictions(params):
        return jax.vmap(lambda y: trajectory(params, y, full_ts).ys)(jnp.asarray(test_ys[:, 0]))

    def evaluate(params):
        predicted = test_predictions(params)
        return {"mse": float(jnp.mean((predicted - test_ys) ** 2))}

    def report(params, run_dir: Path):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        predicted = np.asarray(test_predictions(params))
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
        for i in range(min(4, data.n_test)):
            colour = f"C{i}"
            axes[0].plot(*test_ys[i].T, color=colour, lw=2, alpha=0.5)
            axes[0].plot(*predicted[i].T, color=colour, ls="--")
            axes[1].plot(ts, test_ys[i, :, 0], color=colour, lw=2, alpha=0.5)
            axes[1].plot(ts, predicted[i, :, 0], color=colour, ls="--")
        axes[0].set(title="phase plane: reference (solid) vs learned (dashed)", xlabel="y1")
        axes[0].set_ylabel("y2")
        axes[1].set(title="y1 over time", xlabel="t", ylabel="y1")
        fig.tight_layout()
        fig.savefig(run_dir / "trajectories.png", dpi=110)
        plt.close(fig)

    return Task(
        name="node_spiral",
        init=init,
        loss=loss,
        batch=batch,
        batch_size=config.train.batch_size,
        evaluate=evaluate,
        report=report,
    )
