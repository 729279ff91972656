"""Linear recurrences and their discrete adjoints, by associative scans.

The recurrences are

- diagonal: `h_t = a_t ⊙ h_{t-1} + b_t`, with `a`, `b` of shape `[T, *state]`;
- dense: `h_t = A_t h_{t-1} + b_t`, with `A` of shape `[T, N, N]` and `b` of shape `[T, N]`;

for `t = 1..T`, from a given `h_0` (zero by default). Time is always axis 0; batch over
leading axes with `jax.vmap` (the diagonal functions also accept any trailing shape).

For a loss `L` with output cotangents `c_t = ∂L/∂h_t`, the discrete adjoint (backpropagation
through time, written as a recurrence) is the reverse linear recurrence

    μ_T = c_T,    μ_t = a_{t+1} ⊙ μ_{t+1} + c_t    (dense: μ_t = A_{t+1}ᵀ μ_{t+1} + c_t),

and then `∂L/∂b_t = μ_t`, `∂L/∂a_t = μ_t ⊙ h_{t-1}` (dense: `∂L/∂A_t = μ_t h_{t-1}ᵀ`) and
`∂L/∂h_0 = a_1 ⊙ μ_1` (dense: `A_1ᵀ μ_1`). Both directions are associative scans over affine
maps `g ↦ m ⊙ g + c` (Blelloch 1990; Martin and Cundy 2018), so both have depth O(log T).

Every function takes the kind of transition as an object, `transition=Diagonal()` (the
default) or `transition=Dense()`: one generic implementation over the algebra of the
transition. Four forms of the forward recurrence:

- `associative_recurrence` (and `affine_scan`, which also returns the transports): the plain
  associative scan, differentiated by autodiff through `lax.associative_scan` (the
  baseline a JAX model would write);
- `sequential_recurrence`: one step at a time by `lax.scan`, differentiated by autodiff
  through the scan (depth O(T), but a tape of one transition and one state per step);
- `linear_recurrence`: the same states, whose gradient is a custom VJP that runs the adjoint
  recurrence above;
- `chunked_linear_recurrence`: chunks of steps, whose gradient stores only the states at
  chunk boundaries, on the generic chunk scans `chunked_scan` and `boundary_states` (which
  also serve models whose chunk step is a whole layer stack).

The custom VJPs support reverse mode only (`jax.grad`, `jax.vjp`), not forward mode
(`jax.jvp`), as any `jax.custom_vjp`.

Complex dtypes follow JAX's convention that a VJP is the transpose (not the conjugate
transpose) of the JVP, so the formulas above hold unchanged.

**References:**

- G. E. Blelloch, "Prefix sums and their applications", CMU-CS-90-190, 1990.
- E. Martin and C. Cundy, "Parallelizing linear recurrent neural nets over sequence
    length", ICLR 2018.
- M. van Herk, "A fast algorithm for local minimum and maximum filters on rectangular and
    octagonal kernels", Pattern Recognition Letters 13(7), 1992; J. Gil and M. Werman,
    "Computing 2-D min, median, and max filters", IEEE TPAMI 15(5), 1993 (the two-block
    sliding-window scheme of `windowed_adjoint_states`).
- X. Xu, A. Tavanaei, K. Asadi, K. Bouyarmane, "Adjoint sharding for very long context
    training of state space models", arXiv:2501.00692, 2025 (§4.3, Eq. 7: the truncated
    adjoint).
"""

from __future__ import annotations

import abc
import functools as ft
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, ArrayLike, Inexact, PyTree

__all__ = [
    "AbstractTransition",
    "Dense",
    "Diagonal",
    "adjoint_states",
    "affine_scan",
    "associative_recurrence",
    "boundary_states",
    "chunked_linear_recurrence",
    "chunked_scan",
    "linear_recurrence",
    "linear_recurrence_vjp",
    "sequential_recurrence",
    "windowed_adjoint_states",
]


# --------------------------------------------------------------------------------------
# The algebra of a transition: how to compose two, apply one, transpose one.
# --------------------------------------------------------------------------------------

# What `prepare` hands back: the transitions and vectors, then each state (None for zero).
_Prepared = tuple[Array, Array, *tuple[Array | None, ...]]


class AbstractTransition(eqx.Module):
    """The kind of transition `a_t` of `h_t = a_t h_{t-1} + b_t`: how two compose, how one
    acts on a state, its transpose, and how the arguments are checked."""

    @abc.abstractmethod
    def compose(self, outer: Array, inner: Array) -> Array:
        """`outer ∘ inner`."""

    @abc.abstractmethod
    def apply(self, a: Array, h: Array) -> Array:
        """`a h`."""

    @abc.abstractmethod
    def transpose(self, a: Array) -> Array:
        """`aᵀ`."""

    @abc.abstractmethod
    def outer(self, mu: Array, h: Array) -> Array:
        """The gradient of `⟨mu, a h⟩` with respect to `a`."""

    @abc.abstractmethod
    def identity_like(self, a: Array) -> Array:
        """The identity transition of the shape of `a`."""

    @abc.abstractmethod
    def prepare(
        self, fn: str, names: tuple[str, ...], a: ArrayLike, b: ArrayLike, *rest: Any
    ) -> _Prepared:
        """`a`, `b` (transitions and per-step vectors, time on axis 0) and the states `rest`
        (None for zero) as arrays of one float dtype and checked shapes; errors name the
        function `fn` and the arguments `names`."""


