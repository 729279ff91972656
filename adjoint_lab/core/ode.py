"""`solve`: an ODE solve through diffrax, with the solver, controller and gradient as objects.

Also `count_evaluations`, which counts the vector-field evaluations of a loss and of its
gradient, to compare gradient methods by cost.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.core
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Int, PyTree, Real

from ._controllers import WrappedAdaptiveController
from .gradients import AbstractGradientMethod, CheckpointedBackprop
from .reversible import Reversible, ReversibleHeun

__all__ = ["EvaluationCount", "Integrator", "Solution", "count_evaluations", "solve"]

VectorField = Callable[[Any, PyTree[Array], Any], PyTree[Array]]

# Default arguments of `solve`; equinox modules are immutable, so sharing them is safe.
_TSIT5 = diffrax.Tsit5()
_CHECKPOINTED = CheckpointedBackprop()


class Solution(eqx.Module):
    """The output of `solve`.

    **Fields:**

    - `ts`: the save times, shape `(times,)`. With the default (save at t1 only) this is
        `[t1]`; with `saveat=diffrax.SaveAt(subs=...)` it follows that structure.
    - `ys`: the solution at `ts`: y0's pytree structure with a leading `times` axis on
        every leaf.
    - `stats`: int arrays `num_steps` (accepted plus rejected), `num_accepted_steps`,
        `num_rejected_steps` and `nfe`, the number of vector-field evaluations of the
        forward solve. `nfe` is exact for explicit Runge-Kutta solvers (Euler, Heun,
        Midpoint, Ralston, Bosh3, Tsit5, Dopri5, Dopri8, ...) with `ConstantStepSize`,
        `StepTo`, `PIDController` and `ClipStepSizeController`, and `-1` (unknown) for
        implicit solvers, whose count depends on Newton iterations. Under `vmap` every
        count is per trajectory, as if it were solved alone.
    """

    ts: PyTree[Real[Array, " times"]] | None
    ys: PyTree[Array] | None
    stats: dict[str, Int[Array, ""]]


def solve(
    vector_field: VectorField,
    t0: Real[ArrayLike, ""],
    t1: Real[ArrayLike, ""],
    y0: PyTree[ArrayLike],
    args: PyTree[Any] = None,
    *,
    solver: diffrax.AbstractSolver = _TSIT5,
    controller: diffrax.AbstractStepSizeController | None = None,
    dt0: Real[ArrayLike, ""] | None = None,
    gradient: AbstractGradientMethod = _CHECKPOINTED,
    saveat: diffrax.SaveAt | None = None,
    ts: Real[ArrayLike, " times"] | None = None,
) -> Solution:
    """Solve dy/dt = vector_field(t, y, args) from `t0` to `t1`, starting at `y0`.

    Works under `jax.jit`, `jax.vmap` and `jax.grad`; reverse-mode gradients with respect
    to `y0`, `args` and the arrays inside `vector_field` (for example an equinox module's
    parameters) are computed as `gradient` says.

    **Arguments:**

    - `vector_field`: `vector_field(t, y, args) -> dy/dt` with dy/dt of y's structure.
    - `t0`, `t1`: the interval; `t1 < t0` integrates backwards in time.
    - `y0`: the initial state, any pytree of arrays.
    - `args`: passed to `vector_field` unchanged.
    - `solver`: a `diffrax.AbstractSolver`, default `diffrax.Tsit5()`.
    - `controller`: a `diffrax.AbstractStepSizeController`, e.g.
        `diffrax.PIDController(rtol=1e-6, atol=1e-8)`. Default: `ConstantStepSize()`,
        which needs `dt0`.
    - `dt0`: the (initial) step size. Required for constant steps. For adaptive
        controllers `None` lets diffrax choose it; note that diffrax 0.7.2 then always
        starts from 0.01 whatever the time scale of the problem, so give `dt0` when
        |t1 - t0| is far from 1.
    - `gradient`: an `adjoint_lab.core.gradients.AbstractGradientMethod`, default
        `CheckpointedBackprop()`. Its `max_steps` is the step budget of the solve.
    - `saveat`: a `diffrax.SaveAt`; default `SaveAt(t1=True)`.
    - `ts`: shorthand for `saveat=diffrax.SaveAt(ts=ts)`.

    **Returns:**

    A `Solution` with `ts`, `ys` and `stats`.

    **Raises:**

    `ValueError`/`TypeError` for inconsistent arguments, at trace time. At run time (also
    under `jit` and `vmap`, where any failed trajectory raises), an error if the solve
    fails: for the step budget the message names `max_steps` and the tolerances and says
    what to change. Eagerly or under `equinox.filter_jit` it is an
    `equinox.EquinoxRuntimeError`; under `jax.jit` JAX re-raises it as its own runtime
    error (a `RuntimeError`, or a `ValueError` under `vmap`) with the message inside.
    `EQX_ON_ERROR=nan` turns failures into NaN outputs instead.
    """
    if not isinstance(gradient, AbstractGradientMethod):
        raise TypeError(
            f"`solve(gradient={gradient!r})`: `gradient` must be an "
            "`adjoint_lab.core.gradients.AbstractGradientMethod`, e.g. "
            "`CheckpointedBackprop()`, `BacksolveAdjoint()` or `DirectBackprop()`."
        )
    if not isinstance(solver, diffrax.AbstractSolver):
        raise TypeError(
            f"`solve(solver={solver!r})`: `solver` must be a `diffrax.AbstractSolver` "
            "instance, e.g. `diffrax.Tsit5()` (note the parentheses)."
        )
    if controller is None:
        if dt0 is None:
            raise ValueError(
                "`solve` got neither `dt0` nor `controller`: give a step size for constant "
                "steps, e.g. `solve(..., dt0=0.01)`, or an adaptive controller, e.g. "
                "`solve(..., controller=diffrax.PIDController(rtol=1e-6, atol=1e-8))`."
            )
        controller = diffrax.ConstantStepSize()
    elif not isinstance(controller, diffrax.AbstractStepSizeController):
        raise TypeError(
            f"`solve(controller={controller!r})`: `controller` must be a "
            "`diffrax.AbstractStepSizeController`, e.g. `diffrax.ConstantStepSize()` or "
            "`diffrax.PIDController(rtol=1e-6, atol=1e-8)`."
        )
    if isinstance(controller, diffrax.ConstantStepSize) and dt0 is None:
        raise ValueError(
            "`solve(controller=diffrax.ConstantStepSize(), dt0=None)`: constant steps need "
            "a step size; pass e.g. `dt0=0.01`, or use an adaptive controller such as "
            "`diffrax.PIDController(rtol=1e-6, atol=1e-8)`, which can choose dt0 itself."
        )
    saveat = resolve_saveat("solve", saveat, ts)

    rule = _evaluation_rule(solver, controller)
    forward_controller = controller
    count_refills = (
        rule is not None
        and rule.fsal
        and isinstance(controller, diffrax.AbstractAdaptiveStepSizeController)
    )
    if count_refills:
        forward_controller = _CountFirstStages(controller)  # pyright: ignore[reportCallIssue]
        saveat = eqx.tree_at(lambda s: s.controller_state, saveat, True)

    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(vector_field),
        solver,
        t0,  # pyright: ignore[reportArgumentType]
        t1,  # pyright: ignore[reportArgumentType]
        dt0,  # pyright: ignore[reportArgumentType]
        y0,
        args,
        saveat=saveat,  # pyright: ignore[reportArgumentType]
        stepsize_controller=forward_controller,
        adjoint=gradient.to_diffrax(controller),
        max_steps=gradient.max_steps,
        throw=False,
    )

    num_steps = jnp.asarray(sol.stats["num_steps"])
    if rule is None:
        nfe = jnp.full_like(num_steps, -1)
    elif rule.fsal:
        # The first stage reuses the last stage of the previous accepted step, except on
        # the first step and after a jump, and a rejected step keeps the stale cache: so
        # every rejection before the first accepted step re-evaluates it too.
        refills = sol.controller_state[2] if count_refills else jnp.minimum(num_steps, 1)  # pyright: ignore[reportOptionalSubscript]
        nfe = (rule.stages - 1) * num_steps + refills
    else:
        nfe = rule.stages * num_steps + rule.initial
    stats = {
        "num_steps": num_steps,
        "num_accepted_steps": jnp.asarray(sol.stats["num_accepted_steps"]),
        "num_rejected_steps": jnp.asarray(sol.stats["num_rejected_steps"]),
        "nfe": nfe.astype(num_steps.dtype),
    }
    ts_out, ys_out, stats = _raise_on_failure(
        (sol.ts, sol.ys, stats), sol.result, controller, t0, t1, dt0, gradient
    )
    return Solution(ts=ts_out, ys=ys_out, stats=stats)


class Integrator(eqx.Module):
    """The solver bundle: solver, step-size controller, dt0 and gradient method, as one object.

    Every ODE user of the package (the C-NODE classifiers and flows, the spiral task, the
    config boundary) holds one of these instead of passing the four pieces around, so a
    gradient method or solver chosen in one place reaches every solve. The fields are static
    (they hold no parameters): `equinox.partition(model, equinox.is_inexact_array)` leaves an
    integrator out of a model's parameters.

    **Arguments:**

    - `solver`: a `diffrax.AbstractSolver`. Default `diffrax.Tsit5()`.
    - `controller`: a `diffrax.AbstractStepSizeController`, or `None` for constant steps of
        `dt0`.
    - `dt0`: the (initial) step size; required for constant steps.
    - `gradient`: an `AbstractGradientMethod`. Default `CheckpointedBackprop()`.
    """

    solver: diffrax.AbstractSolver = eqx.field(static=True, default=_TSIT5)
    controller: diffrax.AbstractStepSizeController | None = eqx.field(static=True, default=None)
    dt0: float | None = eqx.field(static=True, default=None)
    gradient: AbstractGradientMethod = eqx.field(static=True, default=_CHECKPOINTED)

    def solve(
        self,
        vector_field: VectorField,
        t0: Real[ArrayLike, ""],
        t1: Real[ArrayLike, ""],
        y0: PyTree[ArrayLike],
        args: PyTree[Any] = None,
        *,
        saveat: diffrax.SaveAt | None = None,
        ts: Real[ArrayLike, " times"] | None = None,
    ) -> Solution:
        """`solve(vector_field, t0, t1, y0, args, ...)` with this bundle's solver, controller,
        dt0 and gradient method (see `solve` for the arguments and the errors)."""
        return solve(
            vector_field,
            t0,
            t1,
            y0,
            args,
            solver=self.solver,
            controller=self.controller,
            dt0=self.dt0,
            gradient=self.gradient,
            saveat=saveat,
            ts=ts,
        )


def resolve_saveat(
    caller: str, saveat: diffrax.SaveAt | None, ts: Real[ArrayLike, " times"] | None
) -> diffrax.SaveAt:
    """The `SaveAt` of a solve's `saveat=`/`ts=` pair (shared by `solve` and `solve_sde`)."""
    if ts is not None:
        if saveat is not None:
            raise ValueError(
                f"`{caller}` got both `ts` and `saveat`; `ts=...` is shorthand for "
                "`saveat=diffrax.SaveAt(ts=...)`, so pass one of them."
            )
        return diffrax.SaveAt(ts=ts)  # pyright: ignore[reportArgumentType]
    return diffrax.SaveAt(t1=True) if saveat is None else saveat


