"""`Integrator`: how a model integrates its latent dynamics over s in [0, 1]."""

from __future__ import annotations

from typing import Any

import diffrax
import equinox as eqx
from jaxtyping import PyTree

from ..core.gradients import AbstractGradientMethod, CheckpointedBackprop
from ..core.ode import Solution, VectorField, solve

__all__ = ["Integrator"]


class Integrator(eqx.Module):
    """The solver, step-size control and gradient method of a solve over s in [0, 1].

    Every model of `adjoint_lab.cnode` holds one, so `model(images)` needs no further
    arguments; every solve goes through `adjoint_lab.core.solve`. The fields are static (they
    hold no parameters), so `equinox.partition(model, equinox.is_inexact_array)` leaves them
    out of the parameters.

    **Arguments:**

    - `solver`: a `diffrax.AbstractSolver`. Default `diffrax.Tsit5()`.
    - `controller`: a `diffrax.AbstractStepSizeController`. Default
        `diffrax.PIDController(rtol=1e-3, atol=1e-3)`, the tolerance of the authors'
        adaptive (dopri5) runs. `diffrax.ConstantStepSize()` takes constant steps of `dt0`;
        with `diffrax.Euler()` and `dt0=1.0` that is the single Euler step (one residual
        block) of the authors' non-adaptive runs.
    - `dt0`: the (initial) step size, default 0.1.
    - `gradient`: an `adjoint_lab.core.AbstractGradientMethod`. Default
        `CheckpointedBackprop(max_steps=256)`.
    """

    solver: diffrax.AbstractSolver = eqx.field(static=True, default=diffrax.Tsit5())
    controller: diffrax.AbstractStepSizeController = eqx.field(
        static=True, default=diffrax.PIDController(rtol=1e-3, atol=1e-3)
    )
    dt0: float | None = eqx.field(static=True, default=0.1)
    gradient: AbstractGradientMethod = eqx.field(
        static=True, default=CheckpointedBackprop(max_steps=256)
    )

    def __call__(self, field: VectorField, y0: PyTree, args: Any = None) -> Solution:
        """Solve d(state)/ds = field(s, state, args) from s = 0 to s = 1.

        **Arguments:**

        - `field`: `field(s, y, args) -> dy/ds`.
        - `y0`: the state at s = 0.
        - `args`: passed to `field`.

        **Returns:**

        The `adjoint_lab.core.Solution`: `ys` has a leading axis of size 1 (s = 1), and
        `stats["nfe"]` counts the forward evaluations of `field`.
        """
        return solve(
            field,
            0.0,
            1.0,
            y0,
            args,
            solver=self.solver,
            controller=self.controller,
            dt0=self.dt0,
            gradient=self.gradient,
        )
