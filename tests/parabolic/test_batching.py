"""One bank of paths, many drifts: `jax.vmap` over a batch of drifts, under `jax.jit`, and
the weight-degeneracy warning."""

from __future__ import annotations

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adjoint_lab import parabolic
from adjoint_lab.parabolic import problems

TRACED_CALLS: list[None] = []
X = jnp.array([[0.3, -0.2], [-0.5, 0.4], [0.0, 0.1]])
T = 0.5


class AffineDrift(eqx.Module):
    """mu(t, x) = b + A x + c sin(t): a drift given as a pytree of parameters."""

    b: jax.Array
    A: jax.Array

    def __call__(self, t, x):
        TRACED_CALLS.append(None)  # Python-level calls happen only while tracing
        return self.b + self.A @ x + 0.1 * jnp.sin(t)


def p0(x):
    return jnp.cos(x[0] - 0.5 * x[1])


def rate(t, x):
    return 0.1 + 0.05 * jnp.sum(x**2)


@pytest.fixture(scope="module")
def paths():
    return parabolic.BasePaths.sample(jax.random.PRNGKey(7), X, T=T, n_paths=500, n_steps=20)


def _drifts(n):
    key_b, key_a = jax.random.split(jax.random.PRNGKey(n))
    b = 0.5 * jax.random.normal(key_b, (n, 2))
    A = 0.3 * jax.random.normal(key_a, (n, 2, 2))
    return AffineDrift(b, A)


def _one(drifts, i):
    return AffineDrift(drifts.b[i], drifts.A[i])


@pytest.mark.parametrize("estimator", ["girsanov", "euler_maruyama"])
def test_vmap_over_drifts_equals_a_loop(paths, estimator):
    def estimate(drift):
        if estimator == "girsanov":
            return paths.expectation(drift, p0, rate)
        return parabolic.euler_maruyama_expectation(paths, drift, p0, rate)

    drifts = _drifts(5)
    batched = jax.vmap(estimate)(drifts)
    assert batched.value.shape == batched.stderr.shape == batched.ess.shape == (5, len(X))
    for i in range(5):
        single = estimate(_one(drifts, i))
        for field in ("value", "stderr", "ess"):
            np.testing.assert_allclose(
                getattr(batched, field)[i], getattr(single, field), rtol=1e-12, atol=1e-15
            )


def test_vmap_is_batched_not_a_loop(paths):
    """Tracing calls the drift a fixed number of times whatever the batch size (tracing
    only: `make_jaxpr` compiles nothing)."""
    counts = []
    for n in (2, 9):
        TRACED_CALLS.clear()
        jax.make_jaxpr(jax.vmap(lambda drift: paths.expectation(drift, p0, rate).value))(_drifts(n))
        counts.append(len(TRACED_CALLS))
    assert counts[0] == counts[1] <= 3


def test_jit_and_vmap_over_problems(paths):
    """A batch of problems (pytrees of parameters) under jit, against one bank of paths."""
    bs = jnp.array([[0.5, -0.2], [0.0, 0.3], [-0.4, 0.1]])
    make = lambda b: problems.AffineDriftCosine(b, jnp.array([1.0, -0.5]))
    batch = jax.vmap(make)(bs)

    @jax.jit
    def values(batch):
        return jax.vmap(lambda prob: paths.expectation(prob.drift, prob.p0))(batch)

    out = values(batch)
    for i, b in enumerate(bs):
        np.testing.assert_allclose(
            out.value[i], paths.expectation(make(b).drift, make(b).p0).value, rtol=1e-12
        )


def test_gradient_through_the_weights(paths):
    """Girsanov estimates are differentiable in the drift parameters (for fitting drifts), and
    the gradient is that of the estimate on the same paths: central finite differences at
    common random numbers agree with it to the finite-difference error."""
    drift = _one(_drifts(1), 0)
    total = lambda d: jnp.sum(paths.expectation(d, p0, rate).value)
    grad = eqx.filter_grad(total)(drift)
    eps = 1e-6

    def moved(name, index, delta):
        fields = {"b": drift.b, "A": drift.A}
        fields[name] = fields[name].at[index].add(delta)
        return AffineDrift(**fields)

    for name in ("b", "A"):
        fd = np.zeros(getattr(drift, name).shape)
        for index in np.ndindex(fd.shape):
            up, down = moved(name, index, eps), moved(name, index, -eps)
            fd[index] = (total(up) - total(down)) / (2 * eps)
        np.testing.assert_allclose(getattr(grad, name), fd, rtol=1e-6, atol=1e-9)
        assert np.all(np.abs(fd) > 1e-3)  # every parameter moves the estimate


def test_weight_degeneracy_warning(paths):
    bad = lambda t, x: jnp.array([8.0, -8.0])
    with pytest.warns(parabolic.WeightDegeneracyWarning, match=r"point 0 .*ESS [0-9.]+"):
        estimate = paths.expectation(bad, p0)
    assert np.all(np.asarray(estimate.ess) < 0.01 * paths.n_paths)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        paths.expectation(bad, p0, ess_threshold=0.0)  # the threshold is an argument
        good = paths.expectation(lambda t, x: jnp.array([0.1, 0.0]), p0)
    assert np.all(np.asarray(good.ess) > 0.9 * paths.n_paths)
    with pytest.warns(parabolic.WeightDegeneracyWarning):
        parabolic.feynman_kac(bad, p0, X, T=T, n_paths=200, n_steps=5, key=jax.random.PRNGKey(0))


def test_feynman_kac_under_jit_and_vmap_over_keys():
    """Independent replicas by `vmap` over keys, jit-compiled, equal the eager calls."""
    drift = _one(_drifts(1), 0)

    @jax.jit
    def replicas(keys):
        run = lambda key: parabolic.feynman_kac(
            drift, p0, X, T=T, n_paths=500, n_steps=20, key=key, rate=rate
        )
        return jax.vmap(run)(keys)

    keys = jax.random.split(jax.random.PRNGKey(11), 3)
    out = replicas(keys)
    eager = parabolic.feynman_kac(
        drift, p0, X, T=T, n_paths=500, n_steps=20, key=keys[1], rate=rate
    )
    np.testing.assert_allclose(out.value[1], eager.value, rtol=1e-12)
    assert not np.allclose(out.value[0], out.value[1])