@dataclass(frozen=True)
class _EvaluationRule:
    stages: int
    fsal: bool
    # Evaluations of `solver.init` (once per solve), for solvers that are not FSAL.
    initial: int = 0


def _evaluation_rule(
    solver: diffrax.AbstractSolver,
    controller: diffrax.AbstractStepSizeController,
) -> _EvaluationRule | None:
    initial = 0
    if isinstance(solver, diffrax.Euler):
        stages, fsal = 1, False
    elif isinstance(solver, Reversible):
        # A forward base step with its error estimate, and a backward one without.
        tableau = solver._tableau
        stages, fsal = tableau.error_stages + tableau.solution_stages, False
    elif isinstance(solver, ReversibleHeun):
        stages, fsal, initial = 1, False, 1
    elif isinstance(solver, diffrax.AbstractRungeKutta) and isinstance(
        solver.tableau, diffrax.ButcherTableau
    ):
        if solver.tableau.implicit:
            return None
        stages, fsal = solver.tableau.num_stages, solver.tableau.fsal
    else:
        return None
    inner = controller
    if isinstance(inner, diffrax.ClipStepSizeController):
        inner = inner.controller
    # With dt0=None, diffrax 0.7's PIDController would pick dt0 from two evaluations
    # (Hairer, Norsett & Wanner II.4), but it only does so for a bare `ODETerm`, and
    # `diffeqsolve` has already wrapped the term in a `WrapTerm`: so it always starts from
    # dt0=0.01 with no evaluations. `test_ode.py` checks this against counted evaluations.
    if not isinstance(inner, diffrax.PIDController | diffrax.ConstantStepSize | diffrax.StepTo):
        return None
    return _EvaluationRule(stages=stages, fsal=fsal, initial=initial)


