"""Linear recurrences: forward scans, adjoint gradients, chunks, windowed adjoints.

References are independent of the code under test: `lax.scan` (and `jax.grad` through it)
and plain Python/numpy loops. Shapes are tiny and every jitted function is shared between
tests, so that the file compiles few functions.
"""

import functools as ft

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adjoint_lab.core import (
    Dense,
    adjoint_states,
    affine_scan,
    assert_tree_allclose,
    associative_recurrence,
    boundary_states,
    chunked_linear_recurrence,
    chunked_scan,
    compiled_memory,
    linear_recurrence,
    linear_recurrence_vjp,
    sequential_recurrence,
    windowed_adjoint_states,
)

DENSE = Dense()
dense_adjoint_states = ft.partial(adjoint_states, transition=DENSE)
dense_chunked_linear_recurrence = ft.partial(chunked_linear_recurrence, transition=DENSE)
dense_linear_recurrence = ft.partial(linear_recurrence, transition=DENSE)
dense_linear_recurrence_vjp = ft.partial(linear_recurrence_vjp, transition=DENSE)
dense_windowed_adjoint_states = ft.partial(windowed_adjoint_states, transition=DENSE)

T = 13  # prime: no chunk size in (1, T) divides it
STATE = (2, 3)
N = 3
TOL = dict(rtol=1e-12, atol=1e-12)


def _rng(seed):
    return np.random.default_rng(seed)


def _diagonal_data(seed=0, length=T, state=STATE):
    rng = _rng(seed)
    a = rng.uniform(-1.0, 1.1, (length, *state))
    b = rng.standard_normal((length, *state))
    h0 = rng.standard_normal(state)
    w = rng.standard_normal((length, *state))
    return a, b, h0, w


def _dense_data(seed=0, length=T):
    rng = _rng(seed)
    A = 0.6 * rng.standard_normal((length, N, N))
    b = rng.standard_normal((length, N))
    h0 = rng.standard_normal(N)
    w = rng.standard_normal((length, N))
    return A, b, h0, w


# ----------------------------------------------------------------------------- references


def _scan_reference(a, b, h0):
    def step(h, ab):
        h = ab[0] * h + ab[1]
        return h, h

    return jax.lax.scan(step, jnp.zeros_like(b[0]) if h0 is None else h0, (a, b))[1]


def _dense_scan_reference(A, b, h0):
    def step(h, Ab):
        h = Ab[0] @ h + Ab[1]
        return h, h

    return jax.lax.scan(step, jnp.zeros_like(b[0]) if h0 is None else h0, (A, b))[1]


def _loss(recurrence, a, b, h0, w):
    return jnp.sum(jnp.sin(recurrence(a, b, h0)) * w)


def _value_and_grads(recurrence):
    """One jitted function: the states and the gradients of `_loss` w.r.t. a, b (and h0)."""

    def run(a, b, h0, w):
        argnums = (0, 1) if h0 is None else (0, 1, 2)
        grads = jax.grad(ft.partial(_loss, recurrence), argnums=argnums)(a, b, h0, w)
        return recurrence(a, b, h0), grads

    return jax.jit(run)


_reference = _value_and_grads(_scan_reference)
_dense_reference = _value_and_grads(_dense_scan_reference)
_full = _value_and_grads(linear_recurrence)
_dense_full = _value_and_grads(dense_linear_recurrence)
_plain = _value_and_grads(associative_recurrence)
_dense_plain = _value_and_grads(ft.partial(associative_recurrence, transition=DENSE))
_sequential = _value_and_grads(sequential_recurrence)
_dense_sequential = _value_and_grads(ft.partial(sequential_recurrence, transition=DENSE))


@ft.cache
def _chunked(chunk):
    return _value_and_grads(ft.partial(chunked_linear_recurrence, chunk=chunk))


@ft.cache
def _dense_chunked(chunk):
    return _value_and_grads(ft.partial(dense_chunked_linear_recurrence, chunk=chunk))


def _adjoint_loop(a, c):
    """μ_T = c_T, μ_t = a_{t+1} μ_{t+1} + c_t, by a Python loop."""
    mu = np.array(c, dtype=np.result_type(a, c))
    for t in range(len(c) - 2, -1, -1):
        mu[t] += a[t + 1] * mu[t + 1]
    return mu


