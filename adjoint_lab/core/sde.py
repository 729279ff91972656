"""`solve_sde`: an SDE solve through diffrax, driven by a Brownian path of stored increments.

The Brownian motion is not drawn inside the solve: `BrownianIncrements` holds the increments
dW_k on a fixed time grid, and the solver takes exactly one step per increment. So the
Euler-Maruyama solution (`diffrax.Euler()` on `MultiTerm(ODETerm(drift), ControlTerm(diffusion,
brownian))`) is a deterministic, differentiable function of those increments, and any other
estimator that reads the same increments (a Girsanov re-weighting of base paths, say) shares
its random numbers by construction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.core
import jax.extend.core as jex_core
import jax.numpy as jnp
import lineax as lx
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray, PyTree, Real

from .gradients import AbstractGradientMethod, BacksolveAdjoint, CheckpointedBackprop
from .ode import Solution, resolve_saveat

__all__ = ["BrownianIncrements", "DiagonalDiffusion", "solve_sde"]

# Times within this fraction of a step of a grid point are on the grid (the solver's
# times accumulate rounding errors of a few ulps per step).
_GRID_TOLERANCE = 1e-3

_EULER = diffrax.Euler()
_CHECKPOINTED = CheckpointedBackprop()


def _is_traced(x: object) -> bool:
    return isinstance(x, jax.core.Tracer)


class BrownianIncrements(diffrax.AbstractPath):
    """A Brownian path given by stored increments on a uniform time grid.

    The grid is t_k = t0 + k (t1 - t0) / n_steps, k = 0..n_steps, and `increments[k]` is
    W(t_{k+1}) - W(t_k). `evaluate(s, u)` returns W(u) - W(s), the sum of the increments
    between two grid points (the stored increment itself over one step, so Euler-Maruyama
    adds exactly `increments[k]`); with `u < s` it is the negated sum, which is what the
    backward solve of `BacksolveAdjoint` replays. Times off the grid are refused at run
    time: the path holds no information between grid points, so a solver stepping there
    (a `dt0` that is not a multiple of the grid step) would see a wrong Brownian motion.

    A `BrownianIncrements` is a `diffrax.AbstractPath` (a control), not a
    `diffrax.AbstractBrownianPath`: diffrax treats the solve as a controlled differential
    equation, which is exact here because the path is fixed.

    **Arguments:**

    - `increments`: shape `(n_steps, *shape)`: the increments of a `shape`-valued path.
        Their variance is not checked: standard Brownian increments have variance
        `(t1 - t0) / n_steps`; see `BrownianIncrements.sample`.
    - `t0`, `t1`: the ends of the grid, `t0 < t1`.
    """

    increments: Float[Array, "n_steps *shape"]
    values: Float[Array, "n_steps+1 *shape"]
    t0: Real[Array, ""]
    t1: Real[Array, ""]

    def __init__(
        self,
        increments: Float[ArrayLike, "n_steps *shape"],
        *,
        t0: Real[ArrayLike, ""] = 0.0,
        t1: Real[ArrayLike, ""],
    ):
        increments = jnp.asarray(increments)
        if not jnp.issubdtype(increments.dtype, jnp.floating):
            increments = increments.astype(jnp.result_type(float))
        if increments.ndim < 1 or increments.shape[0] < 1:
            raise ValueError(
                "`BrownianIncrements(increments=...)`: `increments` must have shape "
                "(n_steps, *shape) with n_steps >= 1, one row per step of the time grid; got "
                f"shape {increments.shape}. For a scalar Brownian motion pass shape "
                "(n_steps,); for several paths build one `BrownianIncrements` per path "
                "(e.g. inside `jax.vmap`)."
            )
        t0 = jnp.asarray(t0, increments.dtype)
        t1 = jnp.asarray(t1, increments.dtype)
        if t0.shape != () or t1.shape != ():
            raise ValueError(
                f"`BrownianIncrements`: `t0` and `t1` must be scalars; got shapes {t0.shape} "
                f"and {t1.shape}."
            )
        if not (_is_traced(t0) or _is_traced(t1)) and not bool(t1 > t0):
            raise ValueError(
                f"`BrownianIncrements(t0={float(t0)!r}, t1={float(t1)!r})`: need t0 < t1 "
                "(the grid runs forwards; a backward solve from t1 to t0 reads the same path)."
            )
        self.increments = increments
        zero = jnp.zeros_like(increments[:1])
        self.values = jnp.concatenate([zero, jnp.cumsum(increments, axis=0)], axis=0)
        self.t0 = t0
        self.t1 = t1

    @classmethod
    def sample(
        cls,
        key: PRNGKeyArray,
        *,
        t0: Real[ArrayLike, ""] = 0.0,
        t1: Real[ArrayLike, ""],
        n_steps: int,
        shape: tuple[int, ...] = (),
        dtype: Any = None,
    ) -> BrownianIncrements:
        """Standard Brownian increments, each of variance (t1 - t0) / n_steps.

        **Arguments:**

        - `key`: a JAX PRNG key.
        - `t0`, `t1`: the ends of the grid.
        - `n_steps`: the number of steps, an int >= 1.
        - `shape`: the shape of the path's value; default scalar.
        - `dtype`: a floating dtype; default JAX's default float.

        **Returns:**

        A `BrownianIncrements` with increments of shape `(n_steps, *shape)`.
        """
        if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
            raise ValueError(
                f"`BrownianIncrements.sample(n_steps={n_steps!r})`: `n_steps` must be a "
                "Python int >= 1 (it sets the shape of the increments)."
            )
        dtype = jnp.result_type(float) if dtype is None else dtype
        dt = (jnp.asarray(t1, dtype) - jnp.asarray(t0, dtype)) / n_steps
        increments = jnp.sqrt(dt) * jax.random.normal(key, (n_steps, *shape), dtype)
        return cls(increments, t0=t0, t1=t1)

    @property
    def n_steps(self) -> int:
        return self.increments.shape[0]

    @property
    def shape(self) -> tuple[int, ...]:
        return self.increments.shape[1:]

    @property
    def dt(self) -> Real[Array, ""]:
        """The grid step (t1 - t0) / n_steps."""
        return (self.t1 - self.t0) / self.n_steps

    @property
    def times(self) -> Real[Array, " n_times"]:
        """The grid t0 < t1 < ... < t_{n_steps} = t1: n_times = n_steps + 1 points (the
        annotation cannot say so: a method binds no axis of `self`)."""
        k = jnp.arange(self.n_steps + 1, dtype=self.increments.dtype)
        times = self.t0 + (self.t1 - self.t0) * k / self.n_steps
        # The ends exactly, whatever the rounding: diffrax checks saved times against them.
        return times.at[0].set(self.t0).at[-1].set(self.t1)

    def _grid_index(self, t: Real[ArrayLike, ""]) -> Array:
        position = (jnp.asarray(t, self.increments.dtype) - self.t0) / self.dt
        index = jnp.round(position)
        off_grid = (jnp.abs(position - index) > _GRID_TOLERANCE) | (index < 0)
        off_grid = off_grid | (index > self.n_steps)
        index = eqx.error_if(
            index,
            off_grid,
            "`BrownianIncrements.evaluate` was asked for a time that is not on its grid "
            "t_k = t0 + k (t1 - t0) / n_steps, k = 0..n_steps: the stored increments say "
            "nothing about the path between grid points. Step on the grid: use "
            "`adjoint_lab.core.solve_sde` (one step per increment), or give the solver a dt0 "
            "that is a multiple of the grid step `path.dt`, with t0, t1 on the grid.",
        )
        return index.astype(jnp.int32)

    def evaluate(
        self,
        t0: Real[ArrayLike, ""],
        t1: Real[ArrayLike, ""] | None = None,
        left: bool = True,
    ) -> Float[Array, " *shape"]:
        """W(t0), or the increment W(t1) - W(t0), with W(grid t0) = 0.

        **Arguments:**

        - `t0`: a grid time.
        - `t1`: a grid time, or `None` for the value at `t0`.
        - `left`: unused (the path is continuous).

        **Returns:**

        An array of the path's `shape`.
        """
        del left
        i = self._grid_index(t0)
        if t1 is None:
            return self.values[i]
        j = self._grid_index(t1)
        lo, hi = jnp.minimum(i, j), jnp.maximum(i, j)
        # One step: the stored increment itself, not a difference of partial sums, so the
        # solver adds exactly the numbers other estimators read.
        one_step = self.increments[jnp.clip(lo, 0, self.n_steps - 1)]
        total = jnp.where(hi - lo == 1, one_step, self.values[hi] - self.values[lo])
        return jnp.where(j >= i, total, -total)


class DiagonalDiffusion(eqx.Module):
    """A diagonal diffusion sigma(t, y, args) * dW (elementwise), for `solve_sde`.

    Wraps the diagonal as a `lineax.DiagonalLinearOperator`, which diffrax's `ControlTerm`
    multiplies with the increment elementwise instead of as a dense matrix.

    **Arguments:**

    - `sigma`: the diagonal: an array broadcastable to y's shape (a constant volatility,
        differentiable like any other array of the terms), or a callable
        `sigma(t, y, args)` returning such an array (any callable pytree, e.g. an equinox
        module, whose arrays are then differentiable too).
    """

    sigma: Float[Array, "..."] | Callable[..., Float[Array, "..."]]

    def __call__(self, t: Real[ArrayLike, ""], y: Float[Array, "..."], args: Any):
        sigma = self.sigma(t, y, args) if callable(self.sigma) else self.sigma
        return lx.DiagonalLinearOperator(jnp.broadcast_to(sigma, jnp.shape(y)).astype(y.dtype))


def _depends_on_input(fn: Callable[[Array], Any], y: Array) -> bool:
    """Whether any output of `fn` may depend on its input (conservatively, from its jaxpr:
    an equation with a dependent input makes all its outputs dependent)."""
    closed = jax.make_jaxpr(fn)(y)
    dependent = set(closed.jaxpr.invars)

    def hit(variables) -> bool:
        return any(isinstance(v, jex_core.Var) and v in dependent for v in variables)

    for eqn in closed.jaxpr.eqns:
        if hit(eqn.invars):
            dependent.update(eqn.outvars)
    return hit(closed.jaxpr.outvars)


def _check_noise_shape(diffusion, brownian: BrownianIncrements, y0, args) -> None:
    t = jax.ShapeDtypeStruct((), brownian.increments.dtype)
    out = eqx.filter_eval_shape(diffusion, t, y0, args)
    if not isinstance(y0, jax.Array | jax.ShapeDtypeStruct):
        return  # pytree states: the diffusion's own operator defines the contraction
    if isinstance(out, lx.AbstractLinearOperator):
        expected = out.in_structure()
        got, what = getattr(expected, "shape", None), "the operator's input"
    else:
        shape = getattr(out, "shape", None)
        if shape is None or shape[: y0.ndim] != y0.shape:
            raise ValueError(
                f"`solve_sde`: `diffusion(t, y, args)` must return an array of shape "
                f"y.shape + noise shape = {y0.shape} + {brownian.shape}, or a lineax linear "
                f"operator (e.g. `DiagonalDiffusion(sigma)` for diagonal noise); it returned "
                f"{shape if shape is not None else type(out).__name__}."
            )
        got, what = shape[y0.ndim :], "the diffusion matrix's trailing axes"
    if got != brownian.shape:
        raise ValueError(
            f"`solve_sde`: the Brownian increments have shape (n_steps, *shape) with shape "
            f"{brownian.shape}, but {what} expect {got}. Draw increments of shape "
            f"(n_steps, *{got}) (e.g. `BrownianIncrements.sample(key, t1=..., n_steps=..., "
            f"shape={got})`), or change `diffusion`."
        )


def solve_sde(
    drift: Callable[[Any, PyTree[Array], Any], PyTree[Array]],
    diffusion: Callable[[Any, PyTree[Array], Any], Any],
    brownian: BrownianIncrements,
    y0: PyTree[ArrayLike],
    args: PyTree[Any] = None,
    *,
    solver: diffrax.AbstractSolver = _EULER,
    gradient: AbstractGradientMethod = _CHECKPOINTED,
    saveat: diffrax.SaveAt | None = None,
    ts: Real[ArrayLike, " times"] | None = None,
) -> Solution:
    """Solve dy = drift(t, y, args) dt + diffusion(t, y, args) dW over the grid of `brownian`.

    The solver takes one step per stored increment, from `brownian.t0` to `brownian.t1`
    (constant steps of `brownian.dt`). With the default `diffrax.Euler()` this is
    Euler-Maruyama, y_{k+1} = y_k + drift(t_k, y_k) dt + diffusion(t_k, y_k) dW_k, with
    exactly the stored dW_k. Works under `jax.jit`, `jax.vmap` (e.g. over paths: build one
    `BrownianIncrements` per path inside the `vmap`) and `jax.grad`; reverse-mode gradients
    with respect to `y0`, `args` and the arrays inside `drift` and `diffusion` (the pathwise
    derivative at fixed noise) are computed as `gradient` says:

    - `CheckpointedBackprop`, `DirectBackprop`: the exact derivative of the discrete
        solution.
    - `BacksolveAdjoint`: the continuous adjoint, solved backwards over the same grid with
        the stored increments replayed in reverse. It is the adjoint of the Stratonovich
        SDE, which equals the Ito one when the noise is additive (diffusion independent of
        y); with an Ito solver such as `Euler` and a diffusion that depends on y it is
        refused. Its gradients approximate the discrete ones to O(dt) (compare
        `BacksolveAdjoint` on ODEs); arrays closed over by `drift`/`diffusion` get no
        gradient.

    **Arguments:**

    - `drift`: `drift(t, y, args) -> dy/dt`, y's structure.
    - `diffusion`: `diffusion(t, y, args)`: an array of shape `y.shape + noise shape`
        (contracted with dW), or a lineax linear operator applied to dW; for diagonal
        noise use `DiagonalDiffusion(sigma)`.
    - `brownian`: the `BrownianIncrements` that drive the solve.
    - `y0`: the initial state.
    - `args`: passed to `drift` and `diffusion`.
    - `solver`: a `diffrax.AbstractSolver` for SDEs; default `diffrax.Euler()`.
    - `gradient`: an `adjoint_lab.core.AbstractGradientMethod`, default
        `CheckpointedBackprop()`. Its `max_steps` must be at least `brownian.n_steps`.
    - `saveat`: a `diffrax.SaveAt`; default `SaveAt(t1=True)`.
    - `ts`: shorthand for `saveat=diffrax.SaveAt(ts=ts)`; `ts=brownian.times` saves the
        whole path on the grid.

    **Returns:**

    A `Solution` (`ts`, `ys`, and `stats` with `num_steps`, `num_accepted_steps`,
    `num_rejected_steps`).

    **Raises:**

    `TypeError`/`ValueError` for inconsistent arguments at trace time (noise shape against
    the increments, step budget, backsolve with multiplicative Ito noise); a runtime error
    (`equinox.EquinoxRuntimeError`, or JAX's under `jax.jit`) if the solver steps off the
    grid of the increments.
    """
    if not isinstance(brownian, BrownianIncrements):
        raise TypeError(
            f"`solve_sde(brownian={brownian!r})`: `brownian` must be an "
            "`adjoint_lab.core.BrownianIncrements`, e.g. "
            "`BrownianIncrements(increments, t0=0.0, t1=T)` or "
            "`BrownianIncrements.sample(key, t1=T, n_steps=..., shape=...)`."
        )
    if not isinstance(gradient, AbstractGradientMethod):
        raise TypeError(
            f"`solve_sde(gradient={gradient!r})`: `gradient` must be an "
            "`adjoint_lab.core.AbstractGradientMethod`, e.g. `CheckpointedBackprop()`, "
            "`BacksolveAdjoint()` or `DirectBackprop()`."
        )
    if not isinstance(solver, diffrax.AbstractSolver):
        raise TypeError(
            f"`solve_sde(solver={solver!r})`: `solver` must be a `diffrax.AbstractSolver` "
            "instance, e.g. `diffrax.Euler()` (note the parentheses)."
        )
    if gradient.max_steps < brownian.n_steps:
        raise ValueError(
            f"`solve_sde`: the increments have n_steps={brownian.n_steps} and the solve takes "
            f"one step per increment, but `gradient.max_steps={gradient.max_steps}`. Pass "
            f"`gradient={type(gradient).__name__}(..., max_steps={brownian.n_steps})` or more."
        )
    saveat = resolve_saveat("solve_sde", saveat, ts)
    y0 = jax.tree.map(jnp.asarray, y0)
    _check_noise_shape(diffusion, brownian, y0, args)
    if (
        isinstance(gradient, BacksolveAdjoint)
        and isinstance(solver, diffrax.AbstractItoSolver)
        and isinstance(y0, jax.Array)
        and _depends_on_input(lambda y: jax.tree.leaves(diffusion(brownian.t0, y, args)), y0)
    ):
        raise ValueError(
            f"`solve_sde(gradient=BacksolveAdjoint(...), solver={type(solver).__name__}())`: "
            "the continuous adjoint solves the Stratonovich adjoint SDE, which matches the Ito "
            f"solution of `{type(solver).__name__}` only for additive noise, but `diffusion` "
            "depends on y. Use `CheckpointedBackprop()` or `DirectBackprop()` (exact "
            "gradients of the Euler-Maruyama solution), or a Stratonovich solver such as "
            "`diffrax.Heun()`."
        )

    terms = diffrax.MultiTerm(diffrax.ODETerm(drift), diffrax.ControlTerm(diffusion, brownian))
    controller = diffrax.ConstantStepSize()
    sol = diffrax.diffeqsolve(
        terms,
        solver,
        brownian.t0,
        brownian.t1,
        brownian.dt,
        y0,
        args,
        saveat=saveat,
        stepsize_controller=controller,
        adjoint=gradient.to_diffrax(controller),
        max_steps=gradient.max_steps,
        throw=True,
    )
    stats = {
        name: jnp.asarray(sol.stats[name])
        for name in ("num_steps", "num_accepted_steps", "num_rejected_steps")
    }
    return Solution(ts=sol.ts, ys=sol.ys, stats=stats)