class Diagonal(AbstractTransition):
    """Transitions are arrays `a` of the state's shape `[T, *state]`, acting elementwise."""

    def compose(self, outer, inner):
        return outer * inner

    def apply(self, a, h):
        return a * h

    def transpose(self, a):
        return a

    def outer(self, mu, h):
        return mu * h

    def identity_like(self, a):
        return jnp.ones_like(a)

    def prepare(self, fn, names, a, b, *rest):
        return _diagonal_args(fn, names, a, b, *rest)


class Dense(AbstractTransition):
    """Transitions are `[T, N, N]` matrices acting on `[T, N]` states (O(N³) per composition:
    for small `N`)."""

    # Full precision: accelerators otherwise multiply float32 matrices in reduced precision,
    # and these products compound over the whole sequence.
    def compose(self, outer, inner):
        return jnp.matmul(outer, inner, precision=lax.Precision.HIGHEST)

    def apply(self, a, h):
        return jnp.einsum("...ij,...j->...i", a, h, precision=lax.Precision.HIGHEST)

    def transpose(self, a):
        return jnp.swapaxes(a, -1, -2)

    def outer(self, mu, h):
        return mu[..., :, None] * h[..., None, :]

    def identity_like(self, a):
        return jnp.broadcast_to(jnp.eye(a.shape[-1], dtype=a.dtype), a.shape)

    def prepare(self, fn, names, a, b, *rest):
        return _dense_args(fn, names, a, b, *rest)


_DIAGONAL = Diagonal()
_Ops = AbstractTransition


def _check_transition(fn: str, transition: object) -> None:
    if not isinstance(transition, AbstractTransition):
        raise ValueError(
            f"`{fn}(transition={transition!r})`: pass a transition object, "
            "`adjoint_lab.core.Diagonal()` (elementwise `a_t`) or `adjoint_lab.core.Dense()` "
            "(matrices `A_t`)."
        )


# --------------------------------------------------------------------------------------
# Generic scans.
# --------------------------------------------------------------------------------------


def _combine(ops: _Ops, first: tuple[Array, Array], second: tuple[Array, Array]):
    """The affine map `g ↦ m ⊙ g + c` of applying `first`, then `second`."""
    m1, c1 = first
    m2, c2 = second
    return ops.compose(m2, m1), ops.apply(m2, c1) + c2


def _forward_scan(ops: _Ops, a: Array, b: Array, h0: Array | None) -> Array:
    """All states `h_t = a_t h_{t-1} + b_t` (time on axis 0) from `h0` (None: zero)."""
    if h0 is not None:
        # In place when b is an intermediate of a jitted function. (Adding the cumulative
        # product (a_t ⋯ a_1) h0 afterwards avoids this copy when b is an argument, but in
        # XLA's CPU memory plans it kept that product alive into the backward pass.)
        b = b.at[0].add(ops.apply(a[0], h0))
    # `associative_scan` calls `fn(earlier, later)`: apply the earlier step first.
    return lax.associative_scan(ft.partial(_combine, ops), (a, b))[1]


def _reverse_scan(ops: _Ops, m: Array, c: Array, axis: int = 0) -> tuple[Array, Array]:
    """Suffix compositions of `g_t = m_t g_{t+1} + c_t` along `axis`: both parts.

    Returns `(M_t, g_t)` with `M_t = m_t m_{t+1} ⋯ m_end`, `g_t` the state from `g_{end+1}=0`.
    """
    # With `reverse=True`, `associative_scan` calls `fn(later, earlier)`, and in the reverse
    # recurrence the later step is applied first: the same `_combine`.
    return lax.associative_scan(ft.partial(_combine, ops), (m, c), reverse=True, axis=axis)


def _next_transposed(ops: _Ops, a: Array) -> Array:
    """`m_t = a_{t+1}ᵀ` for t < T and `m_T = 0`: the transitions of the adjoint recurrence."""
    return jnp.concatenate([ops.transpose(a[1:]), jnp.zeros_like(a[:1])])


def _adjoint(ops: _Ops, a: Array, c: Array, carry: Array | None = None) -> tuple[Array, Array]:
    """The adjoint `μ_t = a_{t+1}ᵀ μ_{t+1} + c_t`, `μ_T = c_T + carry`, and `a_1ᵀ μ_1`.

    Runs on `ψ_t = a_tᵀ μ_t = a_tᵀ ψ_{t+1} + a_tᵀ c_t` (`ψ_{T+1} = carry`), whose steps line
    up with `a` and `c`, so no shifted copy of `a` is made; then `μ_t = ψ_{t+1} + c_t`.
    """
    a_t = ops.transpose(a)
    transport, psi = _reverse_scan(ops, a_t, ops.apply(a_t, c))
    if carry is None:
        last = jnp.zeros_like(c[:1])
    else:
        psi = psi + ops.apply(transport, carry)
        last = carry[None]
    return jnp.concatenate([psi[1:], last]) + c, psi[0]