def _windowed_loop(a, c, window):
    """μ̄_t = Σ_{i=t}^{min(t+W-1,T)} (a_{t+1} ⋯ a_i) c_i: the definition, term by term."""
    out = np.zeros_like(c)
    for t in range(len(c)):
        for i in range(t, min(t + window, len(c))):
            out[t] += np.prod(a[t + 1 : i + 1], axis=0) * c[i]
    return out


def _dense_windowed_loop(A, c, window):
    out = np.zeros_like(c)
    for t in range(len(c)):
        phi = np.eye(A.shape[1])
        for i in range(t, min(t + window, len(c))):
            if i > t:
                phi = A[i] @ phi
            out[t] += phi.T @ c[i]
    return out


# ----------------------------------------------------------------------------- forward + grad


@pytest.mark.parametrize("with_h0", [True, False])
def test_linear_recurrence_matches_scan_and_its_gradient(with_h0):
    a, b, h0, w = _diagonal_data()
    h0 = h0 if with_h0 else None
    expected = _reference(a, b, h0, w)
    assert_tree_allclose(_full(a, b, h0, w), expected, **TOL)
    # The plain associative scan, differentiated by autodiff, gives the same.
    assert_tree_allclose(_plain(a, b, h0, w), expected, **TOL)
    # And so does the step-by-step scan, checked against the adjoint by a Python loop.
    states, grads = _sequential(a, b, h0, w)
    assert_tree_allclose(states, expected[0], **TOL)
    mu = _adjoint_loop(a, np.cos(np.asarray(states)) * w)
    assert_tree_allclose(grads[1], mu, **TOL)


def test_affine_scan_gives_the_transport_and_the_state_from_zero():
    a, b, h0, _ = _diagonal_data(seed=8)
    transport, h = jax.jit(affine_scan)(a, b)
    assert_tree_allclose(transport, np.cumprod(a, axis=0), **TOL)
    assert_tree_allclose(h, _scan_reference(a, b, None), **TOL)
    # From any h0: Φ_t h0 + h_t.
    assert_tree_allclose(transport * h0 + h, _scan_reference(a, b, h0), **TOL)


@pytest.mark.parametrize("chunk", [1, 4, 5, 13, 20])
def test_chunked_matches_scan_and_its_gradient(chunk):
    # 4 and 5 do not divide T = 13 (padded last chunk); 13 is one chunk, 20 > T.
    a, b, h0, w = _diagonal_data(seed=1)
    assert_tree_allclose(_chunked(chunk)(a, b, h0, w), _reference(a, b, h0, w), **TOL)


def test_chunked_without_h0():
    a, b, _, w = _diagonal_data(seed=2)
    assert_tree_allclose(_chunked(4)(a, b, None, w), _reference(a, b, None, w), **TOL)


def test_broadcast_transitions():
    # `a` of shape (1, 2, 1): time-invariant and shared over the last axis. Its gradient is
    # the sum over the broadcast axes.
    a, b, h0, w = _diagonal_data(seed=3)
    small = a[:1, :, :1]

    @jax.jit
    def run(small_):
        ours = jax.value_and_grad(lambda s: _loss(linear_recurrence, s, b, h0, w))(small_)
        full = lambda s: jnp.broadcast_to(s, a.shape)
        ref = jax.value_and_grad(lambda s: _loss(_scan_reference, full(s), b, h0, w))(small_)
        return ours, ref

    ours, ref = run(small)
    assert ours[1].shape == small.shape
    assert_tree_allclose(ours, ref, **TOL)


def test_complex_recurrence():
    # JAX's VJP is the transpose (not the conjugate transpose) of the JVP; the adjoint
    # formulas hold unchanged.
    rng = _rng(4)
    shape = (T, 2)
    a = rng.uniform(0.3, 1.0, shape) * np.exp(1j * rng.uniform(-np.pi, np.pi, shape))
    b = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    h0 = rng.standard_normal(2) + 1j * rng.standard_normal(2)
    w = rng.standard_normal(shape)

    def loss(recurrence, a_, b_, h0_):
        return jnp.sum(jnp.abs(recurrence(a_, b_, h0_)) ** 2 * w)

    grad = jax.jit(jax.grad(loss, argnums=(1, 2, 3)), static_argnums=0)
    assert_tree_allclose(grad(linear_recurrence, a, b, h0), grad(_scan_reference, a, b, h0), **TOL)


