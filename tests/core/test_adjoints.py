"""The reversible, interpolating, quadrature and Gauss adjoints (float64 unless stated).

The loss is that of `test_gradients.py`: one solve of a pytree state (linear, nonlinear), where
dy/dt = A y (A in `args`) has a closed form through `expm`, and the nonlinear part is a small
MLP vector field (an equinox module: gradients flow through the field's own arrays), saved at
two times (`SaveAt(ts=...)`). References: the closed form, central differences, and, for the
reversible method, backpropagation through the same discrete solve.
"""

from __future__ import annotations

import functools as ft

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxtyping import Array, Float

from adjoint_lab.core import (
    CheckpointedBackprop,
    GaussAdjoint,
    InterpolatingAdjoint,
    QuadratureAdjoint,
    Reversible,
    ReversibleAdjoint,
    ReversibleHeun,
    count_evaluations,
    finite_difference_grad,
    relative_error,
    solve,
)
from adjoint_lab.core.adjoints import _constant_grid

A = jnp.array([[-0.5, 1.0], [-1.0, -0.3]])
W = jnp.array([0.7, -1.3])
SAVE_TS = jnp.array([0.3, 0.5, 1.0])
Y0 = (
    jnp.array([[1.0, 0.5], [0.2, -0.4]]),
    jnp.array([[0.6, -0.8], [0.1, 0.4]]),
)


class MLP(eqx.Module):
    w1: Float[Array, "4 2"]
    b1: Float[Array, " 4"]
    w2: Float[Array, "2 4"]
    b2: Float[Array, " 2"]

    def __call__(self, t, y):
        return self.w2 @ jnp.tanh(self.w1 @ y + self.b1 * jnp.cos(t)) + self.b2


class Field(eqx.Module):
    mlp: MLP

    def __call__(self, t, y, a):
        linear, nonlinear = y
        return a @ linear, self.mlp(t, nonlinear)


def _field(dtype=jnp.float64) -> Field:
    rng = np.random.default_rng(0)
    mlp = MLP(
        w1=jnp.asarray(rng.normal(size=(4, 2)), dtype),
        b1=jnp.asarray(0.3 * rng.normal(size=4), dtype),
        w2=jnp.asarray(0.5 * rng.normal(size=(2, 4)), dtype),
        b2=jnp.asarray(0.1 * rng.normal(size=2), dtype),
    )
    return Field(mlp)


FIELD = _field()
PID = diffrax.PIDController(rtol=1e-9, atol=1e-11)

# name: (solver, controller, dt0, gradient, transform)
CASES = {
    "reversible-tsit5-constant": (
        Reversible(diffrax.Tsit5()),
        None,
        0.05,
        ReversibleAdjoint(max_steps=32),
        "vmap",
    ),
    "reversible-heun-pid": (
        ReversibleHeun(),
        diffrax.PIDController(rtol=1e-4, atol=1e-6),
        None,
        ReversibleAdjoint(max_steps=512),
        "sum",
    ),
    # Outputs between steps are linear interpolations: step to the saved times.
    "reversible-tsit5-pid": (
        Reversible(diffrax.Tsit5()),
        diffrax.ClipStepSizeController(diffrax.PIDController(rtol=1e-7, atol=1e-9), SAVE_TS),
        None,
        ReversibleAdjoint(max_steps=128),
        "vmap",
    ),
    "interpolating-pid": (diffrax.Tsit5(), PID, None, InterpolatingAdjoint(max_steps=128), "sum"),
    # Segments of 8 step attempts: several re-solved segments, saved times inside them.
    "interpolating-checkpointed-pid": (
        diffrax.Tsit5(),
        PID,
        None,
        InterpolatingAdjoint(checkpoints=16, max_steps=128),
        "sum",
    ),
    "quadrature-pid": (diffrax.Tsit5(), PID, None, QuadratureAdjoint(max_steps=128), "vmap"),
    "gauss-pid": (diffrax.Tsit5(), PID, None, GaussAdjoint(max_steps=128), "sum"),
}


