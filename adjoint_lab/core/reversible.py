"""Algebraically reversible ODE solvers: the forward step has an exact closed-form inverse.

`Reversible(solver)` turns an explicit Runge-Kutta solver into a reversible one (McCallum and
Foster 2024); `ReversibleHeun()` is the reversible Heun method (Kidger et al. 2021). Both are
ordinary `diffrax.AbstractSolver`s (they run with any gradient method), and both implement
`reverse_step`, which `ReversibleAdjoint` uses to rebuild each state from the next one and
backpropagate through the step without having stored it.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import PyTree

__all__ = ["AbstractReversibleSolver", "Reversible", "ReversibleHeun"]

# velocity(t, y) -> dy/dt, in the solve's (direction-normalised) time.
Velocity = Callable[[Any, PyTree], PyTree]


def _combine(*pairs: tuple[Any, PyTree]) -> PyTree:
    """sum_i c_i * tree_i, with every scalar cast to the leaf's dtype (so float32 stays float32
    when the times are float64)."""
    trees = [tree for _, tree in pairs]

    def leaf(*xs):
        out = None
        for (c, _), x in zip(pairs, xs, strict=True):
            term = x if (isinstance(c, int | float) and c == 1) else jnp.asarray(c, x.dtype) * x
            out = term if out is None else out + term
        return out

    return jtu.tree_map(leaf, *trees)


def _add(a: PyTree, b: PyTree) -> PyTree:
    return jtu.tree_map(jnp.add, a, b)


def _velocity_of(terms, args) -> Velocity:
    """The velocity dy/dt of a (possibly `WrapTerm`-wrapped) `ODETerm` in the solve's time."""
    direction = getattr(terms, "direction", 1)

    def velocity(t, y):
        vf = terms.vf(t, y, args)
        return jtu.tree_map(lambda v: (v * direction).astype(v.dtype), vf)

    return velocity


