"""The diffrax adjoints behind the reversible, interpolating, quadrature and Gauss methods.

Each class here is a `diffrax.AbstractAdjoint`: its `loop` runs diffrax's own solve loop as
the forward pass, inside a custom VJP whose backward pass is the method's own. The public
entry points are the gradient methods in `gradients.py` (`ReversibleAdjoint`,
`InterpolatingAdjoint`, `QuadratureAdjoint`, `GaussAdjoint`), whose `to_diffrax` returns
these.

Conventions: inside `loop` times are diffrax's direction-normalised times tau (increasing
from t0 to t1) and the terms are wrapped accordingly. The continuous adjoints integrate the
adjoint state backwards in the reversed time sigma = -tau, so that every nested solve runs
forwards in its own time. For dy/dtau = v(tau, y, p) the adjoint equations are

    dlam/dsigma = (dv/dy)^T lam,    dmu/dsigma = (dv/dp)^T lam,

with lam(t1) = dL/dy(t1) (plus a jump dL/dy(t_i) at every saved time) and
mu(t0) = dL/dp; dL/dy0 = lam(t0).
"""

from __future__ import annotations

import abc
import functools as ft
from typing import Any, ClassVar

import diffrax
import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from diffrax._integrate import SaveState, State
from diffrax._misc import linear_rescale
from diffrax._saveat import save_y
from diffrax._term import WrapTerm

from ._controllers import WrappedAdaptiveController
from .reversible import AbstractReversibleSolver, _add, _combine, _velocity_of

__all__ = [
    "CheckpointedInterpolatingDiffraxAdjoint",
    "GaussDiffraxAdjoint",
    "InterpolatingDiffraxAdjoint",
    "QuadratureDiffraxAdjoint",
    "ReversibleDiffraxAdjoint",
]

_lax_loop = ft.partial(eqxi.while_loop, kind="lax")


def _zeros_like(tree):
    return jtu.tree_map(jnp.zeros_like, tree)


def _is_subsaveat(x):
    return isinstance(x, diffrax.SubSaveAt)


def _velocity_p(static_p):
    """velocity(tau, y, diff_p) from the (args, terms) split into arrays and the rest."""

    def velocity(t, y, p):
        args, terms = eqx.combine(p, static_p)
        return _velocity_of(terms, args)(t, y)

    return velocity


def _check_common(name: str, terms, saveat, event, passed_solver_state, passed_controller_state):
    if event is not None:
        raise NotImplementedError(f"`{name}` does not support events (`diffrax.Event`).")
    if not (isinstance(terms, WrapTerm) and isinstance(terms.term, diffrax.ODETerm)):
        raise NotImplementedError(
            f"`{name}` supports ODEs with a single vector field (`diffrax.ODETerm`) only."
        )
    subs = saveat.subs
    if not _is_subsaveat(subs):
        raise NotImplementedError(
            f"`{name}` does not support `SaveAt(subs=...)`; use `SaveAt(t0=..., t1=..., ts=...)`."
        )
    if saveat.dense or subs.steps or subs.fn is not save_y:
        raise NotImplementedError(
            f"`{name}` supports `SaveAt(t0=..., t1=..., ts=...)` only, not `steps=True`, "
            "`dense=True` or `fn=...`."
        )
    if passed_solver_state or passed_controller_state:
        raise NotImplementedError(
            f"`{name}` does not support `diffeqsolve(solver_state=..., controller_state=...)`."
        )


def _split_cotangents(saveat, ys, grad_ys):
    """The cotangents of the saved outputs, as (at t0 or None, at ts or None, at t1 or None)."""
    grad_ys = jtu.tree_map(lambda y, g: jnp.zeros_like(y) if g is None else g, ys, grad_ys)
    subs = saveat.subs
    n0 = 1 if subs.t0 else 0
    nts = 0 if subs.ts is None else len(subs.ts)
    g0 = jtu.tree_map(lambda g: g[0], grad_ys) if subs.t0 else None
    gts = jtu.tree_map(lambda g: g[n0 : n0 + nts], grad_ys) if nts else None
    g1 = jtu.tree_map(lambda g: g[-1], grad_ys) if subs.t1 else None
    return g0, gts, g1


def _stop_gradient(tree):
    return jtu.tree_map(lambda x: lax.stop_gradient(x) if eqx.is_array(x) else x, tree)