def _loss(field, a, y0, *, solver, controller, dt0, gradient):
    sol = solve(
        field,
        0.0,
        1.0,
        y0,
        a,
        solver=solver,
        controller=controller,
        dt0=dt0,
        gradient=gradient,
        ts=SAVE_TS,
    )
    linear, nonlinear = sol.ys
    return W @ linear[-1] + jnp.sum(nonlinear**2)


@ft.cache
def _gradients(name: str, backprop: bool = False):
    """Gradients with respect to (field, A, y0), summed over the batch."""
    solver, controller, dt0, gradient, transform = CASES[name]
    if backprop:
        gradient = CheckpointedBackprop(max_steps=gradient.max_steps)
    loss = ft.partial(_loss, solver=solver, controller=controller, dt0=dt0, gradient=gradient)
    if transform == "vmap":
        per_example = jax.vmap(jax.grad(loss, argnums=(0, 1, 2)), in_axes=(None, None, 0))

        def fn(field, a, y0):
            g_field, g_a, g_y0 = per_example(field, a, y0)
            return jax.tree.map(lambda g: g.sum(0), (g_field, g_a)) + (g_y0,)
    else:

        def summed(field, a, y0):
            return jnp.sum(jax.vmap(loss, in_axes=(None, None, 0))(field, a, y0))

        fn = jax.grad(summed, argnums=(0, 1, 2))
    return jax.jit(fn)(FIELD, A, Y0)


def _exact_linear():
    def loss(a, y0):
        return W @ (jax.scipy.linalg.expm(a) @ y0)

    g_a, g_y0 = jax.vmap(jax.grad(loss, argnums=(0, 1)), in_axes=(None, 0))(A, Y0[0])
    return g_a.sum(0), g_y0


@ft.cache
def _finite_differences():
    """Central differences of a tight-tolerance solve (the exact ODE gradient to ~1e-9)."""
    loss = ft.partial(
        _loss,
        solver=diffrax.Tsit5(),
        controller=diffrax.PIDController(rtol=1e-11, atol=1e-13),
        dt0=None,
        gradient=CheckpointedBackprop(max_steps=512),
    )

    def summed(params):
        mlp, nonlinear0 = params
        return jnp.sum(jax.vmap(loss, in_axes=(None, None, 0))(Field(mlp), A, (Y0[0], nonlinear0)))

    return finite_difference_grad(summed, (FIELD.mlp, Y0[1]))


# Each case compiles a forward and a backward loop (seconds); the adaptive reversible Tsit5
# case (the same code paths as the two other reversible ones) runs under `-m slow`.
SLOW = {"reversible-tsit5-pid"}


def _params(names):
    return [pytest.param(n, marks=pytest.mark.slow if n in SLOW else ()) for n in names]


@pytest.mark.parametrize("name", _params(CASES))
def test_gradient_matches_closed_form_and_finite_differences(name):
    g_field, g_a, g_y0 = _gradients(name)
    exact_a, exact_y0 = _exact_linear()
    order_error = {"reversible-heun-pid": 1e-2, "reversible-tsit5-constant": 1e-6}.get(name, 1e-6)
    assert relative_error((g_a, g_y0[0]), (exact_a, exact_y0)) < order_error
    fd = _finite_differences()
    assert relative_error((g_field.mlp, g_y0[1]), fd) < max(order_error, 1e-6)


@pytest.mark.parametrize("name", _params([n for n in CASES if n.startswith("reversible")]))
def test_reversible_equals_backprop_through_the_same_solve(name):
    # The gradient of the discrete reversible solve, to rounding (and not just to the
    # solver's error, which is ~1e-4 for reversible Heun).
    ours = _gradients(name)
    backprop = _gradients(name, backprop=True)
    assert relative_error(ours, backprop) < 1e-10


class Autonomous(eqx.Module):
    mlp: MLP

    def __call__(self, t, y, a):
        return self.mlp(t, y)


