"""The `cnode_cnf` experiment: a continuous normalising flow on two circles, C-NODE or NODE.

The flow dz/ds = f(z) carries the data to a standard normal at s = `horizon`, with the exact
trace of df/dz for the density (`adjoint_lab.cnode.flows`). Each step fits fresh samples
by maximum likelihood; evaluation reports the held-out negative log-likelihood at a tight
tolerance, and the run directory gets the learned density beside the data (`density.png`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..config.build import build_integrator
from ..config.errors import (
    ConfigError,
    require,
    require_at_least,
    require_one_of,
    require_positive,
)
from ..config.schema import ExperimentConfig
from ..core.ode import Integrator
from ..train.task import Task
from . import data as synthetic
from ._params import count_parameters
from .flows import CNODEVelocity, NODEVelocity, flow_integrator, log_likelihood

__all__ = ["CNF_SCHEMAS", "CNFModelConfig", "TwoCirclesConfig", "build_cnf"]

VELOCITIES = ("cnode", "node")


@dataclass(frozen=True)
class CNFModelConfig:
    """The flow's velocity: `cnode` (T(z) a(z), k directions) or `node` (an MLP). Null widths
    take the authors' CNF sizes (C-NODE 2,136 parameters, NODE 5,034)."""

    velocity: str = "cnode"
    k: int = 8
    path_width: int = 16
    width: int | None = None
    horizon: float = 1.0

    def validate(self) -> None:
        require_one_of("velocity", self.velocity, VELOCITIES)
        require_at_least(self, 1, "k", "path_width")
        width_ok = self.width is None or self.width >= 1
        require(width_ok, "width", self.width, "must be >= 1, or null for the authors' size")
        require_positive(self, "horizon")


@dataclass(frozen=True)
class TwoCirclesConfig:
    """Two noisy concentric circles (`adjoint_lab.cnode.data.two_circles`)."""

    noise: float = 0.05
    factor: float = 0.5
    test_size: int = 4096
    eval_rtol: float = 1e-5  # tolerance of the reported held-out likelihood
    grid: int = 60  # density plot resolution

    def validate(self) -> None:
        require(0 < self.factor < 1, "factor", self.factor, "the inner radius must be in (0, 1)")
        require_at_least(self, 0, "noise")
        require_at_least(self, 2, "test_size", "grid")
        require_positive(self, "eval_rtol")


CNF_SCHEMAS: dict[tuple[str, str], type] = {
    ("model", "cnf"): CNFModelConfig,
    ("data", "two_circles"): TwoCirclesConfig,
}


def _velocity(model: CNFModelConfig, key: jax.Array) -> eqx.Module:
    if model.velocity == "cnode":
        width = 32 if model.width is None else model.width
        return CNODEVelocity(k=model.k, path_width=model.path_width, width=width, key=key)
    return NODEVelocity(width=68 if model.width is None else model.width, key=key)


def build_cnf(config: ExperimentConfig, integrator: Integrator | None = None) -> Task:
    """The flow task of `config` (`task: cnode_cnf`).

    **Arguments:**

    - `config`: the experiment config.
    - `integrator`: the training solve; `None` builds it from the config's `solver` and
        `gradient` sections, with dt0 = horizon / 10.

    **Returns:**

    The `adjoint_lab.train.Task`.
    """
    model: CNFModelConfig = config.model
    data: TwoCirclesConfig = config.data
    if not isinstance(model, CNFModelConfig) or not isinstance(data, TwoCirclesConfig):
        raise ConfigError(
            "model", type(model).__name__, "cnode_cnf takes model=cnf data=two_circles"
        )
    if integrator is None:
        integrator = build_integrator(config.solver, config.gradient)
    # A flow's first step scales with its horizon S, whatever `solver.dt0` says.
    integrator = replace(integrator, dt0=0.1 * model.horizon)
    _, static = eqx.partition(_velocity(model, jax.random.PRNGKey(0)), eqx.is_inexact_array)
    batch_size = config.train.batch_size

    def sample(n: int, seed: int) -> np.ndarray:
        return synthetic.two_circles(n, noise=data.noise, factor=data.factor, seed=seed)

    def init(key):
        return eqx.partition(_velocity(model, key), eqx.is_inexact_array)[0]

    def batch(step: int):
        return sample(batch_size, seed=config.seed * 1_000_003 + step + 1)

    def loss(params, x, key):
        velocity = eqx.combine(params, static)
        log_p, nfe = log_likelihood(velocity, x, horizon=model.horizon, integrator=integrator)
        return -jnp.mean(log_p), {"nfe": nfe}

    tight = flow_integrator(
        diffrax.PIDController(rtol=data.eval_rtol, atol=data.eval_rtol), horizon=model.horizon
    )

    @eqx.filter_jit
    def log_density(params, x):
        velocity = eqx.combine(params, static)
        return log_likelihood(velocity, x, horizon=model.horizon, integrator=tight)

    test = jnp.asarray(sample(data.test_size, seed=2**31 - 1))  # never a training seed

    def evaluate(params):
        log_p, nfe = log_density(params, test)
        return {"test_nll": float(-jnp.mean(log_p)), "nfe": int(nfe)}

    def report(params, run_dir: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        lim = 1.6
        axis = np.linspace(-lim, lim, data.grid)
        grid = np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2).astype(test.dtype)
        density = np.exp(np.asarray(log_density(params, jnp.asarray(grid))[0]))
        fig, (left, right) = plt.subplots(1, 2, figsize=(8, 4))
        points = np.asarray(test[:2000])
        left.scatter(points[:, 0], points[:, 1], s=1, color="k")
        right.imshow(
            density.reshape(data.grid, data.grid), origin="lower",
            extent=(-lim, lim, -lim, lim), cmap="viridis",
        )  # fmt: skip
        left.set(title="held-out samples", xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal")
        parameters = count_parameters(eqx.combine(params, static))
        right.set(title=f"{model.velocity} flow ({parameters} parameters): density")
        fig.tight_layout()
        fig.savefig(run_dir / "density.png", dpi=120)
        plt.close(fig)

    return Task(
        name=f"cnode_cnf[{model.velocity}]",
        init=init,
        loss=loss,
        batch=batch,
        batch_size=batch_size,
        evaluate=evaluate,
        report=report,
    )
