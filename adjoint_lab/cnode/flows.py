"""Continuous normalizing flows with C-NODE and NODE velocities (exact trace, 2-D toys).

A flow dz/ds = f(z), z(0) = x, s in [0, S], gives the density of x through the change of
variables along the trajectory: log p(x) = log N(z(S); 0, I) + int_0^S tr(df/dz(z(s))) ds.
In low dimension the trace is exact (the full Jacobian by forward mode). The C-NODE velocity
is f(z) = T(z) a(z) with a: R^n -> R^k and T: R^n -> R^{n x k}; here a depends on the current
state (as in the authors' `cnode_cnf.py`), so the field is autonomous and the map invertible.
"""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ..core.gradients import AbstractGradientMethod, CheckpointedBackprop
from ..core.ode import Integrator

__all__ = ["CNODEVelocity", "NODEVelocity", "flow_integrator", "log_likelihood"]

_PID = diffrax.PIDController(rtol=1e-5, atol=1e-5)
_CHECKPOINTED = CheckpointedBackprop(max_steps=256)


def flow_integrator(
    controller: diffrax.AbstractStepSizeController = _PID,
    *,
    horizon: float = 1.0,
    solver: diffrax.AbstractSolver | None = None,
    gradient: AbstractGradientMethod | None = None,
) -> Integrator:
    """The solve of a flow over [0, `horizon`]: Tsit5, `controller`, dt0 = horizon / 10.

    **Arguments:**

    - `controller`: default `diffrax.PIDController(rtol=1e-5, atol=1e-5)`.
    - `horizon`: the flow time S, which sets the first step.
    - `solver`: default `diffrax.Tsit5()`.
    - `gradient`: default `CheckpointedBackprop(max_steps=256)`.

    **Returns:**

    An `adjoint_lab.core.Integrator` for `log_likelihood`.
    """
    return Integrator(
        solver=diffrax.Tsit5() if solver is None else solver,
        controller=controller,
        dt0=0.1 * horizon,
        gradient=_CHECKPOINTED if gradient is None else gradient,
    )


class CNODEVelocity(eqx.Module):
    """f(z) = T(z) a(z): T an MLP to an [n, k] matrix, a an MLP to a k-vector (tanh).

    Defaults are the authors' CNF sizes: a 2 -> 16 -> 16 -> 8, T 2 -> 32 -> 32 -> 16
    reshaped to 2 x 8 (2,136 parameters).
    """

    direction: eqx.nn.MLP
    jacobian: eqx.nn.MLP
    dim: int = eqx.field(static=True)
    k: int = eqx.field(static=True)

    def __init__(
        self,
        dim: int = 2,
        k: int = 8,
        *,
        path_width: int = 16,
        width: int = 32,
        key: PRNGKeyArray,
    ):
        k1, k2 = jax.random.split(key)
        self.direction = eqx.nn.MLP(dim, k, path_width, 2, activation=jnp.tanh, key=k1)
        self.jacobian = eqx.nn.MLP(dim, dim * k, width, 2, activation=jnp.tanh, key=k2)
        self.dim, self.k = dim, k

    def __call__(self, z: Float[Array, " n"]) -> Float[Array, " n"]:
        return self.jacobian(z).reshape(self.dim, self.k) @ self.direction(z)


class NODEVelocity(eqx.Module):
    """f(z) = MLP(z), tanh; default 2 -> 68 -> 68 -> 2 (the authors' NODE CNF, 5,034 params)."""

    net: eqx.nn.MLP

    def __init__(self, dim: int = 2, *, width: int = 68, key: PRNGKeyArray):
        self.net = eqx.nn.MLP(dim, dim, width, 2, activation=jnp.tanh, key=key)

    def __call__(self, z: Float[Array, " n"]) -> Float[Array, " n"]:
        return self.net(z)


class _Augmented(eqx.Module):
    # d(z, integral of the trace)/ds for a batch: the batch is one solve.
    velocity: eqx.Module

    def __call__(self, s, state, args):
        z, _ = state

        def one(z):
            return self.velocity(z), jnp.trace(jax.jacfwd(self.velocity)(z))  # pyright: ignore[reportArgumentType, reportCallIssue]

        return jax.vmap(one)(z)


def log_likelihood(
    velocity: eqx.Module,
    x: Float[Array, "batch n"],
    *,
    horizon: float = 1.0,
    integrator: Integrator | None = None,
) -> tuple[Float[Array, " batch"], Array]:
    """log p(x) under the flow of `velocity` to a standard normal at s = `horizon`.

    **Arguments:**

    - `velocity`: `f(z) -> dz/ds` for one point.
    - `x`: the data, `[batch, n]`.
    - `horizon`: S, the flow time.
    - `integrator`: the solve, an `adjoint_lab.core.Integrator`; default
        `flow_integrator(horizon=horizon)` (Tsit5 at rtol = atol = 1e-5).

    **Returns:**

    `(log_p [batch], nfe)`: the log-densities and the forward evaluations of the solve.
    """
    x = jnp.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"`log_likelihood(x=...)`: need a batch [batch, n]; got {x.shape}.")
    state0 = (x, jnp.zeros(x.shape[0], x.dtype))
    if integrator is None:
        integrator = flow_integrator(horizon=horizon)
    sol = integrator.solve(_Augmented(velocity), 0.0, horizon, state0)
    z, trace = sol.ys[0][-1], sol.ys[1][-1]  # pyright: ignore[reportOptionalSubscript]
    n = x.shape[1]
    log_base = -0.5 * jnp.sum(z**2, axis=1) - 0.5 * n * jnp.log(2 * jnp.pi)
    return log_base + trace, sol.stats["nfe"]