def _vjp(ops: _Ops, a: Array, h0: Array | None, h: Array, c: Array) -> tuple[Array, Array, Array]:
    mu, grad_h0 = _adjoint(ops, a, c)
    first = jnp.zeros_like(h[:1]) if h0 is None else h0[None]
    h_prev = jnp.concatenate([first, h[:-1]])
    return ops.outer(mu, h_prev), mu, grad_h0


def _blocks(x: Array, size: int) -> Array:
    """`[T, ...] -> [ceil(T/size), size, ...]`, zero-padded at the end."""
    pad = -x.shape[0] % size
    if pad:
        x = jnp.concatenate([x, jnp.zeros((pad,) + x.shape[1:], x.dtype)])
    return x.reshape((-1, size) + x.shape[1:])


def _unblocks(x: Array, length: int) -> Array:
    return x.reshape((-1,) + x.shape[2:])[:length]


# --------------------------------------------------------------------------------------
# The full recurrence, with the adjoint as its VJP.
# --------------------------------------------------------------------------------------


@ft.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _recurrence(ops: _Ops, a: Array, b: Array, h0: Array | None) -> Array:
    return _forward_scan(ops, a, b, h0)


def _recurrence_fwd(ops: _Ops, a: Array, b: Array, h0: Array | None):
    h = _forward_scan(ops, a, b, h0)
    # Keep the output h (needed for ∂L/∂a_t = μ_t h_{t-1}) rather than b: same size, no
    # recomputation, and free when the caller keeps h anyway (y_t = C_t h_t needs it too).
    return h, (a, h0, h)


def _recurrence_bwd(ops: _Ops, residuals, c: Array):
    a, h0, h = residuals
    grad_a, grad_b, grad_h0 = _vjp(ops, a, h0, h, c)
    return grad_a, grad_b, None if h0 is None else grad_h0


_recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


# --------------------------------------------------------------------------------------
# Chunks: boundary states forward, recomputation inside chunks backward.
# --------------------------------------------------------------------------------------


def _padded(x: Array, size: int) -> Array:
    """`x` zero-padded at the end of axis 0 to a multiple of `size` steps."""
    pad = -x.shape[0] % size
    return jnp.concatenate([x, jnp.zeros((pad,) + x.shape[1:], x.dtype)]) if pad else x


def _chunked_forward(ops: _Ops, chunk: int, a: Array, b: Array, h0: Array | None):
    def body(h_in, xs):
        a_k, b_k = xs
        h_k = _forward_scan(ops, a_k, b_k, h_in)
        return h_k[-1], (h_k, h_in)

    # Zero padding at the end is harmless: padded states come after every real one and are
    # cut off, and their cotangents are zero, so they send nothing back.
    init = jnp.zeros_like(b[0]) if h0 is None else h0
    xs = (_padded(a, chunk), _padded(b, chunk))
    _, (h, starts) = chunked_scan(body, init, xs, chunk=chunk)
    return _unblocks(h, a.shape[0]), starts


@ft.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _chunked(ops: _Ops, chunk: int, a: Array, b: Array, h0: Array | None) -> Array:
    return _chunked_forward(ops, chunk, a, b, h0)[0]


def _chunked_fwd(ops: _Ops, chunk: int, a: Array, b: Array, h0: Array | None):
    h, starts = _chunked_forward(ops, chunk, a, b, h0)
    return h, (a, b, starts, h0 is None)


def _chunked_bwd(ops: _Ops, chunk: int, residuals, c: Array):
    a, b, starts, no_h0 = residuals
    length = a.shape[0]

    def body(carry, xs):
        # `carry` is a_{s+1}ᵀ μ_{s+1}, with s+1 the first step of the next chunk: what the
        # next chunk sends back into this chunk's last state.
        (a_k, b_k, c_k), h_in = xs
        h_k = _forward_scan(ops, a_k, b_k, h_in)
        mu, carry = _adjoint(ops, a_k, c_k, carry)
        h_prev = jnp.concatenate([h_in[None], h_k[:-1]])
        return carry, (ops.outer(mu, h_prev), mu)

    xs = (_padded(a, chunk), _padded(b, chunk), _padded(c, chunk))
    init = jnp.zeros_like(starts[0])
    grad_h0, (grad_a, grad_b) = chunked_scan(
        body, init, xs, chunk=chunk, reverse=True, extra=starts
    )
    grad_h0 = None if no_h0 else grad_h0
    return _unblocks(grad_a, length), _unblocks(grad_b, length), grad_h0