class _Tableau(eqx.Module):
    """An explicit Runge-Kutta tableau as Python floats (static)."""

    a: tuple[tuple[float, ...], ...] = eqx.field(static=True)
    b: tuple[float, ...] = eqx.field(static=True)
    b_error: tuple[float, ...] | None = eqx.field(static=True)
    c: tuple[float, ...] = eqx.field(static=True)

    @property
    def solution_stages(self) -> int:
        return max(i for i, b in enumerate(self.b) if b != 0) + 1

    @property
    def error_stages(self) -> int:
        if self.b_error is None:
            return self.solution_stages
        last = max(i for i, b in enumerate(self.b_error) if b != 0) + 1
        return max(last, self.solution_stages)

    def increment(self, velocity: Velocity, t, y, h, *, error: bool):
        """h * sum_i b_i k_i (and the embedded error estimate), evaluating only the stages
        that these need."""
        stages = (
            self.error_stages if (error and self.b_error is not None) else (self.solution_stages)
        )
        ks = []
        for i in range(stages):
            if i == 0:
                yi = y
            else:
                pairs = [(h * a, k) for a, k in zip(self.a[i - 1], ks, strict=False) if a != 0]
                yi = _combine((1, y), *pairs) if pairs else y
            ks.append(velocity(t + self.c[i] * h, yi))
        incr = _combine(*[(h * b, k) for b, k in zip(self.b, ks, strict=False) if b != 0])
        if not error or self.b_error is None:
            return incr, None
        err = _combine(*[(h * e, k) for e, k in zip(self.b_error, ks, strict=False) if e != 0])
        return incr, err

    def _stage_inputs(self) -> np.ndarray:
        """The solution stages' coefficients as a matrix: stage i's input is
        y + h sum_j A[i, j] k_j."""
        s = self.solution_stages
        a = np.zeros((s, s))
        for i in range(1, s):
            for j, coefficient in enumerate(self.a[i - 1][:i]):
                a[i, j] = coefficient
        return a

    def increment_with_stages(self, velocity: Velocity, t, y, h) -> tuple[PyTree, PyTree]:
        """h * sum_i b_i k_i and the solution stages k_i, stacked on a leading axis (for
        `increment_vjp`)."""
        a = self._stage_inputs()
        ks = []
        for i in range(self.solution_stages):
            pairs = [(h * float(a[i, j]), ks[j]) for j in range(i) if a[i, j] != 0]
            ks.append(velocity(t + self.c[i] * h, _combine((1, y), *pairs) if pairs else y))
        incr = _combine(*[(h * b, k) for b, k in zip(self.b, ks, strict=False) if b != 0])
        return incr, jtu.tree_map(lambda *k: jnp.stack(k), *ks)

    def increment_vjp(self, velocity_p, params, t, y, h, stages, incr_bar):
        """The cotangents `(y_bar, params_bar)` of `increment(t, y, h)` for its cotangent
        `incr_bar`, given the `stages` of `increment_with_stages`.

        One stage's VJP at a time, last stage first, in a `lax.scan`: each VJP re-evaluates
        its stage, so only one stage's residuals and backward temporaries exist at once.
        Differentiating the unrolled stages instead lets XLA keep all of them alive: 4x the
        memory of one stage's VJP on the C-NODE image field (experiments/ode_adjoints.py).
        """
        s = self.solution_stages
        a = self._stage_inputs()
        b = np.asarray(self.b[:s])
        c = np.asarray(self.c[:s])

        def scaled(weights, x):
            # weights (s,) times x: (s, *x.shape), in x's dtype.
            w = (h * jnp.asarray(weights)).astype(x.dtype)
            return w.reshape((-1,) + (1,) * x.ndim) * x[None]

        def body(carry, row):
            stages_bar, y_bar, p_bar = carry
            i, a_i, c_i = row
            y_i = jtu.tree_map(
                lambda y_, k: y_ + jnp.tensordot((h * a_i).astype(k.dtype), k, axes=1), y, stages
            )
            _, vjp = jax.vjp(lambda z, p: velocity_p(t + c_i * h, z, p), y_i, params)
            y_i_bar, dp = vjp(jtu.tree_map(lambda g: g[i], stages_bar))
            # y_i = y + h sum_j a_ij k_j: its cotangent flows to y and to the earlier stages.
            stages_bar = jtu.tree_map(lambda g, yb: g + scaled(a_i, yb), stages_bar, y_i_bar)
            return (stages_bar, _add(y_bar, y_i_bar), _add(p_bar, dp)), None

        stages_bar = jtu.tree_map(lambda g: scaled(b, g), incr_bar)
        init = (stages_bar, jtu.tree_map(jnp.zeros_like, y), jtu.tree_map(jnp.zeros_like, params))
        rows = (jnp.arange(s), jnp.asarray(a), jnp.asarray(c))
        (_, y_bar, p_bar), _ = jax.lax.scan(body, init, rows, reverse=True)
        return y_bar, p_bar


_REVERSIBLE_NAMES = "`adjoint_lab.core.Reversible(diffrax.Tsit5())` (any explicit Runge-Kutta "
_REVERSIBLE_NAMES += "solver inside) or `adjoint_lab.core.ReversibleHeun()`"


def _tableau_of(solver: diffrax.AbstractSolver) -> _Tableau:
    if isinstance(solver, diffrax.Euler):
        return _Tableau(a=(), b=(1.0,), b_error=None, c=(0.0,))
    tableau = getattr(solver, "tableau", None)
    if (
        isinstance(solver, diffrax.AbstractRungeKutta)
        and isinstance(tableau, diffrax.ButcherTableau)
        and not tableau.implicit
    ):
        return _Tableau(
            a=tuple(tuple(float(x) for x in np.asarray(row)) for row in tableau.a_lower),
            b=tuple(float(x) for x in np.asarray(tableau.b_sol)),
            b_error=tuple(float(x) for x in np.asarray(tableau.b_error)),
            c=(float(tableau.c1),) + tuple(float(x) for x in np.asarray(tableau.c)),
        )
    raise ValueError(
        f"`Reversible({type(solver).__name__}(...))`: the solver made reversible must be an "
        "explicit Runge-Kutta solver with a Butcher tableau, e.g. `diffrax.Euler()`, "
        "`diffrax.Heun()`, `diffrax.Midpoint()`, `diffrax.Ralston()`, `diffrax.Bosh3()`, "
        "`diffrax.Tsit5()`, `diffrax.Dopri5()` or `diffrax.Dopri8()`. Implicit, IMEX and SDE "
        "solvers cannot be made reversible this way."
    )