class _CustomLoopAdjoint(diffrax.AbstractAdjoint):
    """Runs diffrax's loop forwards inside a custom VJP whose backward pass is `_backward`."""

    name: ClassVar[str]

    @abc.abstractmethod
    def _forward(self, *, y0, args, terms, init_state, **kwargs):
        """Returns `(final_state, aux_stats, residuals)`."""

    @abc.abstractmethod
    def _backward(self, residuals, grad_ys, *, y0, args, terms, **kwargs):
        """Returns the cotangents of `(y0, args, terms)` (arrays only)."""

    def _check(self, solver, stepsize_controller):
        del solver, stepsize_controller

    def loop(
        self,
        *,
        args,
        terms,
        solver,
        saveat,
        init_state,
        passed_solver_state,
        passed_controller_state,
        event,
        **kwargs,
    ):
        _check_common(self.name, terms, saveat, event, passed_solver_state, passed_controller_state)
        self._check(solver, kwargs["stepsize_controller"])
        y0 = init_state.y
        # `diffeqsolve` computed the initial solver state from y0 outside this function; it
        # is used as a value only, and its dependence on y0 is handled by `_backward`.
        init_state = _stop_gradient(eqx.tree_at(lambda s: s.y, init_state, object()))
        final_state, aux_stats = _custom_loop(
            (y0, args, terms),
            adjoint=self,
            solver=solver,
            saveat=saveat,
            init_state=init_state,
            event=event,
            **kwargs,
        )
        # Only the saved outputs carry gradients; everything else (counters, result codes,
        # the final solver state) is cut off, as `_custom_loop_bwd` only reads the outputs.
        ys = final_state.save_state.ys
        final_state = _stop_gradient(eqx.tree_at(lambda s: s.save_state.ys, final_state, None))
        final_state = eqx.tree_at(
            lambda s: s.save_state.ys, final_state, ys, is_leaf=lambda x: x is None
        )
        return final_state, aux_stats

    def _run(self, *, y0, args, terms, init_state, **kwargs):
        kwargs.pop("throw", None)
        init_state = eqx.tree_at(lambda s: s.y, init_state, y0)
        return self._loop(
            args=args,
            terms=terms,
            init_state=init_state,
            inner_while_loop=_lax_loop,
            outer_while_loop=_lax_loop,
            **kwargs,
        )


@eqx.filter_custom_vjp
def _custom_loop(y0_args_terms, *, adjoint, **kwargs):
    y0, args, terms = y0_args_terms
    final_state, aux_stats, _ = adjoint._forward(y0=y0, args=args, terms=terms, **kwargs)
    return final_state, aux_stats


@_custom_loop.def_fwd
def _custom_loop_fwd(perturbed, y0_args_terms, *, adjoint, **kwargs):
    del perturbed
    y0, args, terms = y0_args_terms
    final_state, aux_stats, residuals = adjoint._forward(y0=y0, args=args, terms=terms, **kwargs)
    return (final_state, aux_stats), (final_state.save_state.ys, residuals)


@_custom_loop.def_bwd
def _custom_loop_bwd(residuals, grads, perturbed, y0_args_terms, *, adjoint, **kwargs):
    del perturbed
    ys, residuals = residuals
    grad_final_state, _ = grads
    grad_ys = getattr(getattr(grad_final_state, "save_state", None), "ys", None)
    if grad_ys is None:
        grad_ys = _zeros_like(ys)
    y0, args, terms = y0_args_terms
    g0, gts, g1 = _split_cotangents(kwargs["saveat"], ys, grad_ys)
    return adjoint._backward(residuals, (g0, gts, g1), y0=y0, args=args, terms=terms, **kwargs)


def _no_output(t, y, args):
    del t, y, args
    return jnp.zeros((0,))


def _constant_grid(t0, t1, dt0):
    """The step ends of `diffrax.ConstantStepSize` as a function of the step index.

    They are recomputed rather than stored, so that the backward pass needs O(1) memory; the
    formula is that of diffrax 0.7's controller and loop (`test_adjoints.py` checks it):
    t_1 = min(t0 + dt0, t1), t_k = t0 + (t1 - t0) k / N for k >= 2, t_N = t1, with
    N = ceil((t1 - t0) / nextafter(dt0)) and ends within 100 ulp of t1 rounded to t1.
    """
    num = jnp.astype(jnp.ceil((t1 - t0) / eqxi.nextafter(dt0)), jnp.int32)
    floor = t1
    for _ in range(100):
        floor = eqxi.prevbefore(floor)
    dtype = jnp.result_type(t0, t1)

    def time(k):
        mid = t0 + (t1 - t0) * (jnp.astype(k, dtype) / jnp.astype(num, dtype))
        t = jnp.where(k == num, t1, mid)
        t = jnp.where(t > floor, t1, t)
        t = jnp.where(k == 1, jnp.minimum(t0 + dt0, t1), t)
        return jnp.where(k == 0, t0, t)

    return time


