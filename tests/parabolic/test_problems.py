"""The exact references: closed forms against independent checks (the PDE itself by
autodiff, the initial condition, published anchors), without any Monte Carlo."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adjoint_lab.parabolic import problems

P = problems

# AffineDriftCosine is checked against its moment ODEs below: autodiff through expm
# twice compiles slowly.
CASES = [
    (P.OrnsteinUhlenbeckDensity(theta=1.0), [0.4, -0.7]),
    (P.OrnsteinUhlenbeckDensity(theta=-0.5, sigma=0.8, initial_std=0.6), [0.2]),
    (P.BlackScholesCall(r=0.05, sigma=0.3, strike=1.0), [0.1]),
    (P.BlackScholesBarenblatt(r=0.05, sigma=0.4), [0.1, -0.3, 0.2]),
    (P.LogTerminalHJB(), [0.5, -0.2, 0.3]),
    (P.QuadraticTerminalHJB(a=0.5, lam=1.5), [0.5, -0.2]),
    (P.HarmonicPotential(c=0.5, sigma=0.9), [0.4, 0.1]),
]


@jax.jit
def _pde_sides(problem, T, x):
    p = lambda T, x: problem.exact(T, x)
    dp_dt = jax.grad(p, argnums=0)(T, x)
    grad = jax.grad(p, argnums=1)(T, x)
    hess = jax.hessian(p, argnums=1)(T, x)
    sigma2 = jnp.broadcast_to(problem.sigma**2, x.shape)
    value = p(T, x)
    rhs = (
        problem.drift(T, x) @ grad
        + 0.5 * jnp.sum(sigma2 * jnp.diag(hess))
        - problem.rate(T, x) * value
    )
    return dp_dt, rhs, value


@pytest.mark.parametrize("problem, x", CASES, ids=lambda c: type(c).__name__)
def test_exact_solves_the_pde(problem, x):
    """dp/dT = mu . grad p + 1/2 sigma^2 lap p - r p, and p(0+, x) = p0(x)."""
    x = jnp.asarray(x, jnp.float64)
    dp_dt, rhs, value = _pde_sides(problem, 0.4, x)
    assert abs(dp_dt - rhs) < 1e-6 * (abs(dp_dt) + abs(value)), (dp_dt, rhs)
    np.testing.assert_allclose(problem.exact(1e-10, x), problem.p0(x), rtol=1e-6, atol=1e-9)


def test_exact_accepts_batches():
    problem = P.OrnsteinUhlenbeckDensity()
    xs = jnp.linspace(-1, 1, 6).reshape(3, 2)
    batched = problem.exact(0.3, xs)
    assert batched.shape == (3,)
    np.testing.assert_allclose(batched, [problem.exact(0.3, x) for x in xs], rtol=1e-14)
    assert problem.exact(0.3, xs[None]).shape == (1, 3)


def test_anchors():
    # Deep BSDE (Han, Jentzen, E 2018): u(0, 0) = 4.5901 for the 100-d HJB with T = 1.
    u = P.LogTerminalHJB().exact_value(1.0, jnp.zeros(100))
    assert abs(u - 4.5901) < 1e-4
    # FBSNN (Raissi 2018): 100-d Black-Scholes-Barenblatt, 62.5 e^0.21.
    s0 = jnp.array([1.0, 0.5] * 50)
    assert abs(P.BlackScholesBarenblatt().exact(1.0, jnp.log(s0)) - 62.5 * np.exp(0.21)) < 1e-9
    assert abs(62.5 * np.exp(0.21) - 77.1049) < 1e-4
    # Textbook Black-Scholes call: S = K = 100, r = 5%, sigma = 20%, one year.
    call = P.BlackScholesCall(r=0.05, sigma=0.2, strike=100.0)
    assert abs(call.exact(1.0, jnp.log(jnp.array([100.0]))) - 10.4506) < 1e-4
    # The paper notes' 1-d OU check: the density at x = 1, t = 0.5 is 0.1834.
    assert abs(P.OrnsteinUhlenbeckDensity().exact(0.5, jnp.array([1.0])) - 0.1834) < 1e-4


def test_hjb_quadrature_against_tensor_gauss_hermite():
    """The (|x| + Z, chi^2) decomposition against a plain 3-d tensor Gauss-Hermite rule."""
    problem = P.LogTerminalHJB(lam=1.3)
    x, T = jnp.array([0.4, -0.3, 0.6]), 0.3
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)
    weights = weights / weights.sum()
    grid = np.stack(np.meshgrid(nodes, nodes, nodes, indexing="ij"), -1).reshape(-1, 3)
    w = np.prod(np.stack(np.meshgrid(weights, weights, weights, indexing="ij"), -1), -1)
    y = np.asarray(x) + np.sqrt(2 * T) * grid
    reference = np.sum(w.ravel() * (2 / (1 + np.sum(y**2, -1))) ** 1.3)
    np.testing.assert_allclose(problem.exact(T, x), reference, rtol=1e-8)


def test_affine_moments_match_their_odes():
    """dm/dt = A m + b and dS/dt = A S + S A^T + diag(sigma^2), integrated by RK4."""
    A = np.array([[-0.5, 0.3, 0.0], [0.1, -0.8, 0.4], [0.2, 0.0, 0.3]])
    b, sigma = np.array([0.2, -0.1, 0.5]), np.array([0.7, 1.1, 0.9])
    x, T, n = np.array([0.3, -0.2, 1.0]), 0.9, 400

    def rhs(state):
        m, S = state
        return A @ m + b, A @ S + S @ A.T + np.diag(sigma**2)

    state, h = (x, np.zeros((3, 3))), T / n
    for _ in range(n):
        k1 = rhs(state)
        k2 = rhs(tuple(s + h / 2 * k for s, k in zip(state, k1, strict=True)))
        k3 = rhs(tuple(s + h / 2 * k for s, k in zip(state, k2, strict=True)))
        k4 = rhs(tuple(s + h * k for s, k in zip(state, k3, strict=True)))
        state = tuple(
            s + h / 6 * (a + 2 * b_ + 2 * c + d)
            for s, a, b_, c, d in zip(state, k1, k2, k3, k4, strict=True)
        )
    mean, cov = P.affine_gaussian_moments(
        jnp.asarray(A), jnp.asarray(b), jnp.asarray(sigma), T, jnp.asarray(x)
    )
    np.testing.assert_allclose(mean, state[0], rtol=1e-10)
    np.testing.assert_allclose(cov, state[1], rtol=1e-10, atol=1e-12)


def test_affine_moments_match_the_scalar_formula():
    a, b, sigma, T, x = -0.7, 0.3, 1.3, 0.8, 0.4
    mean, cov = P.affine_gaussian_moments(
        jnp.array([[a]]), jnp.array([b]), jnp.asarray(sigma), T, jnp.array([x])
    )
    np.testing.assert_allclose(mean, [x * np.exp(a * T) + b / a * np.expm1(a * T)], rtol=1e-12)
    np.testing.assert_allclose(cov, [[sigma**2 * np.expm1(2 * a * T) / (2 * a)]], rtol=1e-12)


def test_ou_sign_of_the_paper_is_wrong():
    """The paper's FP test uses the auxiliary drift +x: its exact heat-kernel value (with
    the same discount) is far from the true density."""
    problem = P.OrnsteinUhlenbeckDensity()
    # With drift +x: Y_T ~ N(x e^T, (e^{2T} - 1)/2); E[p0(Y_T)] e^{-T} in 1-d.
    T, x = 0.5, 1.0
    mean, var = x * np.exp(T), np.expm1(2 * T) / 2
    with_plus = np.exp(-T) * np.exp(-0.5 * mean**2 / (1 + var)) / np.sqrt(2 * np.pi * (1 + var))
    assert abs(with_plus - 0.0854) < 1e-4
    assert abs(problem.exact(T, jnp.array([x])) - with_plus) > 0.09


@pytest.mark.untyped("ill-typed arguments on purpose: the hook refuses them first")
def test_problem_parameter_errors():
    with pytest.raises(ValueError, match="sigma"):
        P.OrnsteinUhlenbeckDensity(sigma=0.0)
    with pytest.raises(ValueError, match="strike"):
        P.BlackScholesCall(strike=-1.0)
    with pytest.raises(ValueError, match="shape"):
        P.AffineDriftCosine(jnp.ones(2), jnp.ones(3))
    with pytest.raises(ValueError, match="A"):
        P.AffineDriftCosine(jnp.ones(2), jnp.ones(2), A=jnp.eye(3))
    with pytest.raises(ValueError, match=r"\(\.\.\., 1\)"):
        P.BlackScholesCall().exact(1.0, jnp.zeros(2))