class _CountFirstStages(WrappedAdaptiveController):
    """Wraps an adaptive controller to count the steps whose FSAL cache is stale.

    The state carries `(inner state, cache stale?, count)`. diffrax's explicit RK solvers
    evaluate their first stage on the first step and after a jump, and a rejected step keeps
    the old solver state; which of these happen is known only at run time.
    """

    def init(self, terms, t0, t1, y0, dt0, args, func, error_order):
        tnext, state = self.controller.init(terms, t0, t1, y0, dt0, args, func, error_order)
        return tnext, (state, jnp.array(True), jnp.array(0, dtype=jnp.int32))

    def adapt_step_size(self, t0, t1, y0, y1_candidate, args, y_error, error_order, state):
        inner_state, stale, count = state
        count = count + stale.astype(count.dtype)
        keep, next_t0, next_t1, made_jump, inner_state, result = self.controller.adapt_step_size(
            t0, t1, y0, y1_candidate, args, y_error, error_order, inner_state
        )
        stale = jnp.where(keep, made_jump, stale)
        return keep, next_t0, next_t1, made_jump, (inner_state, stale, count), result


def _describe(value: object) -> str:
    if isinstance(value, jax.core.Tracer):
        return "<traced>"
    try:
        return f"{float(value):g}"  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return repr(value)