class AbstractReversibleSolver(diffrax.AbstractSolver):
    """An ODE solver whose step map (y_n, s_n) -> (y_{n+1}, s_{n+1}) has a closed-form inverse.

    `s` is the solver state (an auxiliary copy of the solution). Subclasses implement the
    step as `forward_map` and its inverse-and-backpropagate as `reverse_step`, both in terms
    of a velocity function, so that `ReversibleAdjoint` can rebuild every state backwards.
    Outputs between steps (`SaveAt(ts=...)`) are linear interpolations of the two ends of the
    step, so that their gradient needs no stored state either.
    """

    term_structure: ClassVar = diffrax.ODETerm
    interpolation_cls: ClassVar = diffrax.LocalLinearInterpolation

    @abc.abstractmethod
    def initial_state(self, velocity: Velocity, t0, y0: PyTree) -> PyTree:
        """The solver state at the start of the solve."""

    @abc.abstractmethod
    def forward_map(
        self, velocity: Velocity, t0, t1, y0, s0, *, error: bool = False
    ) -> tuple[PyTree, PyTree, PyTree | None]:
        """One step: returns `(y1, s1, error estimate or None)`."""

    @abc.abstractmethod
    def inverse_map(self, velocity: Velocity, t0, t1, y1, s1) -> tuple[PyTree, PyTree]:
        """The exact inverse of `forward_map` (up to rounding): returns `(y0, s0)`."""

    def reverse_step(self, velocity_p, params, t0, t1, y1, s1, y1_bar, s1_bar):
        """Rebuild `(y0, s0)` from `(y1, s1)` and pull the cotangents back through the step.

        **Arguments:**

        - `velocity_p`: `velocity_p(t, y, params) -> dy/dt`.
        - `params`: the differentiable parameters (a pytree of arrays).
        - `t0`, `t1`: the step.
        - `y1`, `s1`: the state after the step.
        - `y1_bar`, `s1_bar`: cotangents of `y1`, `s1`.

        **Returns:**

        `(y0, s0, y0_bar, s0_bar, params_bar)`.

        The default rebuilds the state with `inverse_map` and then differentiates
        `forward_map`; subclasses override it to share evaluations between the two.
        """
        y0, s0 = self.inverse_map(lambda t, y: velocity_p(t, y, params), t0, t1, y1, s1)

        def step(y, s, p):
            y_, s_, _ = self.forward_map(lambda t, yy: velocity_p(t, yy, p), t0, t1, y, s)
            return y_, s_

        _, vjp = jax.vjp(step, y0, s0, params)
        y0_bar, s0_bar, p_bar = vjp((y1_bar, s1_bar))
        return y0, s0, y0_bar, s0_bar, p_bar

    # The diffrax solver interface.

    def init(self, terms, t0, t1, y0, args):
        del t1
        return self.initial_state(_velocity_of(terms, args), t0, y0)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        del made_jump
        y1, s1, err = self.forward_map(
            _velocity_of(terms, args), t0, t1, y0, solver_state, error=True
        )
        return y1, err, dict(y0=y0, y1=y1), s1, diffrax.RESULTS.successful

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)


