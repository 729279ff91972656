"""Gradient methods for ODE solves: how reverse-mode autodiff goes through `solve`.

Each method is a small final class under `AbstractGradientMethod`, whose one abstract method
turns it into the `diffrax.AbstractAdjoint` that runs the solve. Every method also carries the
step budget `max_steps` of the solve, because for the discretise-then-optimise methods the
memory of the backward pass is tied to it (see `CheckpointedBackprop` and `DirectBackprop`).
"""

from __future__ import annotations

import abc
import math
from typing import TypeGuard

import diffrax
import equinox as eqx

from .adjoints import (
    CheckpointedInterpolatingDiffraxAdjoint,
    GaussDiffraxAdjoint,
    InterpolatingDiffraxAdjoint,
    QuadratureDiffraxAdjoint,
    ReversibleDiffraxAdjoint,
)

__all__ = [
    "AbstractGradientMethod",
    "BacksolveAdjoint",
    "CheckpointedBackprop",
    "DirectBackprop",
    "GaussAdjoint",
    "InterpolatingAdjoint",
    "QuadratureAdjoint",
    "ReversibleAdjoint",
    "default_checkpoints",
]


def _is_int(x: object) -> TypeGuard[int]:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_max_steps(owner: str, max_steps: object) -> None:
    if not _is_int(max_steps) or max_steps < 1:
        raise ValueError(
            f"`{owner}(max_steps={max_steps!r})`: `max_steps` must be an int >= 1. "
            "It bounds the number of solver steps (accepted plus rejected); a solve that "
            "needs more steps fails with an error instead of returning a truncated solution."
        )