def _raise_on_failure(
    out: PyTree,
    result: diffrax.RESULTS,
    controller: diffrax.AbstractStepSizeController,
    t0: object,
    t1: object,
    dt0: object,
    gradient: AbstractGradientMethod,
) -> PyTree:
    name = type(gradient).__name__
    budget = (
        f"raise the step budget on the gradient method, e.g. "
        f"`gradient={name}(..., max_steps={2 * gradient.max_steps})`"
    )
    if isinstance(controller, diffrax.AbstractAdaptiveStepSizeController):
        message = (
            f"The ODE solve did not reach t1 within max_steps={gradient.max_steps} steps "
            f"(accepted plus rejected) of the adaptive controller "
            f"`{type(controller).__name__}` with rtol={_describe(controller.rtol)}, "
            f"atol={_describe(controller.atol)}. Either {budget}, or loosen rtol/atol on "
            "the controller. If the step size collapses, the problem may be stiff (use an "
            "implicit solver such as `diffrax.Kvaerno5()`) or blow up before t1."
        )
    else:
        try:
            span = abs(float(t1) - float(t0))  # type: ignore[arg-type]
            needed = f"{math.ceil(span / abs(float(dt0)))} steps"  # type: ignore[arg-type]
        except (TypeError, ValueError, ZeroDivisionError, jax.errors.ConcretizationTypeError):
            needed = "|t1 - t0| / dt0 steps"
        message = (
            f"The ODE solve did not reach t1 within max_steps={gradient.max_steps} steps "
            f"of `{type(controller).__name__}` with dt0={_describe(dt0)}: covering "
            f"[t0, t1] takes {needed}. Either {budget}, or increase dt0. (Constant steps "
            "have no rtol/atol; for error-controlled steps pass an adaptive controller "
            "such as `diffrax.PIDController(rtol=1e-6, atol=1e-8)`.)"
        )
    out = eqx.error_if(out, result == diffrax.RESULTS.max_steps_reached, message)
    other_failure = (result != diffrax.RESULTS.successful) & (
        result != diffrax.RESULTS.max_steps_reached
    )
    return result.error_if(out, other_failure)