_chunked.defvjp(_chunked_fwd, _chunked_bwd)


# --------------------------------------------------------------------------------------
# Windowed (truncated) adjoint.
# --------------------------------------------------------------------------------------


def _windowed(ops: _Ops, a: Array, c: Array, window: int) -> Array:
    # μ̄_t is the composition of the adjoint's affine maps e_i = (m_i, c_i) over the window
    # i = t..t+W-1, applied to 0. A sliding-window reduction over a semigroup needs no
    # inverse: cut time into blocks of W; then each window is a suffix of one block followed
    # by a prefix of the next, both found by associative scans inside blocks.
    length = a.shape[0]
    window = min(window, length)
    # Zero padding gives the zero map, which correctly ends every window at T.
    m = _blocks(_next_transposed(ops, a), window)
    c = _blocks(c, window)
    suffix_m, suffix_c = _reverse_scan(ops, m, c, axis=1)
    # Prefix compositions e_start ∘ ⋯ ∘ e_s: `fn(earlier, later)`, the later applied first.
    _, prefix_c = lax.associative_scan(lambda x, y: _combine(ops, y, x), (m, c), axis=1)
    # For t = kW + j with j > 0 the window ends at (k+1)W + j - 1 = t + W - 1 in the next
    # block; for j = 0 it is block k itself.
    prefix_c = prefix_c.reshape((-1,) + prefix_c.shape[2:])
    padded = prefix_c.shape[0]
    shifted = jnp.concatenate([prefix_c[window - 1 :], jnp.zeros_like(prefix_c[: window - 1])])
    suffix_m = suffix_m.reshape((-1,) + suffix_m.shape[2:])
    suffix_c = suffix_c.reshape((-1,) + suffix_c.shape[2:])
    # Select rather than multiply by a mask, so an overflowed product cannot make 0 * inf.
    starts_block = (jnp.arange(padded) % window == 0).reshape((-1,) + (1,) * (c.ndim - 2))
    mu_bar = jnp.where(starts_block, suffix_c, suffix_c + ops.apply(suffix_m, shifted))
    return mu_bar[:length]


# --------------------------------------------------------------------------------------
# Argument checking.
# --------------------------------------------------------------------------------------


def _float_dtype(*xs: Any) -> Any:
    dtype = jnp.result_type(*xs)
    if not jnp.issubdtype(dtype, jnp.inexact):
        dtype = jnp.result_type(float)
    return dtype


def _check_positive_int(fn: str, name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"`{fn}({name}={value!r})`: `{name}` must be a Python int >= 1 (it fixes array "
            f"shapes, so under `jax.jit` pass it as a static argument, e.g. "
            f"`jax.jit(functools.partial({fn}, {name}={name}))`)."
        )


def _diagonal_args(
    fn: str, names: tuple[str, ...], a: ArrayLike, b: ArrayLike, *rest: ArrayLike | None
) -> _Prepared:
    """Broadcast `a`, `b` to one `[T, *state]` shape and a common float dtype, and `rest`
    (initial or final states, None for zero) to `state`; `names` names them all."""
    a_name, b_name = names[:2]
    dtype = _float_dtype(a, b, *(x for x in rest if x is not None))
    a = jnp.asarray(a, dtype)
    b = jnp.asarray(b, dtype)
    if a.ndim == 0 or b.ndim == 0 or a.ndim != b.ndim:
        raise ValueError(
            f"`{fn}`: `{a_name}` has shape {a.shape} and `{b_name}` has shape {b.shape}; "
            f"both must be `[T, *state]` with time on axis 0 and the same number of "
            f"dimensions (a size-1 dimension of either broadcasts, e.g. `{a_name}` of shape "
            f"(1, *state) for a time-invariant transition, or `{a_name}[..., None]` for one "
            f"shared over the last state axis). Batch over leading axes with `jax.vmap`."
        )
    try:
        shape = jnp.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(
            f"`{fn}`: `{a_name}` of shape {a.shape} and `{b_name}` of shape {b.shape} do not "
            "broadcast to one `[T, *state]` shape; every dimension must agree or be 1."
        ) from None
    if shape[0] == 0:
        raise ValueError(f"`{fn}`: the sequences have length T=0; they need T >= 1 steps.")
    states = (
        _state(fn, name, x, shape[1:], dtype) for name, x in zip(names[2:], rest, strict=True)
    )
    return (jnp.broadcast_to(a, shape), jnp.broadcast_to(b, shape), *states)


def _state(
    fn: str, name: str, x: ArrayLike | None, shape: tuple[int, ...], dtype: Any
) -> Array | None:
    if x is None:
        return None
    x = jnp.asarray(x, dtype)
    try:
        return jnp.broadcast_to(x, shape)
    except ValueError:
        raise ValueError(
            f"`{fn}`: `{name}` has shape {x.shape}, which does not broadcast to the state "
            f"shape {shape} (the sequences' shape after the time axis). Pass `{name}` of "
            f"shape {shape}, or None for a zero state."
        ) from None


