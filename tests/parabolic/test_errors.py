"""Bad input fails early, naming the argument and what to change."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from adjoint_lab import parabolic

KEY = jax.random.PRNGKey(0)
X = jnp.array([[0.1, 0.2], [0.3, -0.1]])
DRIFT = lambda t, x: -x
P0 = lambda x: jnp.cos(x[0])


def _fk(**overrides):
    kwargs = dict(T=0.5, n_paths=16, n_steps=4, key=KEY)
    kwargs.update(overrides)
    drift = kwargs.pop("drift", DRIFT)
    p0 = kwargs.pop("p0", P0)
    x = kwargs.pop("x", X)
    return parabolic.feynman_kac(drift, p0, x, **kwargs)


@pytest.mark.parametrize("T", [0.0, -1.0, float("nan")])
def test_bad_horizon(T):
    with pytest.raises(ValueError, match=r"`T` must be finite and > 0"):
        _fk(T=T)


@pytest.mark.parametrize("sigma", [0.0, -0.5, jnp.array([1.0, 0.0])])
def test_bad_sigma(sigma):
    with pytest.raises(ValueError, match=r"`sigma` must be finite and > 0"):
        _fk(sigma=sigma)


@pytest.mark.untyped("ill-typed arguments on purpose: the hook refuses them first")
def test_sigma_shape():
    with pytest.raises(ValueError, match=r"`sigma` must be a scalar or have shape \(d,\)"):
        _fk(sigma=jnp.ones(3))


@pytest.mark.parametrize("method", ["girsanov", "euler_maruyama"])
def test_drift_dimension(method):
    with pytest.raises(ValueError, match=r"`drift` .*returning shape \(2,\); it returned \(3,\)"):
        _fk(drift=lambda t, x: jnp.ones(3), method=method)
    with pytest.raises(ValueError, match=r"`drift` .*it returned \(\)"):
        _fk(drift=lambda t, x: x[0], method=method)


def test_p0_and_rate_shapes():
    with pytest.raises(ValueError, match=r"`p0` .*returning shape \(\); it returned \(2,\)"):
        _fk(p0=lambda x: x)
    with pytest.raises(ValueError, match=r"`rate` .*returning shape \(\)"):
        _fk(rate=lambda t, x: x)


@pytest.mark.parametrize("method", ["girsanov", "euler_maruyama"])
def test_non_finite_p0(method):
    with pytest.raises(RuntimeError, match=r"`p0` returned a non-finite value"):
        _fk(p0=lambda x: jnp.log(x[0]), method=method)  # log of negative endpoints


@pytest.mark.untyped("ill-typed arguments on purpose: the hook refuses them first")
def test_points_and_counts():
    with pytest.raises(ValueError, match=r"`x` must have shape \(m, d\).*x\[None, :\]"):
        _fk(x=jnp.zeros(2))
    with pytest.raises(ValueError, match=r"`n_paths` must be a Python int >= 2"):
        _fk(n_paths=1)
    with pytest.raises(ValueError, match=r"`n_steps` must be a Python int >= 1"):
        _fk(n_steps=2.5)


def test_methods():
    with pytest.raises(ValueError, match=r"pass `operator=`, a trained `NeuralGirsanovOperator`"):
        _fk(method="ngo")
    with pytest.raises(ValueError, match=r"`method` must be one of 'girsanov', 'euler_maruyama'"):
        _fk(method="euler")


def test_bad_horizon_under_jit():
    """Traced T cannot be checked eagerly; it fails at run time with the same message."""
    sample = jax.jit(
        lambda T: parabolic.BasePaths.sample(KEY, X, T=T, n_paths=4, n_steps=2).increments
    )
    sample(0.5)
    with pytest.raises(Exception, match=r"`T` must be finite and > 0"):
        sample(-0.5)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_points(bad):
    with pytest.raises(
        ValueError, match=r"`x` must be finite; it has inf or nan at index .*\[1, 0\]"
    ):
        _fk(x=X.at[1, 0].set(bad))
    with pytest.raises(ValueError, match=r"`BasePaths.sample`: `x` must be finite"):
        parabolic.BasePaths.sample(KEY, X.at[1, 0].set(bad), T=0.5, n_paths=4, n_steps=2)


@pytest.mark.parametrize("method", ["girsanov", "euler_maruyama", "ngo"])
def test_all_methods_check_inputs(method):
    """The NGO path runs the same checks as the other estimators."""
    op = parabolic.NeuralGirsanovOperator(2, width=4, key=KEY) if method == "ngo" else None
    with pytest.raises(ValueError, match=r"`T` must be finite and > 0"):
        _fk(T=0.0, method=method, operator=op)
    with pytest.raises(ValueError, match=r"`sigma` must be finite and > 0"):
        _fk(sigma=-1.0, method=method, operator=op)
    with pytest.raises(ValueError, match=r"`drift` .*returning shape \(2,\); it returned \(3,\)"):
        _fk(drift=lambda t, x: jnp.ones(3), method=method, operator=op)
    with pytest.raises(RuntimeError, match=r"`p0` returned a non-finite value"):
        _fk(p0=lambda x: jnp.log(x[0]), method=method, operator=op)
