"""The Neural Girsanov Operator: its features carry the left-point Girsanov terms, it is
causal and per-path, and a tiny training over the drift family beats the drift-blind
untrained operator on held-out drifts against exact solutions."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adjoint_lab import parabolic
from adjoint_lab.parabolic import problems

KEY = jax.random.PRNGKey(0)


def _exact_girsanov_operator(d: int) -> parabolic.NeuralGirsanovOperator:
    """An untrained `init="girsanov"` NGO: its skip read-out is theta . dW - |theta|^2 h / 2."""
    return parabolic.NeuralGirsanovOperator(
        d, width=8, depth=1, n_mixers=1, clip=1e4, init="girsanov", key=KEY
    )


def test_affine_sine_exact_matches_affine_drift_cosine():
    """The family's closed form against the independent Van Loan solution of
    `AffineDriftCosine` (sin = cos shifted by -pi/2, one plane wave per coordinate)."""
    c, T, omega, phase = jnp.array([0.7, -0.4, 0.0]), 0.3, 2.0, 0.5
    x = jnp.array([[0.1, 0.5, -0.2], [0.4, 0.0, 0.3]])
    initial = parabolic.SineInitial(omega, phase)
    ours = parabolic.affine_sine_exact(c, initial, T, x, sigma=0.8)
    reference = sum(
        problems.AffineDriftCosine(
            c[0] * jnp.ones(3),
            omega * jnp.eye(3)[i],
            A=c[1] * jnp.eye(3),
            phase=phase - jnp.pi / 2,
            sigma=0.8,
        ).exact(T, x)
        for i in range(3)
    )
    np.testing.assert_allclose(ours, reference, rtol=1e-10)
    # c1 = 0 uses the limit branch.
    flat = parabolic.affine_sine_exact(jnp.array([0.7, 0.0, 0.0]), initial, T, x)
    shift = problems.AffineDriftCosine(0.7 * jnp.ones(3), omega * jnp.eye(3)[0], phase=phase - 1)
    assert flat.shape == (2,) and shift is not None
    expected = jnp.sum(jnp.sin(omega * (x + 0.7 * T) + phase), -1) * jnp.exp(-(omega**2) * T / 2)
    np.testing.assert_allclose(flat, expected, rtol=1e-10)


def test_hand_set_operator_is_exactly_girsanov():
    """Features are aligned: the Ito read-out reproduces the left-point Girsanov log-weights
    path by path (a scrambled or right-point feature tensor would not)."""
    x = jnp.array([[0.2, -0.1], [0.5, 0.3]])
    paths = parabolic.BasePaths.sample(KEY, x, T=0.4, n_paths=64, n_steps=8, sigma=0.7)
    drift = parabolic.RandomBasisDrift(jnp.array([0.3, -0.8, 0.5]))
    theta, h = parabolic.path_features(drift, paths)
    op = _exact_girsanov_operator(2)
    ours = jax.vmap(jax.vmap(op.log_weight, (0, 0, None)), (0, None, None))(
        theta, paths.increments, h
    )
    np.testing.assert_allclose(ours, paths.log_weights(drift), rtol=1e-10, atol=1e-12)
    p0 = lambda y: jnp.cos(y[0]) + y[1]
    np.testing.assert_allclose(
        parabolic.ngo_expectation(op, paths, drift, p0).value,
        paths.expectation(drift, p0).value,
        rtol=1e-10,
    )


def test_untrained_operator_is_drift_blind():
    """Zero read-outs: weight 1 on every path, i.e. plain Monte Carlo of the base process."""
    x = jnp.array([[0.2, -0.1]])
    paths = parabolic.BasePaths.sample(KEY, x, T=0.3, n_paths=32, n_steps=5)
    op = parabolic.NeuralGirsanovOperator(2, width=8, key=KEY)
    p0 = lambda y: jnp.sum(y**2)
    got = parabolic.ngo_expectation(op, paths, lambda t, y: 3.0 + y, p0)
    want = paths.expectation(lambda t, y: jnp.zeros_like(y), p0)
    np.testing.assert_allclose(got.value, want.value, rtol=1e-12)
    np.testing.assert_allclose(got.ess, 32.0)


def test_operator_is_causal_and_mixes_time():
    """a_k depends on features of steps k-kernel+1..k: not on later steps (no look-ahead,
    hence no right-point bias), but on earlier ones (temporal mixing)."""
    op = parabolic.NeuralGirsanovOperator(2, width=8, kernel=3, n_mixers=2, key=KEY)
    # Non-zero head so that the mixed features reach the output.
    op = eqx.tree_at(lambda o: o.head.weight, op, jnp.ones_like(op.head.weight))
    theta = jax.random.normal(jax.random.PRNGKey(1), (10, 2))
    dw = 0.1 * jax.random.normal(jax.random.PRNGKey(2), (10, 2))
    jac = jax.jacobian(op.log_increments, argnums=1)(theta, dw, jnp.asarray(0.01))  # (10, 10, 2)
    influence = np.abs(np.asarray(jac)).sum(-1)
    assert np.all(np.triu(influence, 1) == 0)  # step j > k never reaches a_k
    assert np.all(np.diag(influence, -1) > 0) and np.all(np.diag(influence, -4) > 0)


def test_weights_are_per_path():
    """Permuting the paths permutes the weights (the paper's code mixes paths in channels)."""
    x = jnp.array([[0.1, 0.4]])
    paths = parabolic.BasePaths.sample(KEY, x, T=0.2, n_paths=16, n_steps=6)
    op = parabolic.NeuralGirsanovOperator(2, width=8, key=KEY)
    op = eqx.tree_at(lambda o: o.head.weight, op, jnp.ones_like(op.head.weight))
    drift = parabolic.RandomBasisDrift(jnp.array([0.5, 0.2, -0.3]))
    order = jax.random.permutation(KEY, 16)
    shuffled = eqx.tree_at(lambda p: p.increments, paths, paths.increments[order])

    def log_w(bank):
        theta, h = parabolic.path_features(drift, bank)
        return jax.vmap(op.log_weight, (0, 0, None))(theta[0], bank.increments, h)

    np.testing.assert_allclose(log_w(shuffled), log_w(paths)[order], rtol=1e-12)


@pytest.fixture(scope="module")
def trained():
    config = parabolic.NGOTrainingConfig(
        T=0.5,
        n_steps=10,
        n_paths=32,
        n_target_paths=128,
        n_tasks=4,
        n_points=2,
        x_low=-0.5,
        x_high=0.5,
        c_low=(-1.0, -1.0, -0.5),
        c_high=(1.0, 1.0, 0.5),
        omega=2.0,
        steps=80,
        learning_rate=5e-2,
    )
    untrained = parabolic.NeuralGirsanovOperator(1, width=16, depth=1, n_mixers=1, key=KEY)
    operator, losses = parabolic.train_ngo(untrained, config, jax.random.PRNGKey(3))
    return untrained, operator, losses, config


def test_trained_ngo_beats_untrained_on_held_out_drifts(trained):
    """On held-out affine drifts (exact solutions, fresh paths) the trained NGO's error is
    within a few stderrs of zero, and well below the untrained (drift-blind) operator's."""
    untrained, operator, losses, config = trained
    assert np.all(np.isfinite(losses)) and losses[-20:].mean() < losses[:5].mean()
    x = jnp.linspace(-0.5, 0.5, 8)[:, None]
    paths = parabolic.BasePaths.sample(jax.random.PRNGKey(11), x, T=0.5, n_paths=2000, n_steps=10)
    c = parabolic.sample_coefficients(jax.random.PRNGKey(12), 4, (-1, -1, 0), (1, 1, 0))
    initial = parabolic.SineInitial(2.0, 0.4)
    errors = {}
    for name, op in (("untrained", untrained), ("trained", operator)):
        est = jax.vmap(
            lambda ci, op=op: parabolic.ngo_expectation(
                op, paths, parabolic.RandomBasisDrift(ci), initial
            )
        )(c)
        exact = jax.vmap(lambda ci: parabolic.affine_sine_exact(ci, initial, 0.5, x))(c)
        errors[name] = float(jnp.sqrt(jnp.mean((est.value - exact) ** 2)))
        stderr = float(jnp.sqrt(jnp.mean(est.stderr**2)))
    # The drift-blind error is the drift's whole effect (~0.3 here); the trained one must
    # remove most of it. Its residual: model error plus ~1 stderr of noise.
    assert errors["untrained"] > 5 * stderr
    assert errors["trained"] < 0.35 * errors["untrained"], errors
    assert errors["trained"] < 4 * stderr, (errors, stderr)


def test_feynman_kac_ngo():
    operator = _exact_girsanov_operator(1)
    x = jnp.array([[0.1], [0.3]])
    kwargs = dict(T=0.5, n_paths=500, n_steps=10, key=KEY)
    drift = parabolic.RandomBasisDrift(jnp.array([0.4, -0.3, 0.0]))
    initial = parabolic.SineInitial(2.0, 0.0)
    est = parabolic.feynman_kac(drift, initial, x, method="ngo", operator=operator, **kwargs)
    assert est.value.shape == est.stderr.shape == (2,)
    # Same base paths as the Girsanov method (common random numbers), the same weights.
    gir = parabolic.feynman_kac(drift, initial, x, **kwargs)
    np.testing.assert_allclose(est.value, gir.value, rtol=1e-10)
    with pytest.raises(ValueError, match=r"pass `operator=`, a trained"):
        parabolic.feynman_kac(drift, initial, x, method="ngo", **kwargs)
    with pytest.raises(
        ValueError, match=r"built for d = 1 dimensions but the points `x` have d = 2"
    ):
        parabolic.feynman_kac(
            lambda t, y: y,
            lambda y: y[0],
            jnp.zeros((1, 2)),
            method="ngo",
            operator=operator,
            **kwargs,
        )
    with pytest.raises(ValueError, match=r"`operator` is only used with method='ngo'"):
        parabolic.feynman_kac(drift, initial, x, operator=operator, **kwargs)


@pytest.mark.untyped("ill-typed arguments on purpose: the hook refuses them first")
def test_feynman_kac_refuses_an_operator_that_is_not_one():
    x, drift = jnp.array([[0.1], [0.3]]), parabolic.RandomBasisDrift(jnp.array([0.4, -0.3, 0.0]))
    with pytest.raises(TypeError, match=r"`operator` must be a `NeuralGirsanovOperator`"):
        parabolic.feynman_kac(
            drift, parabolic.SineInitial(2.0, 0.0), x, method="ngo", operator=object(),
            T=0.5, n_paths=500, n_steps=10, key=KEY,
        )  # fmt: skip