def _dense_args(
    fn: str, names: tuple[str, ...], A: ArrayLike, b: ArrayLike, *rest: ArrayLike | None
) -> _Prepared:
    a_name, b_name = names[:2]
    dtype = _float_dtype(A, b, *(x for x in rest if x is not None))
    A = jnp.asarray(A, dtype)
    b = jnp.asarray(b, dtype)
    if (
        A.ndim != 3
        or b.ndim != 2
        or A.shape[1:] != (b.shape[1], b.shape[1])
        or A.shape[0] not in (1, b.shape[0])
    ):
        raise ValueError(
            f"`{fn}`: `{a_name}` has shape {A.shape} and `{b_name}` has shape {b.shape}; "
            f"they must be `[T, N, N]` and `[T, N]` (or `{a_name}` of shape (1, N, N) for a "
            f"time-invariant matrix), time on axis 0. Batch with `jax.vmap`; for a diagonal "
            f"transition pass `transition=Diagonal()`."
        )
    if b.shape[0] == 0:
        raise ValueError(f"`{fn}`: the sequences have length T=0; they need T >= 1 steps.")
    A = jnp.broadcast_to(A, (b.shape[0],) + A.shape[1:])
    states = zip(names[2:], rest, strict=True)
    return (A, b) + tuple(_state(fn, name, x, b.shape[1:], dtype) for name, x in states)


# --------------------------------------------------------------------------------------
# Generic chunk scans: a recurrence over chunks of time, with any chunk step.
# --------------------------------------------------------------------------------------