def test_dense_matches_scan_and_its_gradient():
    A, b, h0, w = _dense_data()
    expected = _dense_reference(A, b, h0, w)
    assert_tree_allclose(_dense_full(A, b, h0, w), expected, **TOL)
    assert_tree_allclose(_dense_chunked(5)(A, b, h0, w), expected, **TOL)
    assert_tree_allclose(_dense_plain(A, b, h0, w), expected, **TOL)
    assert_tree_allclose(_dense_sequential(A, b, h0, w), expected, **TOL)
    assert_tree_allclose(_dense_full(A, b, None, w), _dense_reference(A, b, None, w), **TOL)


# ----------------------------------------------------------------------------- adjoint pieces


def test_adjoint_states_and_vjp():
    a, b, h0, c = _diagonal_data(seed=5)
    assert_tree_allclose(_adjoint_states(a, c), _adjoint_loop(a, c), **TOL)

    @jax.jit
    def run(h0_):
        h, vjp = jax.vjp(_scan_reference, a, b, h0_)
        return linear_recurrence_vjp(a, h, c, h0_), vjp(c)

    ours, expected = run(h0)
    assert_tree_allclose(ours, expected, **TOL)
    # With a zero h0 (None) the first step sees a zero state; ∂L/∂h0 is still a_1 ⊙ μ_1.
    h_zero = _scan_reference(a, b, None)
    ours = jax.jit(linear_recurrence_vjp)(a, h_zero, c)
    assert_tree_allclose(ours, run(jnp.zeros(STATE))[1], **TOL)


def test_vjp_with_a_carry_from_the_steps_after():
    # On the first 7 steps of a sequence, the VJP with the adjoint carried back from steps
    # 8.. equals the whole sequence's VJP restricted to them.
    a, b, h0, c = _diagonal_data(seed=6)
    h = _scan_reference(a, b, h0)
    whole = jax.jit(linear_recurrence_vjp)(a, h, c, h0)
    _, _, carry = jax.jit(linear_recurrence_vjp)(a[7:], h[7:], c[7:], h[6])
    part = jax.jit(linear_recurrence_vjp)(a[:7], h[:7], c[:7], h0, carry=carry)
    assert_tree_allclose(part, (whole[0][:7], whole[1][:7], whole[2]), **TOL)


def test_dense_adjoint_states_and_vjp():
    A, b, h0, c = _dense_data(seed=7)
    mu = np.array(c)
    for t in range(T - 2, -1, -1):
        mu[t] += A[t + 1].T @ mu[t + 1]
    assert_tree_allclose(jax.jit(dense_adjoint_states)(A, c), mu, **TOL)

    @jax.jit
    def run():
        h, vjp = jax.vjp(_dense_scan_reference, A, b, h0)
        return dense_linear_recurrence_vjp(A, h, c, h0), vjp(c)

    ours, expected = run()
    assert_tree_allclose(ours, expected, **TOL)


# ----------------------------------------------------------------------------- vmap, jit


def test_vmap_and_jit():
    batch = [_diagonal_data(seed=10 + i) for i in range(2)]
    a, b, h0, w = (np.stack(x) for x in zip(*batch, strict=True))
    for run in (_full, _chunked(5)):
        got = jax.vmap(run)(a, b, h0, w)
        for i in range(2):
            assert_tree_allclose(jax.tree.map(lambda x, i=i: x[i], got), _reference(*batch[i]))
    windowed = jax.jit(jax.vmap(ft.partial(windowed_adjoint_states, window=5)))(a, w)
    for i in range(2):
        assert_tree_allclose(windowed[i], _windowed_loop(a[i], w[i], 5), **TOL)
    dense = [_dense_data(seed=20 + i) for i in range(2)]
    A, bd, hd, wd = (np.stack(x) for x in zip(*dense, strict=True))
    got = jax.vmap(_dense_full)(A, bd, hd, wd)
    for i in range(2):
        assert_tree_allclose(jax.tree.map(lambda x, i=i: x[i], got), _dense_reference(*dense[i]))