class ReversibleDiffraxAdjoint(_CustomLoopAdjoint):
    """The backward pass of `ReversibleAdjoint`: rebuild each state by stepping backwards,
    then one local VJP per step."""

    name: ClassVar[str] = "ReversibleAdjoint"

    def _check(self, solver, stepsize_controller):
        if not isinstance(solver, AbstractReversibleSolver):
            raise ValueError(
                f"`ReversibleAdjoint()` needs an algebraically reversible solver, but the solve "
                f"uses `{type(solver).__name__}`. Use `adjoint_lab.core.Reversible(solver)` "
                "around an explicit Runge-Kutta solver (e.g. `Reversible(diffrax.Tsit5())`) or "
                "`adjoint_lab.core.ReversibleHeun()` (not `diffrax.ReversibleHeun`)."
            )

    @staticmethod
    def _stores_times(stepsize_controller) -> bool:
        return not isinstance(stepsize_controller, diffrax.ConstantStepSize | diffrax.StepTo)

    def _forward(self, *, y0, args, terms, init_state, saveat, max_steps, **kwargs):
        controller = kwargs["stepsize_controller"]
        if not self._stores_times(controller):
            final_state, aux = self._run(
                y0=y0,
                args=args,
                terms=terms,
                init_state=init_state,
                saveat=saveat,
                max_steps=max_steps,
                **kwargs,
            )
            times = None
        else:
            # An adaptive solve records its accepted step ends (a scalar per step, no states).
            steps = diffrax.SubSaveAt(steps=True, fn=_no_output)
            saveat2 = eqx.tree_at(lambda s: s.subs, saveat, (saveat.subs, steps))
            time_dtype = jnp.result_type(init_state.tprev)
            record = SaveState(
                saveat_ts_index=0,
                ts=jnp.full(max_steps, jnp.inf, dtype=time_dtype),
                ys=jnp.zeros((max_steps, 0)),
                save_index=0,
            )
            init2 = eqx.tree_at(lambda s: s.save_state, init_state, (init_state.save_state, record))
            final_state, aux = self._run(
                y0=y0,
                args=args,
                terms=terms,
                init_state=init2,
                saveat=saveat2,
                max_steps=max_steps,
                **kwargs,
            )
            user, record = final_state.save_state
            final_state = eqx.tree_at(lambda s: s.save_state, final_state, user)
            times = record.ts
        residuals = (
            final_state.y,
            final_state.solver_state,
            final_state.num_accepted_steps,
            times,
        )
        return final_state, aux, residuals

    def _backward(
        self,
        residuals,
        grads,
        *,
        y0,
        args,
        terms,
        solver,
        saveat,
        t0,
        t1,
        dt0,
        stepsize_controller,
        **kwargs,
    ):
        del kwargs
        y_final, s_final, n, times = residuals
        g0, gts, g1 = grads
        diff_p, static_p = eqx.partition((args, terms), eqx.is_inexact_array)
        velocity_p = _velocity_p(static_p)

        if isinstance(stepsize_controller, diffrax.ConstantStepSize):
            time = _constant_grid(t0, t1, dt0)
        elif isinstance(stepsize_controller, diffrax.StepTo):
            grid = jnp.asarray(stepsize_controller.ts)
            time = lambda k: grid[k]  # noqa: E731
        else:
            time = lambda k: jnp.where(k == 0, t0, times[jnp.maximum(k - 1, 0)])  # noqa: E731

        ts = saveat.subs.ts
        has_ts = ts is not None
        y_bar = _zeros_like(y0) if g1 is None else g1
        s_bar = _zeros_like(s_final)
        p_bar = _zeros_like(diff_p)

        def cond(carry):
            return carry[0] > 0

        def body(carry):
            k, y1, s1, y1_bar, s1_bar, p_bar, j = carry
            ta, tb = time(k - 1), time(k)
            extra = _zeros_like(y1_bar)
            if has_ts:
                # Outputs saved in this step are linear interpolations of its two ends.
                def in_step(c):
                    jj = c[0]
                    return (jj >= 0) & ((ts[jnp.maximum(jj, 0)] > ta) | (k == 1))

                def add_output(c):
                    jj, yb, ex = c
                    w = linear_rescale(ta, ts[jj], tb)
                    g = jtu.tree_map(lambda x: x[jj], gts)
                    yb = _combine((1, yb), (w, g))
                    ex = _combine((1, ex), (1 - w, g))
                    return jj - 1, yb, ex

                j, y1_bar, extra = lax.while_loop(in_step, add_output, (j, y1_bar, extra))
            y0_, s0, y0_bar, s0_bar, dp = solver.reverse_step(
                velocity_p, diff_p, ta, tb, y1, s1, y1_bar, s1_bar
            )
            return k - 1, y0_, s0, _add(y0_bar, extra), s0_bar, _add(p_bar, dp), j

        j0 = jnp.asarray(len(ts) - 1 if has_ts else -1)
        carry = (n, y_final, s_final, y_bar, s_bar, p_bar, j0)
        _, _, _, y_bar, s_bar, p_bar, j = lax.while_loop(cond, body, carry)
        if has_ts:
            # Outputs of a solve without steps (t0 == t1) are y0 itself.
            mask = jnp.arange(len(ts)) <= j
            y_bar = jtu.tree_map(
                lambda yb, g: yb + jnp.tensordot(mask.astype(g.dtype), g, axes=1), y_bar, gts
            )
        if g0 is not None:
            y_bar = _add(y_bar, g0)
        # The initial solver state is a function of y0 (and, for ReversibleHeun, of p).
        _, vjp = jax.vjp(
            lambda y, p: solver.initial_state(lambda t, yy: velocity_p(t, yy, p), t0, y),
            y0,
            diff_p,
        )
        dy, dp = vjp(s_bar)
        y_bar = _add(y_bar, dy)
        p_bar = _add(p_bar, dp)
        args_bar, terms_bar = p_bar
        return y_bar, args_bar, terms_bar