def _cut(fn: str, xs: PyTree, chunk: int) -> tuple[PyTree, int]:
    _check_positive_int(fn, "chunk", chunk)
    leaves = jax.tree.leaves(xs)
    if not leaves:
        raise ValueError(f"`{fn}`: `xs` has no arrays; it needs sequences with time on axis 0.")
    length = leaves[0].shape[0]
    for leaf in leaves:
        if leaf.shape[:1] != (length,):
            raise ValueError(
                f"`{fn}`: every leaf of `xs` needs the same length on axis 0 (time); got "
                f"{length} and {leaf.shape[:1]}."
            )
    if length % chunk:
        raise ValueError(
            f"`{fn}`: the sequences have T={length} steps, not a multiple of chunk={chunk}. "
            f"Pad them at the end to {length + (-length % chunk)} steps (and cut the outputs "
            f"back), or pass a chunk that divides T."
        )
    return jax.tree.map(lambda x: x.reshape((length // chunk, chunk) + x.shape[1:]), xs), length


def chunked_scan(
    step: Callable[[Any, PyTree], tuple[Any, PyTree]],
    init: PyTree,
    xs: PyTree,
    *,
    chunk: int,
    reverse: bool = False,
    checkpoint: bool = False,
    extra: PyTree = None,
) -> tuple[PyTree, PyTree]:
    """A recurrence over chunks of time: `carry, ys_k = step(carry, xs_k)` for the chunks
    `xs_k` of `chunk` steps of `xs`, first to last (last to first if `reverse`).

    The chunk step may be a whole layer stack (with the carry every layer's state): this is
    the boundary-state form of a recurrent model. With `checkpoint=True` each chunk step is
    under `jax.checkpoint`, so that autodiff through the scan stores only the carries at chunk
    boundaries and recomputes one chunk at a time in the backward pass.

    **Arguments:**

    - `step`: `(carry, xs_k) -> (carry, ys_k)`; `xs_k` has the leaves of `xs` cut to
        `[chunk, ...]` (paired with the `k`-th slice of `extra`, as `(xs_k, extra_k)`, when
        `extra` is given).
    - `init`: the carry before the first chunk processed.
    - `xs`: sequences with time on axis 0, all of one length `T`, a multiple of `chunk`:
        any other `T` is refused (pad it, so that no step is silently dropped).
    - `chunk`: the steps per chunk, a Python int >= 1.
    - `reverse`: run the chunks last to first.
    - `checkpoint`: rematerialise each chunk step in the backward pass of autodiff.
    - `extra`: optional per-chunk inputs, leaves `[T / chunk, ...]`.

    **Returns:**

    `(carry, ys)`: the final carry and the outputs stacked over chunks, leaves
    `[T / chunk, ...]` (reshape a per-step output `[T / chunk, chunk, ...]` to `[T, ...]`).
    """
    blocks, _ = _cut("chunked_scan", xs, chunk)
    body = jax.checkpoint(step) if checkpoint else step
    if extra is not None:
        blocks = (blocks, extra)
    return lax.scan(body, init, blocks, reverse=reverse)


def boundary_states(
    step: Callable[[Any, PyTree], Any], init: PyTree, xs: PyTree, *, chunk: int
) -> PyTree:
    """The carry entering each chunk of `chunked_scan(step, init, xs, chunk=chunk)`, leaves
    `[T / chunk, ...]`: what a method that recomputes chunks from their boundary states
    stores. Here `step(carry, xs_k)` returns the next carry only.

    **Arguments:**

    - `step`, `init`, `xs`, `chunk`: as for `chunked_scan` (`T` a multiple of `chunk`).

    **Returns:**

    The carries before chunks `0 .. T/chunk - 1` (the first is `init`).
    """

    def body(carry, xs_k):
        return step(carry, xs_k), carry

    _cut("boundary_states", xs, chunk)
    return chunked_scan(body, init, xs, chunk=chunk)[1]


# --------------------------------------------------------------------------------------
# Public API.
# --------------------------------------------------------------------------------------


def affine_scan(
    a: Inexact[ArrayLike, " #T ..."],
    b: Inexact[ArrayLike, " #T *#state"],
    *,
    transition: AbstractTransition = _DIAGONAL,
) -> tuple[Inexact[Array, " T ..."], Inexact[Array, " T *state"]]:
    """The first `t` steps of `h_t = a_t h_{t-1} + b_t` composed, for every `t`: the
    transport `Φ_t = a_t ⋯ a_1` and the state `h_t` from `h_0 = 0`, so that from any `h_0`
    the state is `Φ_t h_0 + h_t` (how a device combines its chunk of time with the state
    handed to it). By `lax.associative_scan`, differentiated by plain autodiff.

    **Arguments:**

    - `a`: the transitions, `[T, *state]` (`Diagonal`) or `[T, N, N]` (`Dense`).
    - `b`: the inputs, `[T, *state]`.
    - `transition`: `Diagonal()` (default) or `Dense()`.

    **Returns:**

    `(Φ, h)`, of the shapes of `a` and `b`.
    """
    _check_transition("affine_scan", transition)
    a, b = transition.prepare("affine_scan", ("a", "b"), a, b)
    return lax.associative_scan(ft.partial(_combine, transition), (a, b))


def associative_recurrence(
    a: Inexact[ArrayLike, " #T ..."],
    b: Inexact[ArrayLike, " #T *#state"],
    h0: Inexact[ArrayLike, " *state"] | None = None,
    *,
    transition: AbstractTransition = _DIAGONAL,
) -> Inexact[Array, " T *state"]:
    """All states of `h_t = a_t h_{t-1} + b_t`, `t = 1..T`, by `lax.associative_scan`,
    differentiated by plain autodiff: the recurrence as a JAX model would write it, and the
    autodiff baselines' forward pass. (`linear_recurrence` has the same states, with the
    adjoint as its gradient.)

    **Arguments:**

    - `a`, `b`, `h0`: as for `linear_recurrence`.
    - `transition`: `Diagonal()` (default) or `Dense()`.

    **Returns:**

    The states `h_1..h_T`, of the shape of `b`.
    """
    fn = "associative_recurrence"
    _check_transition(fn, transition)
    a, b, h0 = transition.prepare(fn, ("a", "b", "h0"), a, b, h0)
    return _forward_scan(transition, a, b, h0)


def sequential_recurrence(
    a: Inexact[ArrayLike, " #T ..."],
    b: Inexact[ArrayLike, " #T *#state"],
    h0: Inexact[ArrayLike, " *state"] | None = None,
    *,
    transition: AbstractTransition = _DIAGONAL,
) -> Inexact[Array, " T *state"]:
    """All states of `h_t = a_t h_{t-1} + b_t`, `t = 1..T`, one step at a time by `lax.scan`,
    differentiated by plain autodiff through the scan.

    The other autodiff baseline beside `associative_recurrence`: depth O(T) instead of
    O(log T), but autodiff through a scan keeps only each step's residuals (`a_t` and
    `h_{t-1}`), where autodiff through `lax.associative_scan` keeps the intermediates of
    every level (XLA's CPU plan at T=4096, 64 float32 channels, a loss nonlinear in `h`:
    3.1 MB of temporaries against 8.4 MB).

    **Arguments:**

    - `a`, `b`, `h0`: as for `linear_recurrence`.
    - `transition`: `Diagonal()` (default) or `Dense()`.

    **Returns:**

    The states `h_1..h_T`, of the shape of `b`.
    """
    fn = "sequential_recurrence"
    _check_transition(fn, transition)
    a, b, h0 = transition.prepare(fn, ("a", "b", "h0"), a, b, h0)

    def step(h: Array, xs: tuple[Array, Array]) -> tuple[Array, Array]:
        a_t, b_t = xs
        h = transition.apply(a_t, h) + b_t
        return h, h

    return lax.scan(step, jnp.zeros_like(b[0]) if h0 is None else h0, (a, b))[1]


def linear_recurrence(
    a: Inexact[ArrayLike, " #T ..."],
    b: Inexact[ArrayLike, " #T *#state"],
    h0: Inexact[ArrayLike, " *state"] | None = None,
    *,
    transition: AbstractTransition = _DIAGONAL,
) -> Inexact[Array, " T *state"]:
    """All states of `h_t = a_t ⊙ h_{t-1} + b_t` (dense: `A_t h_{t-1} + b_t`), `t = 1..T`,
    by an associative scan.

    Reverse-mode gradients (`jax.grad`, `jax.vjp`) run the discrete adjoint: one reverse
    associative scan for `μ_t = a_{t+1}ᵀ μ_{t+1} + c_t`, then `∂L/∂b_t = μ_t`,
    `∂L/∂a_t = μ_t ⊙ h_{t-1}` (dense: `μ_t h_{t-1}ᵀ`), `∂L/∂h_0 = a_1ᵀ μ_1` (see
    `linear_recurrence_vjp`).

    Memory: the backward pass keeps `a`, `h0` and the output `h` (for `h_{t-1}`) rather
    than `b`: the same size, but no recomputation, and free when the caller keeps `h`
    anyway (as `y_t = C_t h_t` does for its own gradient). Plain autodiff through
    `lax.associative_scan` (`associative_recurrence`) keeps the intermediates of every level
    instead. (XLA's CPU plan for T=4096, 64 float32 channels and a loss nonlinear in `h`:
    4.7 MB of temporaries against 8.4 MB, and 3.1 MB for autodiff through `lax.scan`.) For
    O(T/C + C) stored states use `chunked_linear_recurrence`.

    **Arguments:**

    - `a`: the transitions: `[T, *state]` for `Diagonal()` (a size-1 axis broadcasts, e.g.
        `(1, *state)` for a time-invariant `a`), `[T, N, N]` or `(1, N, N)` for `Dense()`.
    - `b`: the inputs, shape `[T, *state]`.
    - `h0`: the initial state, broadcastable to `state`; zero if `None`.
    - `transition`: `Diagonal()` (default) or `Dense()`.

    **Returns:**

    The states `h_1..h_T`, shape `[T, *state]`, in the common floating dtype of the
    arguments.
    """
    _check_transition("linear_recurrence", transition)
    a, b, h0 = transition.prepare("linear_recurrence", ("a", "b", "h0"), a, b, h0)
    return _recurrence(transition, a, b, h0)


def adjoint_states(
    a: Inexact[ArrayLike, " #T ..."],
    c: Inexact[ArrayLike, " T *state"],
    *,
    transition: AbstractTransition = _DIAGONAL,
) -> Inexact[Array, " T *state"]:
    """The adjoint states `μ_T = c_T`, `μ_t = a_{t+1}ᵀ μ_{t+1} + c_t` of the recurrence
    `h_t = a_t h_{t-1} + b_t`.

    With `c_t = ∂L/∂h_t` (the direct cotangents of the outputs), `μ_t` is the total
    derivative `dL/dh_t` through all later states: `∂L/∂b_t = μ_t`.

    **Arguments:**

    - `a`: the forward transitions `a_1..a_T` (`a_1` is not used).
    - `c`: the output cotangents, shape `[T, *state]`.
    - `transition`: `Diagonal()` (default) or `Dense()`.

    **Returns:**

    `μ_1..μ_T`, shape `[T, *state]`.
    """
    _check_transition("adjoint_states", transition)
    a, c = transition.prepare("adjoint_states", ("a", "c"), a, c)
    return _adjoint(transition, a, c)[0]


def linear_recurrence_vjp(
    a: Inexact[ArrayLike, " #T ..."],
    h: Inexact[ArrayLike, " T *state"],
    c: Inexact[ArrayLike, " T *state"],
    h0: Inexact[ArrayLike, " *state"] | None = None,
    *,
    carry: Inexact[ArrayLike, " *state"] | None = None,
    transition: AbstractTransition = _DIAGONAL,
) -> tuple[Inexact[Array, " T ..."], Inexact[Array, " T *state"], Inexact[Array, " *state"]]:
    """The gradients of `h = linear_recurrence(a, b, h0)` from its states and cotangents.

    This is the backward pass of `linear_recurrence`, exposed for methods (such as adjoint
    sharding) that hold the states and feed the per-step cotangents to VJPs of their own. On
    a chunk of a longer sequence, `h0` is the state before the chunk and `carry` the adjoint
    `a_{T+1}ᵀ μ_{T+1}` handed back by the steps after it.

    **Arguments:**

    - `a`: the transitions.
    - `h`: the states `h_1..h_T` of the forward pass, shape `[T, *state]`.
    - `c`: the cotangents `∂L/∂h_t`, shape `[T, *state]`.
    - `h0`: the initial state of the forward pass, broadcastable to `state`; zero if `None`.
    - `carry`: the adjoint from after the last step, added to `μ_T`; zero if `None`.
    - `transition`: `Diagonal()` (default) or `Dense()`.

    **Returns:**

    `(∂L/∂a, ∂L/∂b, ∂L/∂h0)`: `μ_t ⊙ h_{t-1}` (dense: `μ_t h_{t-1}ᵀ`), `μ_t` (shape
    `[T, *state]`) and `a_1ᵀ μ_1` (shape `state`), with `μ = adjoint_states(a, c)` (and
    `carry` added to `c_T`).
    """
    fn = "linear_recurrence_vjp"
    _check_transition(fn, transition)
    dtype = _float_dtype(a, h, c, *(x for x in (h0, carry) if x is not None))
    c = jnp.asarray(c, dtype)
    a, h, h0, carry = transition.prepare(
        fn, ("a", "h", "h0", "carry"), a, jnp.asarray(h, dtype), h0, carry
    )
    if c.shape != h.shape:
        raise ValueError(
            f"`{fn}`: `c` has shape {c.shape} but `h` has shape {h.shape}; the cotangents "
            "must have the shape of the states."
        )
    if carry is not None:
        c = c.at[-1].add(carry)
    return _vjp(transition, a, h0, h, c)


def chunked_linear_recurrence(
    a: Inexact[ArrayLike, " #T ..."],
    b: Inexact[ArrayLike, " #T *#state"],
    h0: Inexact[ArrayLike, " *state"] | None = None,
    *,
    chunk: int,
    transition: AbstractTransition = _DIAGONAL,
) -> Inexact[Array, " T *state"]:
    """`linear_recurrence` in chunks of `chunk` steps, whose gradient stores only the
    states at chunk boundaries.

    Forward: a sequential scan over the `ceil(T/chunk)` chunks (`chunked_scan`) carries the
    state across boundaries; inside a chunk an associative scan gives the states. Backward: a
    reverse scan over chunks recomputes each chunk's states from its boundary state, runs the
    adjoint inside the chunk by a reverse associative scan, and carries `a_{s+1}ᵀ μ_{s+1}`
    back across the boundary. Beyond the inputs and outputs, the backward pass holds
    O(T/chunk) boundary states plus O(chunk) states of one chunk (`chunk ≈ sqrt(T)` minimises
    the sum), at the cost of one extra forward pass.

    `T` need not be a multiple of `chunk`: the last chunk is zero-padded, which cannot
    change the real states or their gradients.

    **Arguments:**

    - `a`, `b`, `h0`, `transition`: as `linear_recurrence`.
    - `chunk`: the number of steps per chunk, a Python int >= 1 (static under `jax.jit`).
        Values above `T` mean one chunk.

    **Returns:**

    The states `h_1..h_T`, shape `[T, *state]`, equal to `linear_recurrence(a, b, h0)`.
    """
    fn = "chunked_linear_recurrence"
    _check_positive_int(fn, "chunk", chunk)
    _check_transition(fn, transition)
    a, b, h0 = transition.prepare(fn, ("a", "b", "h0"), a, b, h0)
    return _chunked(transition, min(chunk, a.shape[0]), a, b, h0)


def windowed_adjoint_states(
    a: Inexact[ArrayLike, " #T ..."],
    c: Inexact[ArrayLike, " T *state"],
    *,
    window: int,
    transition: AbstractTransition = _DIAGONAL,
) -> Inexact[Array, " T *state"]:
    """The windowed (truncated) adjoint states `μ̄_t = Σ_{i=t}^{min(t+W-1, T)} Φ(i,t)ᵀ c_i`,
    `Φ(i,t) = a_i ⋯ a_{t+1}` (`Φ(t,t) = 1`), in O(T) work and without cancellation.

    `μ̄_t` is the part of the adjoint `μ_t` (see `adjoint_states`) that reaches `h_t` from
    the outputs at most `W - 1` steps later; the truncated adjoint sharding of Xu et al.
    (2025, Eq. 7) uses it in place of `μ_t`. `W >= T` gives `μ`, `W = 1` gives `c`.

    The identity `μ̄_t = μ_t - Φ(t+W,t)ᵀ μ_{t+W}` is not used: it subtracts two large
    numbers where `a ≈ 1` and the outputs past the window dominate, and Φ under- or
    overflows over long windows. Instead, with time cut into blocks of `W` steps, every
    window is a suffix of one block followed by a prefix of the next (van Herk 1992,
    Gil and Werman 1993), and `μ̄_t = σ_t + Q_t ρ_{t+W-1}` where `σ`, `Q` are the
    adjoint and transport product of the suffix and `ρ` the adjoint of the prefix, all from
    associative scans inside blocks. Every term is a product of `a`'s over a sub-range of a
    window and every sum adds terms of the exact sum: no division, no subtraction.

    **Arguments:**

    - `a`: the forward transitions `a_1..a_T`.
    - `c`: the output cotangents, shape `[T, *state]`.
    - `window`: `W`, the number of outputs each adjoint state sees, a Python int >= 1
        (static under `jax.jit`).
    - `transition`: `Diagonal()` (default) or `Dense()`.

    **Returns:**

    `μ̄_1..μ̄_T`, shape `[T, *state]`.
    """
    fn = "windowed_adjoint_states"
    _check_positive_int(fn, "window", window)
    _check_transition(fn, transition)
    a, c = transition.prepare(fn, ("a", "c"), a, c)
    return _windowed(transition, a, c, window)