# ----------------------------------------------------------------------------- windowed

_WINDOWED_T = 12  # divisible by 3, not by 5
_WINDOWS = [1, 3, 5, 12]  # W > T is clamped to T: tested against μ below
_windowed = jax.jit(windowed_adjoint_states, static_argnames="window")
_dense_windowed = jax.jit(dense_windowed_adjoint_states, static_argnames="window")
_adjoint_states = jax.jit(adjoint_states)


def _transitions(kind, rng, shape):
    if kind == "uniform":
        return rng.uniform(0.0, 1.0, shape)
    if kind == "signed":
        return rng.uniform(-1.2, 1.2, shape)
    if kind == "near_zero":
        return rng.choice([0.0, 1e-300, 1e-12, -1e-9, 0.5], shape)
    if kind == "near_one":
        return rng.choice([1.0, 1.0 - 1e-12, 1.0 - 1e-6, -1.0, 1.0 + 1e-9], shape)
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["uniform", "signed", "near_zero", "near_one"])
def test_windowed_matches_the_double_sum(kind):
    rng = _rng(30)
    shape = (_WINDOWED_T, 3)
    a = _transitions(kind, rng, shape)
    c = rng.standard_normal(shape)
    for window in _WINDOWS:
        expected = _windowed_loop(a, c, window)
        scale = dict(rtol=1e-10, atol=1e-10 * np.abs(expected).max())
        assert_tree_allclose(_windowed(a, c, window=window), expected, **scale)
    # The two ends: the whole adjoint, and only the direct cotangent.
    assert_tree_allclose(_windowed(a, c, window=_WINDOWED_T), _adjoint_states(a, c), **TOL)
    assert_tree_allclose(_windowed(a, c, window=40), _adjoint_loop(a, c), **TOL)
    assert_tree_allclose(_windowed(a, c, window=1), c, rtol=0, atol=0)


def test_windowed_is_stable_where_the_subtraction_cancels():
    # a ≈ 1 and large cotangents beyond the window: μ_t is ~1e9 while μ̄_t is O(W), so
    # μ̄_t = μ_t - Φ(t+W,t) μ_{t+W} loses ~9 digits; the block form loses none.
    length, window = 64, 8
    rng = _rng(31)
    a = 1.0 - 1e-9 * rng.uniform(size=(length, 2))
    c = rng.standard_normal((length, 2))
    c[40:] *= 1e8
    expected = _windowed_loop(a, c, window)
    got = _windowed(a, c, window=window)
    assert_tree_allclose(got, expected, rtol=1e-12, atol=0)
    mu = _adjoint_loop(a, c)
    phi = np.stack([np.prod(a[t + 1 : t + window + 1], axis=0) for t in range(length - window)])
    subtracted = mu[: length - window] - phi * mu[window:]
    error = np.abs(subtracted - expected[: length - window]).max()
    assert error > 1e-10 * np.abs(expected[:32]).max(), error  # the test case is a hard one


def test_dense_windowed_matches_the_double_sum():
    A, _, _, c = _dense_data(seed=32, length=_WINDOWED_T)
    A[4] = 0.0  # a zero transition cuts every window through it
    for window in (1, 3, 5):
        expected = _dense_windowed_loop(A, c, window)
        assert_tree_allclose(_dense_windowed(A, c, window=window), expected, **TOL)
    mu = jax.jit(dense_adjoint_states)(A, c)
    assert_tree_allclose(_dense_windowed(A, c, window=40), mu, **TOL)


# ----------------------------------------------------------------------------- memory