def _velocity(t, y):
    return FIELD.mlp(t, y)


@pytest.mark.parametrize(
    "solver",
    [Reversible(diffrax.Tsit5()), ReversibleHeun(), Reversible(diffrax.Euler(), coupling=0.9)],
)
def test_reverse_step_rebuilds_the_forward_states(solver):
    y = jnp.array([0.6, -0.8])
    ts = jnp.linspace(0.0, 2.0, 41)
    states = [(y, solver.initial_state(_velocity, ts[0], y))]
    for t0, t1 in zip(ts[:-1], ts[1:], strict=True):
        y1, s1, _ = solver.forward_map(_velocity, t0, t1, *states[-1])
        states.append((y1, s1))
    y1, s1 = states[-1]
    for k in range(len(ts) - 1, 0, -1):
        y1, s1 = solver.inverse_map(_velocity, ts[k - 1], ts[k], y1, s1)
        # Rounding errors grow by up to 1/coupling per step backwards (0.9**-40 ~ 70).
        assert relative_error((y1, s1), states[k - 1]) < 1e-12
    # Not a tautology: the states do move.
    assert relative_error(states[-1][0], states[0][0]) > 0.1


@pytest.mark.parametrize("t0, t1, dt0", [(0.0, 1.0, 0.03), (0.0, 1.0, 0.1), (0.3, 7.1, 0.7)])
def test_constant_grid_is_diffrax_grid(t0, t1, dt0):
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, a: -y),
        diffrax.Euler(),
        t0,
        t1,
        dt0,
        jnp.array(1.0),
        saveat=diffrax.SaveAt(steps=True),
        max_steps=64,
    )
    n = int(sol.stats["num_accepted_steps"])
    # Under jit, as in the backward pass (XLA's fusion decides the last bit).
    grid = jax.jit(lambda a, b, h: jax.vmap(_constant_grid(a, b, h))(jnp.arange(1, n + 1)))
    ours = grid(jnp.asarray(t0), jnp.asarray(t1), jnp.asarray(dt0))
    assert n > 5
    # Equal up to the last bit or two: XLA may rewrite the division inside diffrax's loop
    # (a reciprocal hoisted out of the loop), which no recomputation can follow exactly. A
    # time off by an ulp changes the rebuilt states only at rounding level.
    np.testing.assert_allclose(np.asarray(ours), np.asarray(sol.ts[:n]), rtol=1e-15, atol=0)


def test_float32_gradients():
    field = _field(jnp.float32)
    a = A.astype(jnp.float32)
    y0 = (Y0[0][0].astype(jnp.float32), Y0[1][0].astype(jnp.float32))
    reference = None
    for solver, controller, dt0, gradient in [
        (Reversible(diffrax.Tsit5()), None, 0.05, ReversibleAdjoint(max_steps=32)),
        (
            diffrax.Tsit5(),
            diffrax.PIDController(rtol=1e-5, atol=1e-6),
            None,
            GaussAdjoint(max_steps=64),
        ),
    ]:
        loss = ft.partial(_loss, solver=solver, controller=controller, dt0=dt0, gradient=gradient)
        grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(field, a, y0)
        assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))
        if reference is None:
            reference = jax.jit(
                jax.grad(
                    ft.partial(
                        _loss,
                        solver=solver,
                        controller=None,
                        dt0=0.05,
                        gradient=CheckpointedBackprop(max_steps=32),
                    ),
                    argnums=(0, 1, 2),
                )
            )(_field(), A, (Y0[0][0], Y0[1][0]))
        assert relative_error(grads, reference) < 1e-4


