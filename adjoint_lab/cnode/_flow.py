"""`characteristic_flow`: the C-NODE map z -> U(1) for given direction and Jacobian functions."""

from __future__ import annotations

from collections.abc import Callable

import diffrax
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Real

from ..core.gradients import CheckpointedBackprop
from ..core.ode import Integrator
from ._fields import CharacteristicField

__all__ = ["characteristic_flow"]

# Tight by default: the flow is a building block, checked against closed forms.
_INTEGRATOR = Integrator(
    solver=diffrax.Tsit5(),
    controller=diffrax.PIDController(rtol=1e-6, atol=1e-8),
    dt0=0.1,
    gradient=CheckpointedBackprop(max_steps=1024),
)


def characteristic_flow(
    direction: Callable[[Real[Array, ""], Float[Array, " n"]], Float[Array, " k"]],
    jacobian: Callable[[Float[Array, " n"]], Float[Array, "n k"]],
    z: Float[ArrayLike, " n"],
    *,
    integrator: Integrator = _INTEGRATOR,
) -> Float[Array, " n"]:
    """Integrate dU/ds = jacobian(U) @ direction(s, z) from s = 0 to s = 1 with U(0) = z.

    This is C-NODE's latent map (Xu et al., ICLR 2023): U(s) = u(x(s)) follows the
    characteristic curve x(s) of a first-order PDE whose solution u has Jacobian
    `jacobian(u)` along the k characteristic coordinates, moving with velocity
    dx/ds = `direction(s, z)`. Because the velocity depends on the starting point z,
    trajectories of different inputs may cross, which no ODE in U alone allows: with
    n = k = 1, `direction(s, z) = -2 z` and `jacobian(u) = [[1]]`, the map sends z to -z.

    The solve goes through `integrator` (an `adjoint_lab.core.Integrator`). Works under
    `jax.jit`, `jax.vmap` (over `z`) and `jax.grad` (with respect to `z` and, for gradient
    methods other than `BacksolveAdjoint`, arrays the functions close over; with
    `BacksolveAdjoint`, pass equinox modules, whose arrays are differentiated).

    **Arguments:**

    - `direction`: `direction(s, z) -> [k]`, the characteristic velocity a(s, z).
    - `jacobian`: `jacobian(u) -> [n, k]`, the learned Jacobian T(u).
    - `z`: the input, shape `[n]`; also the initial state U(0).
    - `integrator`: an `adjoint_lab.core.Integrator`; default Tsit5 with
        `diffrax.PIDController(rtol=1e-6, atol=1e-8)`, dt0 = 0.1 and
        `CheckpointedBackprop(max_steps=1024)`.

    **Returns:**

    U(1), shape `[n]`.

    **Raises:**

    `ValueError` at trace time if `z` is not a vector or the two functions return the wrong
    shapes; the errors of `adjoint_lab.core.solve` if the solve fails.
    """
    z = jnp.asarray(z)
    if z.ndim != 1:
        raise ValueError(
            f"`characteristic_flow(z=...)`: `z` must be a vector of shape [n]; got shape "
            f"{z.shape}. For a batch, use `jax.vmap(lambda z: characteristic_flow(direction, "
            "jacobian, z))(zs)`; for images, flatten them or use `adjoint_lab.cnode.CNODE`."
        )
    if not jnp.issubdtype(z.dtype, jnp.inexact):
        z = z.astype(jnp.result_type(float))
    (n,) = z.shape
    a = jax.eval_shape(direction, jnp.zeros((), z.dtype), z)
    if getattr(a, "ndim", None) != 1:
        raise ValueError(
            f"`characteristic_flow(direction=...)`: `direction(s, z)` must return a vector "
            f"of shape [k] (the k characteristic velocities); got {_shape(a)} for z of shape "
            f"({n},)."
        )
    (k,) = a.shape
    t = jax.eval_shape(jacobian, z)
    if getattr(t, "shape", None) != (n, k):
        raise ValueError(
            f"`characteristic_flow(jacobian=...)`: `jacobian(u)` must return an [n, k] = "
            f"[{n}, {k}] matrix (n = len(z), k = len(direction(s, z))); got {_shape(t)}."
        )
    field = CharacteristicField(direction, jacobian)
    if not isinstance(integrator, Integrator):
        raise TypeError(
            f"`characteristic_flow(integrator={integrator!r})`: `integrator` must be an "
            "`adjoint_lab.core.Integrator(solver, controller, dt0, gradient)`."
        )
    return integrator.solve(field, 0.0, 1.0, z, z).ys[-1]  # pyright: ignore[reportOptionalSubscript]


def _shape(x: object) -> str:
    shape = getattr(x, "shape", None)
    return f"shape {shape}" if shape is not None else f"a {type(x).__name__}"