def _check_tolerance(cls: type, name: str, value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(
            f"`{cls.__name__}({name}={value!r})`: `{name}` must be a float > 0, or None to "
            "reuse the forward controller's value on the backward solve."
        )


def default_checkpoints(max_steps: int) -> int:
    """The number of checkpoints `CheckpointedBackprop(checkpoints=None)` uses.

    This is the rule of equinox's online-checkpointed while loop (which diffrax's
    `RecursiveCheckpointAdjoint` runs on): the smallest `c` with `max_steps < (c+1)(c+2)/2`,
    that is `floor(sqrt(2 max_steps + 1/4) - 3/2) + 1`, capped at `max_steps`. Below that
    bound the online scheme recomputes no more than offline treeverse would (Stumm and
    Walther 2010, eq. 2.2). It grows like `sqrt(2 max_steps)`, not like `log(max_steps)`
    as diffrax's docstring says: 5 for 16 steps, 22 for 256, 90 for 4096.

    **Arguments:**

    - `max_steps`: the step budget of the solve, an int >= 1.

    **Returns:**

    The number of stored solver states.
    """
    _check_max_steps("default_checkpoints", max_steps)
    if max_steps == 1:
        return 1
    checkpoints = math.floor(math.sqrt(2 * max_steps + 0.25) - 1.5) + 1
    return min(checkpoints, max_steps)


class AbstractGradientMethod(eqx.Module):
    """How `adjoint_lab.core.solve` is differentiated in reverse mode.

    Subclasses are final: they hold their options as (static) fields, validated at
    construction, and implement `to_diffrax`. Every method has a `max_steps` field, the step
    budget (accepted plus rejected steps) of the solve, because the memory of the backward
    pass of some methods depends on it.
    """

    max_steps: eqx.AbstractVar[int]

    @abc.abstractmethod
    def to_diffrax(self, controller: diffrax.AbstractStepSizeController) -> diffrax.AbstractAdjoint:
        """The diffrax adjoint that runs a solve with this gradient method.

        **Arguments:**

        - `controller`: the step-size controller of the forward solve. Methods that solve
            a second differential equation on the backward pass derive its controller
            from this one.

        **Returns:**

        A `diffrax.AbstractAdjoint`.
        """


class CheckpointedBackprop(AbstractGradientMethod):
    """Backpropagate through the solver's own operations, storing only some solver states.

    Exact gradients of the discrete solution ("discretise-then-optimise"). The forward pass
    stores `checkpoints` copies of the solver's loop state (y, FSAL stage, controller
    state, counters) and the backward pass recomputes the steps in between, with the
    online binomial checkpointing of diffrax's `RecursiveCheckpointAdjoint`. Memory is
    about `checkpoints` x (loop state) plus one step's residuals plus the saved outputs;
    fewer checkpoints mean more recomputation on the backward pass.

    **Arguments:**

    - `checkpoints`: the number of stored solver states, an int >= 1, or `None` for
        `default_checkpoints(max_steps)` (about `sqrt(2 max_steps)`: 90 for the default
        `max_steps=4096`). Values above `max_steps` behave as `max_steps`.
    - `max_steps`: the step budget of the solve. With `checkpoints=None` the memory of
        the backward pass grows with it even when the solve takes far fewer steps, so set
        it near the number of steps the solve needs.

    ??? cite "References"

        Stumm and Walther, "New Algorithms for Optimal Online Checkpointing", SIAM J. Sci.
        Comput. 32(2), 2010. Griewank, "Achieving logarithmic growth of temporal and
        spatial complexity in reverse automatic differentiation", Optim. Methods Softw.
        1(1), 1992.
    """

    checkpoints: int | None = eqx.field(default=None, static=True)
    max_steps: int = eqx.field(default=4096, static=True)

    def __check_init__(self):
        _check_max_steps("CheckpointedBackprop", self.max_steps)
        if self.checkpoints is not None and (not _is_int(self.checkpoints) or self.checkpoints < 1):
            raise ValueError(
                f"`CheckpointedBackprop(checkpoints={self.checkpoints!r})`: `checkpoints` "
                "must be an int >= 1 (the number of stored solver states), or None for "
                "the default of about sqrt(2 * max_steps) (here "
                f"{default_checkpoints(self.max_steps)})."
            )

    def to_diffrax(self, controller: diffrax.AbstractStepSizeController) -> diffrax.AbstractAdjoint:
        del controller
        return diffrax.RecursiveCheckpointAdjoint(checkpoints=self.checkpoints)


class DirectBackprop(AbstractGradientMethod):
    """Backpropagate through the solver's operations, with a loop bounded by `max_steps`.

    The same exact gradients as `CheckpointedBackprop`, from diffrax's `DirectAdjoint`:
    the solve runs as nested `lax.scan`s with `jax.checkpoint` whose length is `max_steps`
    rounded up to a power of 16, so memory and time grow with `max_steps` even when the
    solve takes fewer steps. It also supports forward-mode autodiff (`jax.jvp`), which is
    its one reason to exist; prefer `CheckpointedBackprop` otherwise.

    **Arguments:**

    - `max_steps`: the step budget of the solve (keep it small).
    """

    max_steps: int = eqx.field(default=4096, static=True)

    def __check_init__(self):
        _check_max_steps("DirectBackprop", self.max_steps)

    def to_diffrax(self, controller: diffrax.AbstractStepSizeController) -> diffrax.AbstractAdjoint:
        del controller
        return diffrax.DirectAdjoint()


class BacksolveAdjoint(AbstractGradientMethod):
    """The continuous adjoint method: solve the adjoint ODE backwards in time.

    "Optimise-then-discretise" (Chen et al. 2018), from diffrax's `BacksolveAdjoint`: the
    backward pass re-solves y together with the adjoint state and the parameter gradients
    from t1 back to t0, so memory does not grow with the number of steps. The gradients
    are those of the exact ODE solution, approximated to the tolerance of the backward
    solve, not the gradients of the discrete forward solution: expect errors of the order
    of `rtol`/`atol` (or of the discretisation error, for constant steps). Gradients are
    taken with respect to `y0`, `args` and the arrays inside the vector field (e.g. an
    equinox module's parameters), not arrays the vector field closes over.

    With constant forward steps the backward solve takes the same constant steps,
    backwards. With an adaptive forward controller (`diffrax.PIDController`, possibly
    inside `diffrax.ClipStepSizeController`) the backward solve uses a copy of it with
    `rtol`/`atol` replaced when given here, and, with `seminorm=True`, the norm replaced
    by `diffrax.adjoint_rms_seminorm`, which leaves the parameter-gradient channels out
    of the error estimate and typically saves backward steps (Kidger, Chen and Lyons
    2021). Errors of the backward solve (e.g. hitting `max_steps`) are raised.

    **Arguments:**

    - `seminorm`: use the adjoint seminorm on the backward solve (adaptive solves only).
    - `rtol`, `atol`: tolerances of the backward solve (adaptive solves only); `None`
        reuses the forward controller's.
    - `max_steps`: the step budget of the forward and of the backward solve.

    ??? cite "References"

        Chen, Rubanova, Bettencourt and Duvenaud, "Neural Ordinary Differential Equations",
        NeurIPS 2018. Kidger, Chen and Lyons, "'Hey, that's not an ODE': Faster ODE
        Adjoints via Seminorms", ICML 2021.
    """

    seminorm: bool = eqx.field(default=False, static=True)
    rtol: float | None = eqx.field(default=None, static=True)
    atol: float | None = eqx.field(default=None, static=True)
    max_steps: int = eqx.field(default=4096, static=True)

    def __check_init__(self):
        if not isinstance(self.seminorm, bool):
            raise ValueError(
                f"`BacksolveAdjoint(seminorm={self.seminorm!r})`: `seminorm` must be True "
                "(use diffrax.adjoint_rms_seminorm on the backward solve) or False."
            )
        _check_tolerance(BacksolveAdjoint, "rtol", self.rtol)
        _check_tolerance(BacksolveAdjoint, "atol", self.atol)
        _check_max_steps("BacksolveAdjoint", self.max_steps)

    def to_diffrax(self, controller: diffrax.AbstractStepSizeController) -> diffrax.AbstractAdjoint:
        changes = {}
        if self.rtol is not None:
            changes["rtol"] = self.rtol
        if self.atol is not None:
            changes["atol"] = self.atol
        if self.seminorm:
            changes["norm"] = diffrax.adjoint_rms_seminorm
        if not isinstance(controller, diffrax.AbstractAdaptiveStepSizeController):
            if changes:
                given = ", ".join(
                    f"{name}={getattr(self, name)!r}"
                    for name in ("seminorm", "rtol", "atol")
                    if getattr(self, name) not in (None, False)
                )
                raise ValueError(
                    f"`BacksolveAdjoint({given})` "
                    "sets the error control of the backward solve, but the forward solve "
                    f"uses `{type(controller).__name__}`, so the backward solve retraces "
                    "constant steps and has no error control. Either pass an adaptive "
                    "controller to `solve` (e.g. `controller=diffrax.PIDController(rtol=1e-6, "
                    "atol=1e-8)`), or leave `seminorm=False, rtol=None, atol=None`."
                )
            backward_controller = controller
        else:
            backward_controller = _replace_error_control(controller, changes)
        # `throw=True`: the forward solve runs with throw=False (`solve` raises its own,
        # more specific errors), which diffrax would otherwise pass to the backward solve.
        return diffrax.BacksolveAdjoint(stepsize_controller=backward_controller, throw=True)


def _replace_error_control(
    controller: diffrax.AbstractAdaptiveStepSizeController, changes: dict
) -> diffrax.AbstractAdaptiveStepSizeController:
    if not changes:
        return controller
    if isinstance(controller, diffrax.ClipStepSizeController):
        inner = _replace_error_control(controller.controller, changes)
        return eqx.tree_at(lambda c: c.controller, controller, inner)
    if isinstance(controller, diffrax.PIDController):
        names = sorted(changes)
        return eqx.tree_at(
            lambda c: [getattr(c, name) for name in names],
            controller,
            [changes[name] for name in names],
        )
    raise ValueError(
        f"`BacksolveAdjoint(seminorm=..., rtol=..., atol=...)` can only set the error "
        f"control of a `diffrax.PIDController` (or one inside a "
        f"`diffrax.ClipStepSizeController`), but the forward solve uses "
        f"`{type(controller).__name__}`. Use a PIDController, or leave "
        "`seminorm=False, rtol=None, atol=None` to reuse the forward controller as it is."
    )


# --------------------------------------------------------------------------------------
# Reversible and continuous adjoints written for adjoint_lab (see `adjoints.py`).


def _continuous_controller(
    owner: str,
    controller: diffrax.AbstractStepSizeController,
    rtol: float | None,
    atol: float | None,
) -> diffrax.AbstractStepSizeController:
    changes = {}
    if rtol is not None:
        changes["rtol"] = rtol
    if atol is not None:
        changes["atol"] = atol
    if not isinstance(controller, diffrax.AbstractAdaptiveStepSizeController):
        if changes:
            raise ValueError(
                f"`{owner}(rtol=..., atol=...)` sets the error control of the backward solve, "
                f"but the forward solve uses `{type(controller).__name__}`, so the backward "
                "solve takes constant steps of dt0 and has no error control. Pass an adaptive "
                "controller to `solve` (e.g. `diffrax.PIDController(rtol=1e-6, atol=1e-8)`), "
                "or leave `rtol=None, atol=None`."
            )
        if isinstance(controller, diffrax.StepTo):
            raise ValueError(
                f"`{owner}()` solves the adjoint equations on a grid of its own, which "
                "`diffrax.StepTo` cannot give; use `ConstantStepSize` (pass `dt0`) or an "
                "adaptive controller such as `diffrax.PIDController(rtol=1e-6, atol=1e-8)`."
            )
        return controller
    return _replace_error_control(controller, changes)


def _check_nodes(owner: str, nodes: object) -> None:
    if not _is_int(nodes) or not 1 <= nodes <= 16:
        raise ValueError(
            f"`{owner}(nodes={nodes!r})`: `nodes` is the number of Gauss-Legendre points per "
            "step, an int from 1 to 16 (3 integrates exactly to degree 5, enough for Tsit5)."
        )


class ReversibleAdjoint(AbstractGradientMethod):
    """Exact gradients of a reversible solve in O(1) memory: step backwards, one VJP per step.

    Needs an algebraically reversible solver, `Reversible(solver)` (any explicit Runge-Kutta
    solver, McCallum and Foster 2024) or `ReversibleHeun()` (Kidger et al. 2021). The forward
    pass stores no solver states; the backward pass rebuilds each state from the next one by
    the solver's closed-form inverse step and backpropagates through that step, so the
    gradient is that of the discrete solve (as `CheckpointedBackprop` would compute it, up to
    floating-point rounding of the reconstruction) while memory does not grow with the
    number of steps. Constant steps (`ConstantStepSize`, `StepTo`) store nothing per step; an
    adaptive solve stores the times of its accepted steps (one scalar per step of
    `max_steps`). `SaveAt(t0=..., t1=..., ts=...)` is supported; outputs between steps are
    the solver's linear interpolation. Gradients are with respect to `y0`, `args` and the
    arrays inside the vector field (not arrays it closes over).

    Reconstruction can amplify rounding errors on long or stiff solves; use float64 or a
    coupling < 1 (the default 0.999 of `Reversible`) if the gradient drifts.

    **Arguments:**

    - `max_steps`: the step budget of the solve.

    ??? cite "References"

        McCallum and Foster, "Efficient, Accurate and Stable Gradients for Neural ODEs",
        2024. Kidger, Foster, Li and Lyons, "Efficient and Accurate Gradients for Neural
        SDEs", NeurIPS 2021.
    """

    max_steps: int = eqx.field(default=4096, static=True)

    def __check_init__(self):
        _check_max_steps("ReversibleAdjoint", self.max_steps)

    def to_diffrax(self, controller: diffrax.AbstractStepSizeController) -> diffrax.AbstractAdjoint:
        del controller
        return ReversibleDiffraxAdjoint()


class InterpolatingAdjoint(AbstractGradientMethod):
    """The continuous adjoint, reading y(t) from the forward solve's dense interpolant.

    Like `BacksolveAdjoint` it solves the adjoint equations for the adjoint state and the
    parameter gradient (|y| + |theta| channels) backwards from t1 to t0, but instead of
    re-solving y backwards (unstable when the forward flow contracts, e.g. stiff or
    dissipative problems) it evaluates the forward solver's own interpolant, stored on the
    forward pass: memory grows with `max_steps` (one interpolation record per step) unless
    `checkpoints` is given. The gradient approximates the exact ODE gradient to the
    tolerance of the backward solve (SciMLSensitivity's `InterpolatingAdjoint`).

    The backward solve uses the forward solver and controller (constant steps of dt0, or a
    copy of the adaptive controller with `rtol`/`atol` replaced when given).

    **Arguments:**

    - `checkpoints`: `None` stores the whole interpolant (memory ~ `max_steps` records of
        the solver's dense output). An int k stores only the solver state every
        ceil(max_steps / k) step attempts; the backward pass re-solves each segment
        forwards from its state to rebuild that segment's interpolant (the same steps as
        the forward pass), then integrates the adjoint over it. Memory ~ k states plus
        max_steps / k records, for one more forward solve of compute; k ~ sqrt(max_steps)
        balances the two.
    - `rtol`, `atol`: tolerances of the backward solve (adaptive solves only).
    - `max_steps`: the step budget of the forward and of the backward solve.

    ??? cite "References"

        Rackauckas et al., "Universal Differential Equations for Scientific Machine
        Learning", 2020 (SciMLSensitivity.jl's adjoint methods).
    """

    checkpoints: int | None = eqx.field(default=None, static=True)
    rtol: float | None = eqx.field(default=None, static=True)
    atol: float | None = eqx.field(default=None, static=True)
    max_steps: int = eqx.field(default=4096, static=True)

    def __check_init__(self):
        k = self.checkpoints
        if k is not None and (not _is_int(k) or k < 1):
            raise ValueError(
                f"`InterpolatingAdjoint(checkpoints={k!r})`: `checkpoints` must be an int >= 1 "
                "(the number of stored solver states; the backward pass re-solves each of "
                "the segments between them to rebuild its interpolant), or None to store the "
                "whole dense interpolant (config: `gradient.checkpoints`)."
            )
        _check_tolerance(InterpolatingAdjoint, "rtol", self.rtol)
        _check_tolerance(InterpolatingAdjoint, "atol", self.atol)
        _check_max_steps("InterpolatingAdjoint", self.max_steps)

    def to_diffrax(self, controller: diffrax.AbstractStepSizeController) -> diffrax.AbstractAdjoint:
        backward = _continuous_controller("InterpolatingAdjoint", controller, self.rtol, self.atol)
        if self.checkpoints is None:
            return InterpolatingDiffraxAdjoint(controller=backward)
        return CheckpointedInterpolatingDiffraxAdjoint(
            controller=backward, checkpoints=self.checkpoints
        )


def _check_quadrature_options(method: QuadratureAdjoint | GaussAdjoint) -> None:
    cls = type(method)
    _check_nodes(cls.__name__, method.nodes)
    _check_tolerance(cls, "rtol", method.rtol)
    _check_tolerance(cls, "atol", method.atol)
    _check_max_steps(cls.__name__, method.max_steps)


class QuadratureAdjoint(AbstractGradientMethod):
    """The continuous adjoint with the parameter gradient by a separate quadrature.

    The backward pass solves only the adjoint state lam (|y| channels) from t1 to t0, with
    y(t) from the forward solve's dense interpolant, and stores lam's dense interpolant too;
    the parameter gradient, the integral of lam^T df/dtheta over [t0, t1], is then computed
    by `nodes`-point Gauss-Legendre quadrature over every piece between consecutive step
    ends of the forward and the backward solve (on each piece both interpolants are single
    polynomials, so the rule keeps its order; on stiff problems a rule across step ends
    cost two orders of magnitude of accuracy). Memory grows with `max_steps` (both
    interpolants). SciMLSensitivity's `QuadratureAdjoint`.

    **Arguments:**

    - `nodes`: Gauss-Legendre points per piece (default 3).
    - `rtol`, `atol`: tolerances of the backward solve (adaptive solves only).
    - `max_steps`: the step budget of the forward and of the backward solve.
    """

    nodes: int = eqx.field(default=3, static=True)
    rtol: float | None = eqx.field(default=None, static=True)
    atol: float | None = eqx.field(default=None, static=True)
    max_steps: int = eqx.field(default=4096, static=True)

    def __check_init__(self):
        _check_quadrature_options(self)

    def to_diffrax(self, controller: diffrax.AbstractStepSizeController) -> diffrax.AbstractAdjoint:
        backward = _continuous_controller("QuadratureAdjoint", controller, self.rtol, self.atol)
        return QuadratureDiffraxAdjoint(controller=backward, nodes=self.nodes)


class GaussAdjoint(AbstractGradientMethod):
    """The continuous adjoint with the parameter gradient by Gauss-Legendre on each step.

    The backward pass solves only the adjoint state lam (|y| channels, so the error control
    and, for implicit solvers, the Newton systems are |y|-sized) from t1 to t0, with y(t)
    from the forward solve's dense interpolant; after every accepted backward step it adds
    the `nodes`-point Gauss-Legendre quadrature of lam^T df/dtheta over that step, on the
    step's own interpolant of lam, split at the forward solve's step ends inside it (where
    y's interpolant changes polynomial). Memory grows with `max_steps` (the forward
    interpolant) but not with the backward steps. SciMLSensitivity's `GaussAdjoint`.

    **Arguments:**

    - `nodes`: Gauss-Legendre points per piece of a backward step (default 3).
    - `rtol`, `atol`: tolerances of the backward solve (adaptive solves only).
    - `max_steps`: the step budget of the forward and of the backward solve.
    """

    nodes: int = eqx.field(default=3, static=True)
    rtol: float | None = eqx.field(default=None, static=True)
    atol: float | None = eqx.field(default=None, static=True)
    max_steps: int = eqx.field(default=4096, static=True)

    def __check_init__(self):
        _check_quadrature_options(self)

    def to_diffrax(self, controller: diffrax.AbstractStepSizeController) -> diffrax.AbstractAdjoint:
        backward = _continuous_controller("GaussAdjoint", controller, self.rtol, self.atol)
        return GaussDiffraxAdjoint(controller=backward, nodes=self.nodes)