def test_evaluation_counts_of_the_reversible_solvers():
    y0 = jnp.array([0.6, -0.8])
    n = 10
    field = Autonomous(FIELD.mlp)

    def loss(field, solver, gradient):
        sol = solve(field, 0.0, 1.0, y0, solver=solver, dt0=0.1, gradient=gradient)
        return jnp.sum(sol.ys**2), sol.stats["nfe"]

    for solver, per_step, initial, vjps in [
        (Reversible(diffrax.Tsit5()), 13, 0, 12),
        (ReversibleHeun(), 1, 1, 1),
    ]:
        gradient = ReversibleAdjoint(max_steps=16)
        count = count_evaluations(lambda f, s, g: loss(f, s, g)[0], field, solver, gradient)
        assert count.forward == per_step * n + initial
        assert int(jax.jit(loss, static_argnums=(1, 2))(field, solver, gradient)[1]) == (
            count.forward
        )
        # One VJP per evaluation the reconstruction needs (plus the initial state's).
        assert count.backward_vjp == vjps * n + initial


def test_invalid_combinations():
    y0 = jnp.array([1.0])

    def run(solver, gradient, controller=None, dt0=0.1, **kwargs):
        return solve(
            lambda t, y, a: -y,
            0.0,
            1.0,
            y0,
            solver=solver,
            controller=controller,
            dt0=dt0,
            gradient=gradient,
            **kwargs,
        )

    with pytest.raises(ValueError, match="Reversible\\(solver\\).*ReversibleHeun"):
        run(diffrax.Tsit5(), ReversibleAdjoint())
    with pytest.raises(ValueError, match="explicit Runge-Kutta"):
        Reversible(diffrax.Kvaerno5())
    with pytest.raises(ValueError, match="coupling"):
        Reversible(diffrax.Tsit5(), coupling=1.5)
    with pytest.raises(ValueError, match="adaptive controller"):
        run(diffrax.Tsit5(), GaussAdjoint(rtol=1e-6))
    with pytest.raises(ValueError, match="StepTo"):
        run(
            diffrax.Tsit5(),
            QuadratureAdjoint(),
            controller=diffrax.StepTo(jnp.linspace(0, 1, 5)),
            dt0=None,
        )
    with pytest.raises(ValueError, match="nodes"):
        GaussAdjoint(nodes=0)
    with pytest.raises(ValueError, match="gradient.checkpoints"):
        InterpolatingAdjoint(checkpoints=0)
    with pytest.raises(NotImplementedError, match="SaveAt"):
        run(ReversibleHeun(), ReversibleAdjoint(), saveat=diffrax.SaveAt(steps=True))


# The default suite checks this through the benchmark's target on the spiral problem
# (tests/core/test_ode_adjoints_experiment.py); this one runs under -m slow.
@pytest.mark.slow
def test_checkpointed_interpolant_takes_less_memory():
    # Compile-time plans of the gradient with 1024 constant steps: the whole interpolant
    # holds 1024 Tsit5 records; 32 checkpoints hold 32 states plus one 32-step segment.
    from adjoint_lab.core import compiled_memory

    field = Autonomous(FIELD.mlp)
    y0 = jnp.array([0.6, -0.8])

    def plan(gradient):
        def grad(field, y0):
            def loss(f, y):
                sol = solve(f, 0.0, 1.0, y, solver=diffrax.Tsit5(), dt0=1 / 1024, gradient=gradient)
                return jnp.sum(sol.ys**2)

            return jax.grad(loss, argnums=(0, 1))(field, y0)

        return compiled_memory(grad, field, y0).total

    whole = plan(InterpolatingAdjoint(max_steps=1024))
    checkpointed = plan(InterpolatingAdjoint(checkpoints=32, max_steps=1024))
    assert checkpointed < 0.5 * whole


STIFF_A = jnp.array([[-500.5, 499.5], [499.5, -500.5]])  # eigenvalues -1 and -1000


