"""Gradients of small C-NODEs through `adjoint_lab.core.solve` against finite differences."""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adjoint_lab import cnode
from adjoint_lab.core import (
    BacksolveAdjoint,
    CheckpointedBackprop,
    finite_difference_grad,
    relative_error,
)

# Constant steps: the discrete solve is smooth in the parameters, so its exact gradient
# (checkpointed backprop) and central differences agree to ~1e-8.
INTEGRATOR = cnode.Integrator(
    solver=diffrax.Tsit5(),
    controller=diffrax.ConstantStepSize(),
    dt0=0.25,
    gradient=CheckpointedBackprop(max_steps=8),
)


def _check(model, x, labels):
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def loss(p):
        return cnode.cross_entropy(eqx.combine(p, static)(x), labels)

    grad = jax.jit(jax.grad(loss))(params)
    reference = finite_difference_grad(loss, params)
    assert relative_error(grad, reference) < 1e-6


def test_image_cnode_gradient_matches_finite_differences(small_cnode, getkey):
    model = eqx.tree_at(lambda m: m.integrator, small_cnode, INTEGRATOR)
    x = jax.random.uniform(getkey(), (2, 1, 4, 4), jnp.float64)
    _check(model, x, jnp.array([0, 3]))


def _tiny_cnode(integrator):
    # One direction, two hidden units: the smallest C-NODE with every part (path, block, head).
    key = jax.random.PRNGKey(0)
    return cnode.CNODE((2,), 2, width=2, k=1, path_width=2, integrator=integrator, key=key)


def test_cnode_input_gradient_matches_finite_differences():
    """The input z enters twice, as U(0) and through the path network a(s, z): both count."""
    model = _tiny_cnode(INTEGRATOR)
    x = jnp.array([[0.3, -0.7], [1.1, 0.4]])
    labels = jnp.array([0, 1])
    loss = jax.jit(lambda x: cnode.cross_entropy(model(x), labels))
    grad = jax.jit(jax.grad(loss))(x)
    assert relative_error(grad, finite_difference_grad(loss, x)) < 1e-6
    # Without the path's dependence on z the gradient would differ: so it is checked too.
    frozen = jax.grad(
        lambda u0: cnode.cross_entropy(
            jax.vmap(model.head)(
                model.integrator.solve(cnode.BatchedField(model.field), 0.0, 1.0, u0, x).ys[-1]
            ),
            labels,
        )
    )(x)
    assert relative_error(frozen, grad) > 1e-3


def test_backsolve_on_a_tiny_cnode_matches_exact_backprop():
    """The continuous adjoint against checkpointed backprop (jax.grad of the solve), float64."""
    tight = diffrax.PIDController(rtol=1e-10, atol=1e-10)
    exact = cnode.Integrator(controller=tight, gradient=CheckpointedBackprop(max_steps=128))
    adjoint = cnode.Integrator(controller=tight, gradient=BacksolveAdjoint(max_steps=128))
    x = jnp.array([[0.3, -0.7], [1.1, 0.4]])
    labels = jnp.array([0, 1])

    def grad(integrator):
        params, static = eqx.partition(_tiny_cnode(integrator), eqx.is_inexact_array)
        loss = lambda p: cnode.cross_entropy(eqx.combine(p, static)(x), labels)
        return jax.jit(jax.grad(loss))(params)

    reference, backsolve = grad(exact), grad(adjoint)
    # The integrators (static) differ, so compare the gradients part by part.
    for part in ("field", "head"):
        ours, theirs = getattr(backsolve, part), getattr(reference, part)
        assert relative_error(ours, theirs) < 1e-6, part
    # The field's arrays get their gradient through the adjoint solve alone: all must move.
    leaves = jax.tree_util.tree_leaves(reference.field)
    assert all(float(jnp.max(jnp.abs(g))) > 0 for g in leaves)


@pytest.mark.slow
def test_vector_cnode_gradient_matches_finite_differences(getkey):
    model = cnode.CNODE((2,), 2, width=4, k=2, path_width=4, integrator=INTEGRATOR, key=getkey())
    x = jax.random.normal(getkey(), (3, 2), jnp.float64)
    _check(model, x, jnp.array([0, 1, 1]))


@pytest.mark.slow
def test_characteristic_flow_input_gradient_matches_finite_differences():
    direction = lambda s, z: jnp.array([jnp.sin(z[0] + s), z[1] * z[0]])
    jacobian = lambda u: jnp.array([[jnp.tanh(u[0]), 1.0], [u[1], -0.5]])

    def loss(z):
        constant = cnode.Integrator(controller=diffrax.ConstantStepSize(), dt0=0.1)
        u1 = cnode.characteristic_flow(direction, jacobian, z, integrator=constant)
        return jnp.sum(u1**2)

    z = jnp.array([0.3, -0.8])
    grad = jax.grad(loss)(z)
    np.testing.assert_allclose(grad, finite_difference_grad(loss, z), rtol=1e-6, atol=1e-9)


@pytest.mark.slow
def test_backsolve_adjoint_agrees_with_checkpointed_backprop(getkey):
    """The paper experiments' continuous adjoint, against exact backprop of a tight solve."""
    tight = diffrax.PIDController(rtol=1e-9, atol=1e-9)
    exact = cnode.Integrator(controller=tight, gradient=CheckpointedBackprop(max_steps=512))
    adjoint = cnode.Integrator(controller=tight, gradient=BacksolveAdjoint(max_steps=512))
    model = cnode.CNODE((2,), 2, width=4, k=2, path_width=4, integrator=exact, key=getkey())
    x = jax.random.normal(getkey(), (3, 2), jnp.float64)
    labels = jnp.array([0, 1, 1])

    def grad(integrator):
        params, static = eqx.partition(
            eqx.tree_at(lambda m: m.integrator, model, integrator), eqx.is_inexact_array
        )
        loss = lambda p: cnode.cross_entropy(eqx.combine(p, static)(x), labels)
        return jax.tree_util.tree_leaves(jax.grad(loss)(params))  # the integrators differ

    assert relative_error(grad(adjoint), grad(exact)) < 1e-6