class Reversible(AbstractReversibleSolver):
    """Make an explicit Runge-Kutta solver algebraically reversible (McCallum and Foster 2024).

    With the base solver's increment Psi_h(t, y) (a step of size h is y + Psi_h(t, y)), the
    method carries a second state z (z_0 = y_0) and steps

        y_{n+1} = lam y_n + (1 - lam) z_n + Psi_h(t_n, z_n)
        z_{n+1} = z_n - Psi_{-h}(t_{n+1}, y_{n+1}),

    which inverts in closed form:

        z_n = z_{n+1} + Psi_{-h}(t_{n+1}, y_{n+1})
        y_n = (y_{n+1} - (1 - lam) z_n - Psi_h(t_n, z_n)) / lam.

    It keeps the order of the base solver; `lam < 1` makes it stable (the paper's choice is
    close to 1), but the inverse divides by lam, so rounding errors of the rebuilt states
    grow by up to 1/lam per step backwards: keep lam close to 1 (0.5 loses all digits of a
    float64 state within ~50 steps). A step costs two base steps: the forward one with the
    base solver's error estimate (all its stages; for adaptive steps) and the backward one
    without (e.g. 7 + 6 evaluations for Tsit5).

    **Arguments:**

    - `solver`: an explicit Runge-Kutta `diffrax` solver, e.g. `diffrax.Tsit5()`.
    - `coupling`: lam, in (0, 1]. Default 0.999.

    ??? cite "References"

        McCallum and Foster, "Efficient, Accurate and Stable Gradients for Neural ODEs",
        arXiv:2410.11648, 2024.
    """

    solver: diffrax.AbstractSolver = eqx.field(static=True)
    coupling: float = eqx.field(default=0.999, static=True)

    def __check_init__(self):
        _tableau_of(self.solver)
        c = self.coupling
        if isinstance(c, bool) or not isinstance(c, int | float) or not 0 < c <= 1:
            raise ValueError(
                f"`Reversible(coupling={c!r})`: `coupling` must be a float in (0, 1] "
                "(1 is the leapfrog-like limit, which is not stable; 0.999 is the default)."
            )

    @property
    def _tableau(self) -> _Tableau:
        return _tableau_of(self.solver)

    def order(self, terms):
        return self.solver.order(terms)

    def error_order(self, terms):
        return self.solver.error_order(terms)

    def initial_state(self, velocity, t0, y0):
        del velocity, t0
        return y0

    def forward_map(self, velocity, t0, t1, y0, s0, *, error=False):
        lam = self.coupling
        h = t1 - t0
        a, err = self._tableau.increment(velocity, t0, s0, h, error=error)
        y1 = _combine((lam, y0), (1 - lam, s0), (1, a))
        b, _ = self._tableau.increment(velocity, t1, y1, -h, error=False)
        s1 = _combine((1, s0), (-1, b))
        return y1, s1, err

    def inverse_map(self, velocity, t0, t1, y1, s1):
        lam = self.coupling
        h = t1 - t0
        b, _ = self._tableau.increment(velocity, t1, y1, -h, error=False)
        s0 = _add(s1, b)
        a, _ = self._tableau.increment(velocity, t0, s0, h, error=False)
        y0 = _combine((1 / lam, y1), (-(1 - lam) / lam, s0), (-1 / lam, a))
        return y0, s0

    def reverse_step(self, velocity_p, params, t0, t1, y1, s1, y1_bar, s1_bar):
        # Two base steps, each differentiated once, one stage at a time (`increment_vjp`).
        lam = self.coupling
        h = t1 - t0
        tab = self._tableau

        def velocity(t, y):
            return velocity_p(t, y, params)

        # s1 = s0 - b(y1), so b_bar = -s1_bar is known before a is formed.
        b, stages_b = tab.increment_with_stages(velocity, t1, y1, -h)
        y1_from_b, p_from_b = tab.increment_vjp(
            velocity_p, params, t1, y1, -h, stages_b, jtu.tree_map(jnp.negative, s1_bar)
        )
        s0 = _add(s1, b)
        y1_total = _add(y1_bar, y1_from_b)
        # y1 = lam y0 + (1 - lam) s0 + a(s0)
        a, stages_a = tab.increment_with_stages(velocity, t0, s0, h)
        y0 = _combine((1 / lam, y1), (-(1 - lam) / lam, s0), (-1 / lam, a))
        s0_from_a, p_from_a = tab.increment_vjp(velocity_p, params, t0, s0, h, stages_a, y1_total)
        y0_bar = _combine((lam, y1_total))
        s0_bar = _combine((1, s1_bar), (1 - lam, y1_total), (1, s0_from_a))
        return y0, s0, y0_bar, s0_bar, _add(p_from_b, p_from_a)


