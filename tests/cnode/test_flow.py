"""`characteristic_flow`: the crossing map, closed-form solutions, transformations, errors."""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adjoint_lab import cnode
from adjoint_lab.core import BacksolveAdjoint, Integrator, solve

ONE = lambda u: jnp.ones((1, 1), u.dtype)  # T = 1: u(x) = x is the PDE solution


def test_crossing_map_sends_each_point_to_its_negative():
    """a(s, z) = -2z, T = 1 gives U(s) = z(1 - 2s): -1 -> +1 and +1 -> -1, crossing at s=1/2."""
    flow = jax.jit(jax.vmap(lambda z: cnode.characteristic_flow(lambda s, z: -2 * z, ONE, z)))
    out = flow(jnp.array([[-1.0], [1.0]]))
    np.testing.assert_allclose(out, [[1.0], [-1.0]], rtol=0, atol=1e-12)


def test_zero_one_crossing():
    """a(s, z) = 1 - 2z gives U(1) = 1 - z: 0 -> 1 and 1 -> 0."""
    out = jax.vmap(lambda z: cnode.characteristic_flow(lambda s, z: 1 - 2 * z, ONE, z))(
        jnp.array([[0.0], [1.0]])
    )
    np.testing.assert_allclose(out, [[1.0], [0.0]], atol=1e-12)


def test_an_ode_in_u_alone_is_monotone_on_the_line():
    """The reason NODE cannot fit the crossing map: its time-1 map on R is increasing."""
    mlp = eqx.nn.MLP(1, 1, 8, 2, activation=jnp.tanh, key=jax.random.PRNGKey(3))
    zs = jnp.linspace(-2.0, 2.0, 9)[:, None]
    flow = jax.vmap(
        lambda z: solve(lambda s, u, args: 3 * mlp(u), 0.0, 1.0, z, dt0=0.05).ys[-1, 0]
    )(zs)
    assert np.all(np.diff(np.asarray(flow)) > 0)


def test_matches_closed_form_with_two_directions():
    """n = k = 2, T(u) = [[u0, 0], [0, 1]], a = (1, 2): U(1) = (e z0, z1 + 2)."""
    jac = lambda u: jnp.array([[u[0], 0.0], [0.0, 1.0]])
    direction = lambda s, z: jnp.array([1.0, 2.0])
    out = cnode.characteristic_flow(direction, jac, jnp.array([0.5, -1.0]))
    np.testing.assert_allclose(out, [0.5 * np.e, 1.0], rtol=1e-6)


def test_jit_vmap_grad_and_integrator_options():
    direction = lambda s, z: -2 * z * (1 + s)
    z = jnp.array([0.7])
    # U(1) = z - 2z * (1 + 1/2) = -2z, so dU(1)/dz = -2.
    grad = jax.jit(jax.grad(lambda z: cnode.characteristic_flow(direction, ONE, z)[0]))(z)
    np.testing.assert_allclose(grad, [-2.0], rtol=1e-8)
    heun = Integrator(diffrax.Heun(), diffrax.ConstantStepSize(), 0.25, BacksolveAdjoint())
    constant = cnode.characteristic_flow(direction, ONE, z, integrator=heun)
    np.testing.assert_allclose(constant, -2 * z, rtol=1e-12)  # Heun is exact for linear-in-s


@pytest.mark.parametrize(
    ("direction", "jacobian", "z", "match"),
    [
        (lambda s, z: -2 * z, ONE, jnp.ones((2, 1)), r"`z` must be a vector of shape \[n\]"),
        (lambda s, z: jnp.sum(z), ONE, jnp.ones(1), r"must return a vector of shape \[k\]"),
        (lambda s, z: z, lambda u: jnp.ones((1,)), jnp.ones(1), r"\[n, k\] = \[1, 1\] matrix"),
        (lambda s, z: jnp.ones(2), ONE, jnp.ones(1), r"\[n, k\] = \[1, 2\] matrix"),
    ],
)
@pytest.mark.untyped("ill-typed arguments on purpose: the hook refuses them first")
def test_wrong_shapes_are_named(direction, jacobian, z, match):
    with pytest.raises(ValueError, match=match):
        cnode.characteristic_flow(direction, jacobian, z)


@pytest.mark.untyped("ill-typed arguments on purpose: the hook refuses them first")
def test_a_loose_controller_is_refused_with_the_bundle_named():
    with pytest.raises(TypeError, match=r"must be an `adjoint_lab.core.Integrator"):
        cnode.characteristic_flow(lambda s, z: z, ONE, jnp.ones(1), integrator=diffrax.Tsit5())