# --------------------------------------------------------------------------------------
# Continuous adjoints on the forward solve's dense interpolant.


class _AdjointField(eqx.Module):
    """The adjoint vector fields in reversed time sigma, reading y from an interpolant."""

    interp: Any
    diff_p: Any
    static_p: Any

    def _vjp(self, sigma, wrt_p: bool):
        tau = -sigma
        # A nested step can land an ulp outside the interpolant, where diffrax returns NaN.
        lo = self.interp.ts[0]
        hi = self.interp.ts[jnp.maximum(self.interp.ts_size - 1, 0)]
        y = self.interp.evaluate(jnp.clip(tau, lo, jnp.maximum(lo, hi)))
        velocity = _velocity_p(self.static_p)
        if wrt_p:
            _, vjp = jax.vjp(lambda yy, p: velocity(tau, yy, p), y, self.diff_p)
        else:
            _, vjp = jax.vjp(lambda yy: velocity(tau, yy, self.diff_p), y)
        return vjp

    def state_rate(self, sigma, lam):
        (dlam,) = self._vjp(sigma, wrt_p=False)(lam)
        return dlam

    def param_rate(self, sigma, lam):
        # Only the parameter half of the VJP is used; XLA drops the other half.
        return self._vjp(sigma, wrt_p=True)(lam)[1]

    def both(self, sigma, state, args):
        del args
        lam, _ = state
        return tuple(self._vjp(sigma, wrt_p=True)(lam))

    def lam_only(self, sigma, lam, args):
        del args
        return self.state_rate(sigma, lam)