class ReversibleHeun(AbstractReversibleSolver):
    """The reversible Heun method (Kidger, Foster, Li and Lyons 2021), for ODEs.

    Carries yhat (yhat_0 = y_0) and the cached velocity v = f(t, yhat), and steps

        yhat_{n+1} = 2 y_n - yhat_n + h v_n,    v_{n+1} = f(t_{n+1}, yhat_{n+1})
        y_{n+1} = y_n + h (v_n + v_{n+1}) / 2,

    which inverts with one evaluation: yhat_n = 2 y_{n+1} - yhat_{n+1} - h v_{n+1},
    v_n = f(t_n, yhat_n), y_n = y_{n+1} - h (v_n + v_{n+1}) / 2. Second order, one
    evaluation per step (plus one at the start); the embedded error estimate is
    h (v_{n+1} - v_n) / 2. Unlike `diffrax.ReversibleHeun`, it can be used with
    `ReversibleAdjoint`.

    ??? cite "References"

        Kidger, Foster, Li and Lyons, "Efficient and Accurate Gradients for Neural SDEs",
        NeurIPS 2021.
    """

    def order(self, terms):
        return 2

    def initial_state(self, velocity, t0, y0):
        return y0, velocity(t0, y0)

    def forward_map(self, velocity, t0, t1, y0, s0, *, error=False):
        yhat0, v0 = s0
        h = t1 - t0
        yhat1 = _combine((2, y0), (-1, yhat0), (h, v0))
        v1 = velocity(t1, yhat1)
        y1 = _combine((1, y0), (h / 2, v0), (h / 2, v1))
        err = _combine((h / 2, v1), (-h / 2, v0)) if error else None
        return y1, (yhat1, v1), err

    def inverse_map(self, velocity, t0, t1, y1, s1):
        yhat1, v1 = s1
        h = t1 - t0
        yhat0 = _combine((2, y1), (-1, yhat1), (-h, v1))
        v0 = velocity(t0, yhat0)
        y0 = _combine((1, y1), (-h / 2, v0), (-h / 2, v1))
        return y0, (yhat0, v0)

    def reverse_step(self, velocity_p, params, t0, t1, y1, s1, y1_bar, s1_bar):
        yhat1, v1 = s1
        yhat1_bar, v1_bar = s1_bar
        h = t1 - t0
        y0, s0 = self.inverse_map(lambda t, y: velocity_p(t, y, params), t0, t1, y1, s1)
        # v1 = f(yhat1) was computed inside the step: pull its cotangent back to yhat1.
        v1_total = _combine((1, v1_bar), (h / 2, y1_bar))
        _, vjp = jax.vjp(lambda y, p: velocity_p(t1, y, p), yhat1, params)
        yhat1_from_v, p_bar = vjp(v1_total)
        yhat1_total = _add(yhat1_bar, yhat1_from_v)
        y0_bar = _combine((1, y1_bar), (2, yhat1_total))
        yhat0_bar = _combine((-1, yhat1_total))
        v0_bar = _combine((h, yhat1_total), (h / 2, y1_bar))
        return y0, s0, y0_bar, (yhat0_bar, v0_bar), p_bar
