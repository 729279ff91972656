"""Every gradient method against closed-form gradients and finite differences (float64).

One solve carries two decoupled problems in a pytree state y = (linear, nonlinear):

- linear: dy/dt = A y, so y(1) = expm(A) y0 and the loss w . y(1) has a closed form whose
  `jax.grad` is the reference for the gradients with respect to A (passed as `args`) and y0;
- nonlinear: a small MLP vector field (an equinox module, so gradients flow through the
  vector field's own arrays), saved at two times; central differences are the reference.

Per (controller, method) one jitted function computes `vmap(grad(loss))` over a batch and
`grad(sum(vmap(loss)))`, so each case compiles once.
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
    AbstractGradientMethod,
    BacksolveAdjoint,
    CheckpointedBackprop,
    DirectBackprop,
    default_checkpoints,
    finite_difference_grad,
    relative_error,
    solve,
)

A = jnp.array([[-0.5, 1.0], [-1.0, -0.3]])
W = jnp.array([0.7, -1.3])
SAVE_TS = jnp.array([0.5, 1.0])
# A batch of three initial states (linear part, nonlinear part).
Y0 = (
    jnp.array([[1.0, 0.5], [0.2, -0.4], [-1.0, 0.3]]),
    jnp.array([[0.6, -0.8], [0.1, 0.4], [-0.5, -0.2]]),
)


class MLP(eqx.Module):
    w1: Float[Array, "4 2"]
    b1: Float[Array, " 4"]
    w2: Float[Array, "2 4"]
    b2: Float[Array, " 2"]

    def __call__(self, t, y):
        return self.w2 @ jnp.tanh(self.w1 @ y + self.b1 * jnp.cos(t)) + self.b2


class Field(eqx.Module):
    """d(linear)/dt = A linear (A in args); d(nonlinear)/dt = MLP(t, nonlinear)."""

    mlp: MLP

    def __call__(self, t, y, a):
        linear, nonlinear = y
        return a @ linear, self.mlp(t, nonlinear)


def _field() -> Field:
    rng = np.random.default_rng(0)
    mlp = MLP(
        w1=jnp.asarray(rng.normal(size=(4, 2))),
        b1=jnp.asarray(0.3 * rng.normal(size=4)),
        w2=jnp.asarray(0.5 * rng.normal(size=(2, 4))),
        b2=jnp.asarray(0.1 * rng.normal(size=2)),
    )
    return Field(mlp)


FIELD = _field()

# Coarse constant steps, so the discretisation error (~1e-6) is far above the finite
# difference error (~1e-9): the discretise-then-optimise methods must match differences of
# the *discrete* solve, which the continuous adjoint does not.
CONTROLLERS = {
    "constant": (diffrax.ConstantStepSize(), 0.25),
    "pid": (diffrax.PIDController(rtol=1e-9, atol=1e-11), None),
}
METHODS = {
    "constant": [
        CheckpointedBackprop(checkpoints=2, max_steps=16),
        DirectBackprop(max_steps=16),
        BacksolveAdjoint(max_steps=16),
    ],
    "pid": [
        CheckpointedBackprop(max_steps=128),
        DirectBackprop(max_steps=128),
        BacksolveAdjoint(seminorm=True, rtol=1e-10, atol=1e-12, max_steps=128),
        BacksolveAdjoint(max_steps=128),
    ],
}
TRANSFORMS = ("vmap_of_grad", "grad_of_vmap")
# Each case costs several seconds of tracing and compiling (diffrax traces slowly), so the
# default run covers every method, both controllers and both transforms, but not every
# combination (DirectBackprop with PID only under `-m slow`); `-m slow` runs the rest.
FAST = {
    ("constant", 0, "vmap_of_grad"),
    ("constant", 1, "grad_of_vmap"),
    ("constant", 2, "vmap_of_grad"),
    ("pid", 0, "grad_of_vmap"),
    ("pid", 2, "vmap_of_grad"),
}
CASES = [
    pytest.param(
        name,
        gradient,
        transform,
        marks=() if (name, i, transform) in FAST else pytest.mark.slow,
        id=f"{name}-{type(gradient).__name__}{i}-{transform}",
    )
    for name, methods in METHODS.items()
    for i, gradient in enumerate(methods)
    for transform in TRANSFORMS
]


def _loss(field, a, y0, *, gradient, controller, dt0):
    sol = solve(
        field, 0.0, 1.0, y0, a, controller=controller, dt0=dt0, gradient=gradient, ts=SAVE_TS
    )
    linear, nonlinear = sol.ys
    return W @ linear[-1] + jnp.sum(nonlinear**2)


@ft.cache
def _gradients(controller_name: str, gradient: AbstractGradientMethod, transform: str):
    """Gradients with respect to (field, A, y0): per example or batch-summed."""
    controller, dt0 = CONTROLLERS[controller_name]
    loss = ft.partial(_loss, gradient=gradient, controller=controller, dt0=dt0)
    if transform == "vmap_of_grad":
        fn = jax.vmap(jax.grad(loss, argnums=(0, 1, 2)), in_axes=(None, None, 0))
    else:

        def summed(field, a, y0):
            return jnp.sum(jax.vmap(loss, in_axes=(None, None, 0))(field, a, y0))

        fn = jax.grad(summed, argnums=(0, 1, 2))
    return jax.jit(fn)(FIELD, A, Y0)


def _exact_linear_loss(a, y0):
    return W @ (jax.scipy.linalg.expm(a) @ y0)


@pytest.fixture(scope="module")
def exact_per_example():
    grad = jax.grad(_exact_linear_loss, argnums=(0, 1))
    return jax.jit(jax.vmap(grad, in_axes=(None, 0)))(A, Y0[0])


@ft.cache
def _finite_differences(controller_name: str):
    """Central differences of the batch-summed loss of the discrete solve, with respect to
    the MLP and the nonlinear initial states (every method has the same forward pass)."""
    controller, dt0 = CONTROLLERS[controller_name]
    loss = ft.partial(
        _loss, gradient=CheckpointedBackprop(max_steps=128), controller=controller, dt0=dt0
    )

    def summed(params):
        mlp, nonlinear0 = params
        per_example = jax.vmap(loss, in_axes=(None, None, 0))(Field(mlp), A, (Y0[0], nonlinear0))
        return jnp.sum(per_example)

    return finite_difference_grad(summed, (FIELD.mlp, Y0[1]))


@pytest.mark.parametrize("controller_name, gradient, transform", CASES)
def test_gradient_matches_closed_form_and_finite_differences(
    controller_name, gradient, transform, exact_per_example
):
    grad_field, grad_a, grad_y0 = _gradients(controller_name, gradient, transform)
    exact_a, exact_y0 = exact_per_example
    if transform == "vmap_of_grad":
        # Per-example gradients; sum the parameter ones to compare with the batch loss.
        assert grad_a.shape == (3, 2, 2)
        exact_a_batch = exact_a
        grad_field = jax.tree.map(lambda g: g.sum(0), grad_field)
    else:
        assert grad_a.shape == (2, 2)
        exact_a_batch = exact_a.sum(0)
    constant = controller_name == "constant"

    # Linear part against the closed form. The error is the solve's own (Tsit5 with h=0.25:
    # ~1e-6; PID at rtol=1e-9: ~1e-9).
    tol = 3e-5 if constant else 1e-7
    assert relative_error((grad_a, grad_y0[0]), (exact_a_batch, exact_y0)) < tol

    # Nonlinear part against finite differences of the discrete solve.
    error = relative_error((grad_field.mlp, grad_y0[1]), _finite_differences(controller_name))
    if constant and not isinstance(gradient, BacksolveAdjoint):
        # Exact gradients of the discrete solution: only finite-difference error remains.
        assert error < 1e-8
    elif constant:
        # The continuous adjoint differs from the discrete gradient by discretisation error.
        assert 1e-8 < error < 1e-4
    else:
        assert error < 1e-6


def test_direct_backprop_supports_forward_mode():
    def y1(a):
        sol = solve(lambda t, y, a_: a_ @ y, 0.0, 1.0, Y0[0][0], a, dt0=0.25,
                    gradient=DirectBackprop(max_steps=16))  # fmt: skip
        return sol.ys[-1]

    direction = jnp.array([[1.0, -2.0], [0.5, 3.0]])
    tangent = jax.jit(lambda a: jax.jvp(y1, (a,), (direction,))[1])(A)
    exact = jax.jvp(lambda a: jax.scipy.linalg.expm(a) @ Y0[0][0], (A,), (direction,))[1]
    assert relative_error(tangent, exact) < 3e-5


# --- construction, validation and the mapping to diffrax ---------------------------------


def test_default_checkpoints_formula():
    assert [default_checkpoints(n) for n in (1, 2, 3, 16, 256, 4096, 16384, 65536)] == [
        1,
        1,
        2,
        5,
        22,
        90,
        180,
        361,
    ]
    for n in (2, 10, 16, 100, 4096):
        c = default_checkpoints(n)
        # The smallest c with max_steps < (c + 1)(c + 2) / 2, capped at max_steps.
        assert 2 * n < (c + 1) * (c + 2) or c == n
        assert c == 1 or 2 * n >= c * (c + 1)


def test_default_checkpoints_is_what_equinox_uses():
    # diffrax's RecursiveCheckpointAdjoint runs equinox's checkpointed while loop; the
    # checkpoint count shapes its residual buffers, so its gradient jaxpr identifies it.
    import equinox.internal as eqxi

    def jaxpr(checkpoints, max_steps=16):
        def f(x):
            return eqxi.while_loop(
                lambda c: c[0] < 10,
                lambda c: (c[0] + 1, jnp.sin(c[1])),
                (0, x),
                max_steps=max_steps,
                kind="checkpointed",
                checkpoints=checkpoints,
            )[1]

        return str(jax.make_jaxpr(jax.grad(f))(1.0))

    default = jaxpr(None)
    assert default == jaxpr(default_checkpoints(16))
    assert default != jaxpr(default_checkpoints(16) - 1)
    assert default != jaxpr(default_checkpoints(16) + 1)


def test_to_diffrax():
    pid = diffrax.PIDController(rtol=1e-6, atol=1e-8)
    constant = diffrax.ConstantStepSize()
    adjoint = CheckpointedBackprop(checkpoints=7).to_diffrax(pid)
    assert isinstance(adjoint, diffrax.RecursiveCheckpointAdjoint)
    assert adjoint.checkpoints == 7
    assert CheckpointedBackprop().to_diffrax(pid).checkpoints is None
    assert isinstance(DirectBackprop().to_diffrax(pid), diffrax.DirectAdjoint)

    backsolve = BacksolveAdjoint().to_diffrax(pid)
    assert isinstance(backsolve, diffrax.BacksolveAdjoint)
    assert backsolve.kwargs == {"stepsize_controller": pid, "throw": True}
    assert BacksolveAdjoint().to_diffrax(constant).kwargs["stepsize_controller"] is constant

    backward = (
        BacksolveAdjoint(seminorm=True, rtol=1e-9).to_diffrax(pid).kwargs["stepsize_controller"]
    )
    assert isinstance(backward, diffrax.PIDController)
    assert backward.norm is diffrax.adjoint_rms_seminorm
    assert (backward.rtol, backward.atol) == (1e-9, 1e-8)
    assert pid.norm is not diffrax.adjoint_rms_seminorm  # the forward one is untouched

    clipped = diffrax.ClipStepSizeController(pid, step_ts=jnp.array([0.5]))
    backward = BacksolveAdjoint(atol=1e-3).to_diffrax(clipped).kwargs["stepsize_controller"]
    assert isinstance(backward, diffrax.ClipStepSizeController)
    assert (backward.rtol, backward.atol) == (1e-6, 1e-3)
    assert backward.step_ts is clipped.step_ts


def test_backsolve_options_need_an_adaptive_forward_solve():
    with pytest.raises(ValueError, match=r"seminorm=True\).*ConstantStepSize.*PIDController"):
        BacksolveAdjoint(seminorm=True).to_diffrax(diffrax.ConstantStepSize())
    with pytest.raises(ValueError, match=r"rtol=1e-06\).*ConstantStepSize"):
        BacksolveAdjoint(rtol=1e-6).to_diffrax(diffrax.ConstantStepSize())


def test_backsolve_options_need_a_pid_controller():
    class OtherController(diffrax.AbstractAdaptiveStepSizeController):
        rtol: float = 1e-3
        atol: float = 1e-6
        norm: object = None

        def wrap(self, direction):
            return self

        def init(self, *args):
            raise NotImplementedError

        def adapt_step_size(self, *args):
            raise NotImplementedError

    with pytest.raises(ValueError, match="PIDController.*OtherController"):
        BacksolveAdjoint(seminorm=True).to_diffrax(OtherController())
    # Without options the forward controller is reused as it is.
    other = OtherController()
    assert BacksolveAdjoint().to_diffrax(other).kwargs["stepsize_controller"] is other


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: CheckpointedBackprop(checkpoints=0), r"checkpoints=0.*int >= 1.*here 90"),
        (lambda: CheckpointedBackprop(checkpoints=2.5), r"checkpoints=2\.5"),
        (lambda: CheckpointedBackprop(max_steps=0), r"max_steps=0.*int >= 1"),
        (lambda: DirectBackprop(max_steps=-3), r"DirectBackprop\(max_steps=-3\)"),
        (lambda: DirectBackprop(max_steps=True), r"max_steps=True"),
        (lambda: BacksolveAdjoint(seminorm=1), r"seminorm=1.*True.*or False"),
        (lambda: BacksolveAdjoint(rtol=0.0), r"rtol=0\.0.*float > 0, or None"),
        (lambda: BacksolveAdjoint(atol=-1e-6), r"atol=-1e-06"),
        (lambda: BacksolveAdjoint(max_steps=1.5), r"max_steps=1\.5"),
    ],
)
@pytest.mark.untyped("ill-typed arguments on purpose: the hook refuses them first")
def test_invalid_fields_are_named(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_gradient_methods_are_immutable_hashable_and_static():
    method = CheckpointedBackprop(checkpoints=4, max_steps=32)
    assert method == CheckpointedBackprop(checkpoints=4, max_steps=32)
    assert hash(method) == hash(CheckpointedBackprop(checkpoints=4, max_steps=32))
    assert jax.tree_util.tree_leaves(method) == []  # safe to pass through jax.jit
    with pytest.raises(AttributeError):
        method.max_steps = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        AbstractGradientMethod()  # type: ignore[abstract]