@dataclass(frozen=True)
class EvaluationCount:
    """Vector-field evaluations of a loss and of its gradient (see `count_evaluations`).

    **Fields:**

    - `forward`: evaluations in one call of the loss.
    - `backward_recomputed`: evaluations of the vector field itself during the backward
        pass of `jax.value_and_grad`: recomputation between checkpoints, or the backwards
        re-solve of y in the continuous adjoint method.
    - `backward_vjp`: vector-Jacobian products of the vector field in the backward pass.
    - `backward` (property): `backward_recomputed + backward_vjp`.
    - `gradient`: the gradient of the counted `jax.value_and_grad` call, as
        `eqx.filter_grad` of `lambda fa: loss(fa[0], *fa[1:])` gives it at
        `(vector_field, *args)`: one compilation gives both the counts and the gradient.
    """

    forward: int
    backward_recomputed: int
    backward_vjp: int
    gradient: Any = dataclass_field(default=None, repr=False, compare=False)

    @property
    def backward(self) -> int:
        return self.backward_recomputed + self.backward_vjp

    def __str__(self) -> str:
        return (
            f"forward {self.forward} evaluations; backward {self.backward} "
            f"({self.backward_recomputed} recomputed + {self.backward_vjp} VJPs)"
        )


class _Counter:
    def __init__(self):
        self._lock = threading.Lock()
        self.primal = 0
        self.vjp = 0

    def count_primal(self):
        with self._lock:
            self.primal += 1

    def count_vjp(self):
        with self._lock:
            self.vjp += 1


@eqx.filter_custom_vjp
def _counted_call(inputs, counter):
    field, t, y, args = inputs
    jax.debug.callback(counter.count_primal)
    return field(t, y, args)


@_counted_call.def_fwd
def _counted_call_fwd(perturbed, inputs, counter):
    del perturbed
    field, t, y, args = inputs
    jax.debug.callback(counter.count_primal)
    return field(t, y, args), None


@_counted_call.def_bwd
def _counted_call_bwd(residuals, grad_out, perturbed, inputs, counter):
    del residuals, perturbed
    jax.debug.callback(counter.count_vjp)
    # The VJP's own re-evaluation of the field is an implementation detail of this
    # wrapper, not part of the gradient method being measured: it is not counted.
    _, vjp = eqx.filter_vjp(lambda x: x[0](x[1], x[2], x[3]), inputs)
    (grad_inputs,) = vjp(grad_out)
    return grad_inputs


class _CountedField(eqx.Module):
    field: VectorField
    counter: _Counter = eqx.field(static=True)

    def __call__(self, t, y, args):
        return _counted_call((self.field, t, y, args), self.counter)


def count_evaluations(
    loss: Callable[..., Real[ArrayLike, ""]], vector_field: VectorField, *args: Any
) -> EvaluationCount:
    """Count the vector-field evaluations of a loss and of its gradient.

    Calls `loss(vector_field, *args)` once and `jax.value_and_grad` of it (with respect
    to every floating-point array in `vector_field` and `args`) once, both jitted, with
    `vector_field` wrapped so that every evaluation and every vector-Jacobian product of
    it is counted at run time. The forward evaluations of the gradient call are taken to
    be those of the plain call; the remainder are reported as `backward_recomputed`.

    Gradients must flow through `vector_field`'s arrays or `args`, not through arrays the
    vector field closes over (those are not differentiated, as with `BacksolveAdjoint`).
    Counts are totals over the whole call: do not `vmap` inside `loss` if you want
    per-trajectory counts.

    **Arguments:**

    - `loss`: `loss(vector_field, *args) -> scalar`, typically calling `solve`.
    - `vector_field`: a function `(t, y, args) -> dy/dt`, or an equinox module.
    - `*args`: the remaining arguments of `loss`.

    **Returns:**

    An `EvaluationCount` with `forward`, `backward_recomputed`, `backward_vjp`,
    `backward` and the `gradient`.
    """
    counter = _Counter()
    counted = _CountedField(vector_field, counter)
    jax.block_until_ready(eqx.filter_jit(loss)(counted, *args))
    jax.effects_barrier()
    forward = counter.primal

    counter.primal = counter.vjp = 0
    diff, static = eqx.partition((counted, args), eqx.is_inexact_array)

    def _loss(diff_, static_):
        field_, args_ = eqx.combine(diff_, static_)
        return loss(field_, *args_)

    _, grads = eqx.filter_jit(eqx.filter_value_and_grad(_loss))(diff, static)
    jax.block_until_ready(grads)
    jax.effects_barrier()
    counted_grads, args_grads = grads
    return EvaluationCount(
        forward=forward,
        backward_recomputed=counter.primal - forward,
        backward_vjp=counter.vjp,
        gradient=(counted_grads.field, *args_grads),
    )