def _gauss_legendre(nodes: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    x, w = np.polynomial.legendre.leggauss(nodes)
    return tuple(float(v) for v in x), tuple(float(v) for v in w)


def _quadrature(rate, a, b, lam_at, nodes):
    """int_a^b rate(sigma, lam(sigma)) dsigma by `nodes`-point Gauss-Legendre."""
    xs, ws = _gauss_legendre(nodes)
    half = (b - a) / 2
    total = None
    for x, w in zip(xs, ws, strict=True):
        sigma = a + half * (x + 1)
        r = rate(sigma, lam_at(sigma))
        term = _combine((half * w, r))
        total = term if total is None else _add(total, term)
    return total


def _split_quadrature(rate, a, b, lam_at, nodes, forward):
    """`_quadrature` over [a, b] (in sigma), split at the forward solve's step ends inside.

    y(tau) is one polynomial per forward step only: across a step end its derivatives jump,
    and a single Gauss-Legendre rule over the jump loses its order. On stiff problems, where
    the forward steps are short on the transient, that error dominated the gradient (2e-4
    instead of ~1e-6 at rtol 1e-8). `forward` is (step ends in tau, padded with inf; index
    of the last).
    """
    forward_ts, last = forward
    valid = jnp.where(jnp.arange(forward_ts.shape[0]) <= last, forward_ts, jnp.inf)
    lo, hi = -b, -a  # the interval in tau
    k_lo = jnp.clip(jnp.searchsorted(valid, lo, side="right") - 1, 0, jnp.maximum(last - 1, 0))
    k_hi = jnp.clip(jnp.searchsorted(valid, hi, side="left"), k_lo + 1, jnp.maximum(last, 1))

    def body(carry):
        k, total = carry
        start = jnp.where(k == k_lo, lo, valid[k])
        end = jnp.where(k + 1 >= k_hi, hi, jnp.minimum(valid[k + 1], hi))
        end = jnp.maximum(start, end)
        # In sigma = -tau the piece runs from -end to -start.
        return k + 1, _add(total, _quadrature(rate, -end, -start, lam_at, nodes))

    struct = eqx.filter_eval_shape(lambda: rate(a, lam_at(a)))
    zero = jtu.tree_map(lambda x: jnp.zeros(x.shape, x.dtype), struct)
    _, total = lax.while_loop(lambda c: c[0] < k_hi, body, (k_lo, zero))
    return total


class _GaussLegendreSolver(diffrax.AbstractSolver):
    """Wraps the backward solver of lam: after each step, adds the Gauss-Legendre quadrature
    of the parameter rate over the step (on the step's own interpolant of lam) to mu, carried
    in the solver state, so that rejected steps add nothing and the error control sees lam
    only."""

    inner: diffrax.AbstractSolver
    field: _AdjointField
    forward: Any
    nodes: int = eqx.field(static=True)

    @property
    def term_structure(self):
        return self.inner.term_structure

    @property
    def interpolation_cls(self):  # pyright: ignore
        return self.inner.interpolation_cls

    def order(self, terms):
        return self.inner.order(terms)

    def error_order(self, terms):
        return self.inner.error_order(terms)

    def init(self, terms, t0, t1, y0, args):
        return self.inner.init(terms, t0, t1, y0, args), _zeros_like(self.field.diff_p)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        inner_state, mu = solver_state
        y1, err, dense_info, inner_state, result = self.inner.step(
            terms, t0, t1, y0, args, inner_state, made_jump
        )
        local = self.inner.interpolation_cls(t0=t0, t1=t1, **dense_info)
        piece = _split_quadrature(
            self.field.param_rate, t0, t1, local.evaluate, self.nodes, self.forward
        )
        mu = _add(mu, piece)
        return y1, err, dense_info, (inner_state, mu), result

    def func(self, terms, t0, y0, args):
        return self.inner.func(terms, t0, y0, args)


class _ProposingController(WrappedAdaptiveController):
    """Wraps the backward solve's adaptive controller to keep its latest proposed step in its
    state, so that the nested solve of the next piece (between two saved times) starts from
    it. Started from diffrax's initial-step heuristic instead, every piece paid two
    evaluations and a run of short steps: on the spiral at rtol 1e-6, the Gauss adjoint's
    backward pass took 298 VJPs that way, and 118 with the step carried over."""

    def init(self, terms, t0, t1, y0, dt0, args, func, error_order):
        tnext, inner = self.controller.init(terms, t0, t1, y0, dt0, args, func, error_order)
        return tnext, (inner, tnext - t0)

    def adapt_step_size(self, t0, t1, y0, y1_candidate, args, y_error, error_order, state):
        inner, _ = state
        out = self.controller.adapt_step_size(
            t0, t1, y0, y1_candidate, args, y_error, error_order, inner
        )
        keep, tprev, tnext, made_jump, inner, result = out
        # The proposal before the solve's loop clips it to the end of the piece.
        return keep, tprev, tnext, made_jump, (inner, tnext - tprev), result


def _proposing(controller) -> _ProposingController:
    # The base's rtol/atol/norm properties stand for diffrax's abstract fields, which a static
    # checker reads as constructor arguments (as for `diffrax.ClipStepSizeController`).
    return _ProposingController(controller)  # pyright: ignore[reportCallIssue]


def _last_step(ts, index, fallback):
    """The length of the last of a solve's steps (ts[0..index] its step ends), or `fallback`
    for a solve without steps: the first step of the backward pass."""
    last = jnp.maximum(index, 1)
    return jnp.where(index >= 1, ts[last] - ts[last - 1], fallback)


class _ContinuousAdjoint(_CustomLoopAdjoint):
    """Forward: diffrax's loop with the dense interpolant stored. Backward: integrate the
    adjoint equations from the last saved time to t0, adding the output cotangents at the
    saved times, with `_integrate` (per method) between them."""

    controller: diffrax.AbstractStepSizeController

    def _forward(self, *, y0, args, terms, init_state, saveat, max_steps, solver, **kwargs):
        saveat2 = eqx.tree_at(lambda s: s.dense, saveat, True)
        _, _, info, _, _ = eqx.filter_eval_shape(
            solver.step,
            terms,
            init_state.tprev,
            init_state.tnext,
            y0,
            args,
            init_state.solver_state,
            False,
        )
        time_dtype = jnp.result_type(init_state.tprev)
        dense_ts = jnp.full(max_steps + 1, jnp.inf, dtype=time_dtype)
        dense_infos = jtu.tree_map(lambda x: jnp.zeros((max_steps,) + x.shape, x.dtype), info)
        init2 = eqx.tree_at(
            lambda s: (s.dense_ts, s.dense_infos, s.dense_save_index),
            init_state,
            (dense_ts, dense_infos, 0),
            is_leaf=lambda x: x is None,
        )
        final_state, aux = self._run(
            y0=y0,
            args=args,
            terms=terms,
            init_state=init2,
            saveat=saveat2,
            max_steps=max_steps,
            solver=solver,
            **kwargs,
        )
        residuals = (
            final_state.dense_ts,
            final_state.dense_infos,
            final_state.dense_save_index,
            final_state.tprev,
        )
        final_state = eqx.tree_at(
            lambda s: (s.dense_ts, s.dense_infos, s.dense_save_index),
            final_state,
            (None, None, None),
        )
        return final_state, aux, residuals

    @abc.abstractmethod
    def _integrate(
        self, field, lam, mu, tau_hi, tau_lo, *, solver, dt0, max_steps, dense
    ) -> tuple[Any, Any, Any]:
        """Integrate (lam, mu) from tau_hi back to tau_lo, starting with a step of dt0;
        returns (lam, mu, the step to start the next piece with)."""

    def _nested_solve(self, term, solver, y0, tau_hi, tau_lo, dt0, max_steps, saveat):
        """The solve of one piece in sigma = -tau, and the step the next piece starts with:
        the controller's last proposal (adaptive steps) or dt0 (constant steps)."""
        adaptive = isinstance(self.controller, diffrax.AbstractAdaptiveStepSizeController)
        controller = _proposing(self.controller) if adaptive else self.controller
        sol = diffrax.diffeqsolve(
            term,
            solver,
            -tau_hi,
            -tau_lo,
            dt0,
            y0,
            saveat=eqx.tree_at(lambda s: s.controller_state, saveat, adaptive),
            stepsize_controller=controller,
            adjoint=diffrax.ForwardMode(),
            max_steps=max_steps,
            throw=True,
        )
        if not adaptive:
            return sol, dt0
        assert sol.controller_state is not None  # SaveAt(controller_state=True) above
        proposal = sol.controller_state[1]
        return sol, jnp.where(proposal > 0, proposal, dt0)

    def _backward(
        self, residuals, grads, *, y0, args, terms, solver, saveat, t0, dt0, max_steps, **kwargs
    ):
        del kwargs
        dense_ts, dense_infos, dense_index, t_end = residuals
        g0, gts, g1 = grads
        diff_p, static_p = eqx.partition((args, terms), eqx.is_inexact_array)
        interp = diffrax.DenseInterpolation(
            ts=dense_ts,
            ts_size=dense_index + 1,
            infos=dense_infos,
            interpolation_cls=solver.interpolation_cls,
            direction=1,
            t0_if_trivial=t0,
            y0_if_trivial=y0,
        )
        field = _AdjointField(interp, diff_p, static_p)
        dense = (dense_ts, dense_index)
        integrate = ft.partial(
            self._integrate, field, solver=solver, max_steps=max_steps, dense=dense
        )
        if isinstance(self.controller, diffrax.AbstractAdaptiveStepSizeController):
            # The backward pass starts where the forward one ended, on its time scale.
            dt0 = _last_step(dense_ts, dense_index, t_end - t0)

        lam = _zeros_like(y0) if g1 is None else g1
        mu = _zeros_like(diff_p)
        ts = saveat.subs.ts
        if ts is None:
            lam, mu, _ = integrate(lam, mu, t_end, t0, dt0=dt0)
        else:
            # One scan over the pieces between saved times, the last one ending at t0 with no
            # output there (so that the nested solve is traced once).
            stops = jnp.concatenate([jnp.asarray(t0, ts.dtype)[None], ts])
            jumps = jtu.tree_map(lambda g: jnp.concatenate([jnp.zeros_like(g[:1]), g]), gts)

            def scan_fn(carry, x):
                lam, mu, tau, dt = carry
                t_i, g_i = x
                lam, mu, dt = integrate(lam, mu, tau, t_i, dt0=dt)
                return (_add(lam, g_i), mu, t_i, dt), None

            dt0 = jnp.asarray(dt0, jnp.result_type(t_end))
            carry = (lam, mu, jnp.asarray(t_end), dt0)
            (lam, mu, _, _), _ = lax.scan(scan_fn, carry, (stops, jumps), reverse=True)
        if g0 is not None:
            lam = _add(lam, g0)
        args_bar, terms_bar = mu
        return lam, args_bar, terms_bar


class InterpolatingDiffraxAdjoint(_ContinuousAdjoint):
    """The backward pass of `InterpolatingAdjoint`: (lam, mu) together, y from the
    interpolant."""

    name: ClassVar[str] = "InterpolatingAdjoint"

    def _integrate(self, field, lam, mu, tau_hi, tau_lo, *, solver, dt0, max_steps, dense):
        del dense
        sol, dt = self._nested_solve(
            diffrax.ODETerm(field.both),
            solver,
            (lam, mu),
            tau_hi,
            tau_lo,
            dt0,
            max_steps,
            diffrax.SaveAt(t1=True),
        )
        lam, mu = jtu.tree_map(lambda x: x[0], sol.ys)
        return lam, mu, dt


class GaussDiffraxAdjoint(_ContinuousAdjoint):
    """The backward pass of `GaussAdjoint`: lam only, mu by Gauss-Legendre on each backward
    step's interpolants."""

    name: ClassVar[str] = "GaussAdjoint"
    nodes: int = eqx.field(static=True, default=3)

    def _integrate(self, field, lam, mu, tau_hi, tau_lo, *, solver, dt0, max_steps, dense):
        wrapped = _GaussLegendreSolver(solver, field, dense, self.nodes)
        sol, dt = self._nested_solve(
            diffrax.ODETerm(field.lam_only),
            wrapped,
            lam,
            tau_hi,
            tau_lo,
            dt0,
            max_steps,
            diffrax.SaveAt(t1=True, solver_state=True),
        )
        lam = jtu.tree_map(lambda x: x[0], sol.ys)
        assert sol.solver_state is not None  # SaveAt(solver_state=True) above
        _, dmu = sol.solver_state
        return lam, _add(mu, dmu), dt


class QuadratureDiffraxAdjoint(_ContinuousAdjoint):
    """The backward pass of `QuadratureAdjoint`: lam only (stored densely), then mu by a
    separate Gauss-Legendre quadrature over the forward solve's steps."""

    name: ClassVar[str] = "QuadratureAdjoint"
    nodes: int = eqx.field(static=True, default=3)

    def _integrate(self, field, lam, mu, tau_hi, tau_lo, *, solver, dt0, max_steps, dense):
        sol, dt = self._nested_solve(
            diffrax.ODETerm(field.lam_only),
            solver,
            lam,
            tau_hi,
            tau_lo,
            dt0,
            max_steps,
            diffrax.SaveAt(t1=True, dense=True),
        )
        lam_new = jtu.tree_map(lambda x: x[0], sol.ys)
        # Over each backward step (one polynomial of lam), split at the forward step ends
        # (one polynomial of y): every Gauss-Legendre rule sees a smooth integrand.
        interpolation = sol.interpolation
        assert interpolation is not None  # SaveAt(dense=True) above
        backward_ts = interpolation.ts
        count = interpolation.ts_size - 1

        def body(j, mu):
            a = backward_ts[j]
            b = jnp.maximum(a, backward_ts[j + 1])
            piece = _split_quadrature(field.param_rate, a, b, sol.evaluate, self.nodes, dense)
            return _add(mu, piece)

        mu = lax.fori_loop(0, count, body, mu)
        return lam_new, mu, dt


# --------------------------------------------------------------------------------------
# The interpolating adjoint on a checkpointed interpolant.


class _RecordingController(diffrax.AbstractStepSizeController):
    """Wraps the forward controller to store the loop state every `every` step attempts.

    The state is `(inner state, attempts so far, records)`, where record c holds what the
    attempt number c * every started from: (y, tprev, tnext, inner controller state). The
    controller sees every attempt, accepted or not, which the solver state does not; and
    from a record a re-run of the loop with the same controller takes the same steps (the
    solver state is rebuilt by `solver.init`, which for the FSAL Runge-Kutta solvers is the
    same first stage).
    """

    controller: diffrax.AbstractStepSizeController
    every: int = eqx.field(static=True)

    def wrap(self, direction):
        return _RecordingController(self.controller.wrap(direction), self.every)

    def init(self, terms, t0, t1, y0, dt0, args, func, error_order):
        raise AssertionError("the recorded solve starts from a state built in `_forward`")

    def adapt_step_size(self, t0, t1, y0, y1_candidate, args, y_error, error_order, state):
        inner, attempts, records = state
        slot = attempts // self.every
        write = attempts % self.every == 0
        record = (y0, t0, t1, inner)

        def put(buffer, x):
            i = jnp.minimum(slot, buffer.shape[0] - 1)
            return buffer.at[i].set(jnp.where(write, jnp.asarray(x, buffer.dtype), buffer[i]))

        records = jtu.tree_map(put, records, record)
        out = self.controller.adapt_step_size(
            t0, t1, y0, y1_candidate, args, y_error, error_order, inner
        )
        keep, tprev, tnext, made_jump, inner, result = out
        return keep, tprev, tnext, made_jump, (inner, attempts + 1, records), result


class CheckpointedInterpolatingDiffraxAdjoint(InterpolatingDiffraxAdjoint):
    """The backward pass of `InterpolatingAdjoint(checkpoints=k)`: the forward pass stores the
    loop state every ceil(max_steps / k) step attempts; the backward pass re-solves each
    segment forwards from its record, with the dense interpolant of that segment only, then
    integrates (lam, mu) back over the segment. Memory: k states plus one segment's
    interpolant, instead of max_steps interpolation records."""

    checkpoints: int = eqx.field(static=True, kw_only=True)

    def _segment(self, max_steps: int) -> int:
        return -(-max_steps // self.checkpoints)

    def _forward(
        self, *, y0, args, terms, init_state, saveat, max_steps, stepsize_controller, **kwargs
    ):
        every = self._segment(max_steps)
        count = -(-max_steps // every)
        record = (y0, init_state.tprev, init_state.tnext, init_state.controller_state)
        records = jtu.tree_map(
            lambda x: jnp.zeros((count,) + jnp.shape(x), jnp.result_type(x)), record
        )
        controller_state = (init_state.controller_state, jnp.asarray(0, jnp.int32), records)
        init2 = eqx.tree_at(lambda s: s.controller_state, init_state, controller_state)
        final_state, aux = self._run(
            y0=y0,
            args=args,
            terms=terms,
            init_state=init2,
            saveat=saveat,
            max_steps=max_steps,
            stepsize_controller=_RecordingController(stepsize_controller, every),
            **kwargs,
        )
        inner, attempts, records = final_state.controller_state
        final_state = eqx.tree_at(lambda s: s.controller_state, final_state, inner)
        residuals = (records, attempts, final_state.tprev)
        return final_state, aux, residuals

    def _resolve(self, record, *, args, terms, solver, stepsize_controller, t1, every, kwargs):
        """The dense interpolant of one segment, re-solved forwards from its record."""
        y, tprev, tnext, controller_state = record
        _, _, info, _, _ = eqx.filter_eval_shape(
            solver.step, terms, tprev, tnext, y, args, solver.init(terms, tprev, tnext, y, args),
            False,
        )  # fmt: skip
        time_dtype = jnp.result_type(tprev)
        state = State(
            y=y,
            tprev=tprev,
            tnext=tnext,
            made_jump=False,
            solver_state=solver.init(terms, tprev, tnext, y, args),
            controller_state=controller_state,
            progress_meter_state=kwargs["progress_meter"].init(),
            result=diffrax.RESULTS.successful,
            num_steps=0,
            num_accepted_steps=0,
            num_rejected_steps=0,
            save_state=SaveState(
                saveat_ts_index=0,
                ts=jnp.full(1, jnp.inf, dtype=time_dtype),
                ys=jnp.zeros((1, 0), time_dtype),
                save_index=0,
            ),
            dense_ts=jnp.full(every + 1, jnp.inf, dtype=time_dtype),
            dense_infos=jtu.tree_map(lambda x: jnp.zeros((every,) + x.shape, x.dtype), info),
            dense_save_index=0,
            event_tprev=None,
            event_tnext=None,
            event_dense_info=None,
            event_values=None,
            event_mask=None,
        )
        saveat = diffrax.SaveAt(subs=diffrax.SubSaveAt(t1=True, fn=_no_output), dense=True)
        final, _ = self._loop(
            solver=solver,
            stepsize_controller=stepsize_controller,
            event=None,
            saveat=saveat,
            t0=tprev,
            t1=t1,
            dt0=kwargs["dt0"],
            max_steps=every,
            terms=terms,
            args=args,
            init_state=state,
            inner_while_loop=_lax_loop,
            outer_while_loop=_lax_loop,
            progress_meter=kwargs["progress_meter"],
        )
        return diffrax.DenseInterpolation(
            ts=final.dense_ts,
            ts_size=final.dense_save_index + 1,
            infos=final.dense_infos,
            interpolation_cls=solver.interpolation_cls,
            direction=1,
            t0_if_trivial=tprev,
            y0_if_trivial=y,
        )

    def _backward(
        self,
        residuals,
        grads,
        *,
        y0,
        args,
        terms,
        solver,
        saveat,
        t0,
        t1,
        dt0,
        max_steps,
        stepsize_controller,
        **kwargs,
    ):
        records, attempts, t_end = residuals
        g0, gts, g1 = grads
        every = self._segment(max_steps)
        diff_p, static_p = eqx.partition((args, terms), eqx.is_inexact_array)
        ts = saveat.subs.ts
        has_ts = ts is not None
        resolve = ft.partial(
            self._resolve,
            args=args,
            terms=terms,
            solver=solver,
            stepsize_controller=stepsize_controller,
            t1=t1,
            every=every,
            kwargs={**kwargs, "dt0": dt0},
        )

        adaptive = isinstance(self.controller, diffrax.AbstractAdaptiveStepSizeController)

        def segment(carry):
            c, lam, mu, tau, j, dt = carry
            record = jtu.tree_map(lambda r: r[c], records)
            lo = record[1]
            field = _AdjointField(resolve(record), diff_p, static_p)

            # Outputs in (lo, tau], latest first, then down to lo: one nested solve, traced
            # once, per piece.
            def piece(inner):
                lam, mu, tau, j, _, dt = inner
                if has_ts:
                    out = (j >= 0) & (ts[jnp.maximum(j, 0)] > lo)
                    stop = jnp.where(out, ts[jnp.maximum(j, 0)], lo).astype(tau.dtype)
                else:
                    out = jnp.asarray(False)
                    stop = jnp.asarray(lo, tau.dtype)
                lam, mu, dt = self._integrate(
                    field, lam, mu, tau, stop, solver=solver, dt0=dt, max_steps=max_steps,
                    dense=None,
                )  # fmt: skip
                if has_ts:
                    g = jtu.tree_map(lambda x: x[jnp.maximum(j, 0)], gts)
                    lam = _combine((1, lam), (jnp.where(out, 1.0, 0.0), g))
                return lam, mu, stop, j - out.astype(j.dtype), ~out, dt

            lam, mu, tau, j, _, dt = lax.while_loop(
                lambda inner: ~inner[4], piece, (lam, mu, tau, j, jnp.asarray(False), dt)
            )
            return c - 1, lam, mu, tau, j, dt

        lam = _zeros_like(y0) if g1 is None else g1
        mu = _zeros_like(diff_p)
        segments = -(-attempts // every)
        j0 = jnp.asarray(len(ts) - 1 if has_ts else -1)
        time_dtype = jnp.result_type(t_end)
        if adaptive:
            # The last recorded step attempt: the backward pass starts on its time scale.
            last = jnp.maximum(segments - 1, 0)
            dt = jnp.asarray(records[2][last] - records[1][last], time_dtype)
        else:
            dt = jnp.asarray(dt0, time_dtype)
        carry = (segments - 1, lam, mu, jnp.asarray(t_end), j0, dt)
        _, lam, mu, _, j, _ = lax.while_loop(lambda c: c[0] >= 0, segment, carry)
        if has_ts:
            # Outputs at t0 (or of a solve without steps) are y0 itself.
            mask = jnp.arange(len(ts)) <= j
            lam = jtu.tree_map(
                lambda yb, g: yb + jnp.tensordot(mask.astype(g.dtype), g, axes=1), lam, gts
            )
        if g0 is not None:
            lam = _add(lam, g0)
        args_bar, terms_bar = mu
        return lam, args_bar, terms_bar