def test_chunked_gradient_memory():
    # Compile-time memory of the gradient at T=4096, D=64, float32 (nothing is run).
    length, width, chunk = 4096, 64, 64
    spec = jax.ShapeDtypeStruct((length, width), jnp.float32)
    one_sequence = length * width * 4

    def assoc(a, b, h0):
        del h0
        return jax.lax.associative_scan(lambda x, y: (y[0] * x[0], y[0] * x[1] + y[1]), (a, b))[1]

    methods = {
        "lax.scan": _scan_reference,
        "associative_scan": assoc,
        "linear_recurrence": linear_recurrence,
        "chunked": ft.partial(chunked_linear_recurrence, chunk=chunk),
    }
    temp = {}
    for name, recurrence in methods.items():
        grad = jax.grad(ft.partial(_loss, recurrence), argnums=(0, 1))
        temp[name] = compiled_memory(
            lambda a, b, w, g=grad: g(a, b, None, w), spec, spec, spec
        ).temp
    print({k: f"{v / 1e6:.2f} MB" for k, v in temp.items()})
    # The loss needs h and cos(h) anyway; beyond that, the chunked gradient keeps T/C
    # boundary states and one chunk.
    assert temp["chunked"] < temp["lax.scan"]
    assert temp["chunked"] < temp["associative_scan"]
    assert temp["linear_recurrence"] < temp["associative_scan"]
    # With a loss linear in h nothing else is needed: less than one sequence of states.
    linear = jax.grad(lambda a, b, w: jnp.sum(chunked_linear_recurrence(a, b, chunk=chunk) * w))
    linear_temp = compiled_memory(linear, spec, spec, spec).temp
    print(f"chunked, linear loss: {linear_temp / 1e6:.2f} MB")
    assert linear_temp < one_sequence / 2


# ----------------------------------------------------------------------------- errors


@pytest.mark.untyped("ill-typed arguments on purpose: the hook refuses them first")
def test_errors_name_the_argument():
    a, b, h0, _ = _diagonal_data()
    with pytest.raises(ValueError, match="`a` has shape"):
        linear_recurrence(a[:, 0], b)
    with pytest.raises(ValueError, match="do not broadcast"):
        linear_recurrence(a[:5], b)
    with pytest.raises(ValueError, match="`h0` has shape"):
        linear_recurrence(a, b, h0[:1, :2])
    with pytest.raises(ValueError, match="chunk"):
        chunked_linear_recurrence(a, b, chunk=0)
    with pytest.raises(ValueError, match="window"):
        windowed_adjoint_states(a, b, window=2.0)
    with pytest.raises(ValueError, match="`a` has shape"):
        dense_linear_recurrence(np.zeros((T, 3, 2)), np.zeros((T, 3)))
    with pytest.raises(ValueError, match=r"Diagonal\(\)"):
        linear_recurrence(a, b, transition="dense")
    with pytest.raises(ValueError, match="`c` has shape"):
        linear_recurrence_vjp(a, b, b[:-1])


# ----------------------------------------------------------------------------- chunk scans


def test_chunked_scan_and_boundary_states():
    # A chunk step that is itself a recurrence (as a layer stack would be): the chunked scan
    # gives the whole recurrence, and the boundary states are the states before each chunk.
    a, b, h0, _ = _diagonal_data(seed=40, length=12)

    def step(h, xs):
        h_k = _scan_reference(*xs, h)
        return h_k[-1], h_k

    @jax.jit
    def run(a, b, h0):
        end, hs = chunked_scan(step, h0, (a, b), chunk=4)
        starts = boundary_states(lambda h, xs: step(h, xs)[0], h0, (a, b), chunk=4)
        back, _ = chunked_scan(step, h0, (a, b), chunk=4, reverse=True)
        return end, hs.reshape(a.shape), starts, back

    end, hs, starts, back = run(a, b, h0)
    expected = _scan_reference(a, b, h0)
    assert_tree_allclose(hs, expected, **TOL)
    assert_tree_allclose(end, expected[-1], **TOL)
    assert_tree_allclose(starts, np.stack([h0, expected[3], expected[7]]), **TOL)
    # Reversed, the chunks run last to first: chunk 0 comes last, from chunk 1's end.
    chunk1 = _scan_reference(a[4:8], b[4:8], _scan_reference(a[8:], b[8:], h0)[-1])
    assert_tree_allclose(back, _scan_reference(a[:4], b[:4], chunk1[-1])[-1], **TOL)


def test_chunk_scans_refuse_a_length_that_is_not_a_multiple():
    a, b, h0, _ = _diagonal_data()  # T = 13
    with pytest.raises(ValueError, match="T=13 steps, not a multiple of chunk=4. Pad them"):
        chunked_scan(lambda h, xs: (h, None), h0, (a, b), chunk=4)
    with pytest.raises(ValueError, match="not a multiple of chunk=5"):
        boundary_states(lambda h, xs: h, h0, a, chunk=5)