# The default suite solves the same stiff problem with both methods through the benchmark's
# targets (tests/core/test_ode_adjoints_experiment.py); this one runs under -m slow.
@pytest.mark.slow
@pytest.mark.parametrize("gradient", [GaussAdjoint, QuadratureAdjoint])
def test_quadrature_adjoints_on_a_stiff_problem(gradient):
    # Kvaerno5's forward steps are short on the transient and long after it; a quadrature
    # across their ends lost the order (error 2e-4 before it was split there).
    ts = jnp.array([0.5, 1.0, 1.5, 2.0])
    y0 = jnp.array([1.0, 0.5])

    def loss(a, y0):
        sol = solve(
            lambda t, y, a: a @ y,
            0.0,
            2.0,
            y0,
            a,
            solver=diffrax.Kvaerno5(),
            controller=diffrax.PIDController(rtol=1e-8, atol=1e-10),
            gradient=gradient(max_steps=256),
            ts=ts,
        )
        return jnp.sum(sol.ys**2)

    def exact(a, y0):
        return sum(jnp.sum((jax.scipy.linalg.expm(a * t) @ y0) ** 2) for t in ts)

    ours = jax.jit(jax.grad(loss, argnums=(0, 1)))(STIFF_A, y0)
    assert relative_error(ours, jax.grad(exact, argnums=(0, 1))(STIFF_A, y0)) < 1e-5


def test_reversible_coupling_diverges_on_a_long_oscillation_where_tsit5_does_not():
    # Why ReversibleAdjoint fails on Lotka-Volterra over many periods (results/ode_adjoints.md):
    # the difference y - z of the two states evolves as d' = (lam - h J) d, so on a rotation
    # (J with eigenvalues +-i w) it grows once h w > sqrt(1 - lam^2) (0.045 at lam = 0.999),
    # step sizes that the base solver's error control accepts. Over ten periods it explodes.
    def lotka(t, y, theta):
        a, b, c, d = theta
        return jnp.stack([a * y[0] - b * y[0] * y[1], d * y[0] * y[1] - c * y[1]])

    theta, y0 = jnp.array([1.5, 1.0, 3.0, 1.0]), jnp.array([1.0, 1.0])

    @ft.partial(jax.jit, static_argnums=0)
    def end(solver):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(lotka), solver, 0.0, 36.0, None, y0, args=theta,
            stepsize_controller=diffrax.PIDController(rtol=1e-8, atol=1e-10),
            max_steps=20_000, saveat=diffrax.SaveAt(t1=True), throw=False,
        )  # fmt: skip
        return sol.result == diffrax.RESULTS.successful, jnp.max(jnp.abs(sol.ys))

    ok, size = end(diffrax.Tsit5())
    assert ok and size < 10
    ok, size = end(Reversible(diffrax.Tsit5()))
    assert not ok and size > 1e3


class _WideField(eqx.Module):
    """A field whose VJP holds far more than the state: (256, 512) hidden activations."""

    w1: Float[Array, "2 512"]
    w2: Float[Array, "512 2"]

    def __call__(self, t, y, args):
        return jnp.tanh(y @ self.w1) @ self.w2


def test_reversible_backward_holds_one_stage_vjp_at_a_time():
    # Differentiating a step's unrolled stages let XLA keep every stage's residuals alive:
    # 3.6x one field VJP's plan here before the stage-by-stage scan, 1.6x after.
    from adjoint_lab.core import compiled_memory

    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    field = _WideField(jax.random.normal(k1, (2, 512)) / 2, jax.random.normal(k2, (512, 2)) / 20)
    y0 = jnp.ones((256, 2))

    def grad(field, y0):
        def loss(f, y):
            sol = solve(f, 0.0, 1.0, y, solver=Reversible(diffrax.Tsit5()), dt0=1 / 64,
                        gradient=ReversibleAdjoint(max_steps=64))  # fmt: skip
            return jnp.sum(sol.ys**2)

        return jax.grad(loss, argnums=(0, 1))(field, y0)

    def field_vjp(field, y0):
        _, vjp = jax.vjp(lambda f, y: f(0.0, y, None), field, y0)
        return vjp(y0)

    one_stage = compiled_memory(field_vjp, field, y0).temp
    assert compiled_memory(grad, field, y0).temp < 2 * one_stage
