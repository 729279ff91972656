"""Adjoint sharding (Xu et al. 2025): gradients as independent vector–Jacobian products of
the small per-token maps, from states stored by an evaluation-mode forward pass.

The forward pass keeps, for every layer `k` and token `t`, the transition `a_k^t`, the
selection `c_k^t` (so `C_k^t = W_out diag(c_k^t)`) and the state `h_k^t`; the paper's
estimators also keep the layer input `r_{k-1}^t` (from which `x_k^t = RMSNorm(r_{k-1}^t)`).
Then the head cotangent `g^t = ∂L/∂r_K^t` comes from the chunked loss; no autodiff tape.
Per layer, with `G_k^t` the cotangent of the layer's output stream:

- `𝒞`: one batched VJP of the readout at `(x_k^t, h_k^t)` with cotangent `G_k^t` gives the
  readout's parameter gradient and `c^t = ∂L/∂h_k^t` (the paper's `C^tᵀ g^t`);
- the aggregated adjoint `μ^i = Σ_{t≥i} Φ(t,i)ᵀ c^t` by one reverse associative scan
  (`adjoint_lab.core.adjoint_states`); the paper's double sum `Σ_t Σ_{i≤t}` has the same
  value, since the VJPs are linear in their cotangents;
- `𝒜` and `ℬ`: batched VJPs at `x_k^i` with cotangents `μ^i ⊙ h_k^{i-1}` and `μ^i`.

Which `G_k` a layer sees is what separates the methods:

- `adjoint` (exact): `G_K = g` and `G_{k-1} = G_k + J_RMSNorm(r_{k-1})ᵀ ξ_k`, with `ξ_k` the
  input-side cotangents of layer `k`'s VJPs: the residual-stream cotangent handed from layer
  to layer (backpropagation through the stored states, with no tape). Equals `jax.grad`.
  It needs no stored layer inputs: since `z_k = W_out (c_k ⊙ h_k)`, the stream is walked
  back as `r_{k-1} = r_k - z_k` from the stored `c`, `h` (exact up to one rounding), and the
  VJPs of a layer run over chunks of tokens that overwrite `r` and `G` in place, so the
  backward pass holds two `T × P` streams and `3N` numbers per token and layer.
- `adjoint_paper` and `truncated`: the paper's Proposition 3 gives every layer `G_k = g` (the
  residual highway only), so all layers are independent. Exact for one layer; for `K ≥ 2` it
  drops every path through later layers. The embedding receives `g + Σ_k J_RMSNormᵀ ξ_k`
  (each layer's own path), exact for one layer too.

`truncated` keeps for each output only the sources within `window` tokens (the paper's
§4.3): `μ` becomes the windowed `μ̄` (`adjoint_lab.core.windowed_adjoint_states`). With
`form="literal"`, `adjoint_paper` and `truncated` run the paper's double sum itself: for
every output time `t`, one batched VJP over all sources `i` (O(T²) token-VJPs; small `T`).
"""

from __future__ import annotations

import abc
import functools as ft
from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, ArrayLike, Float, Int

from ..core import adjoint_states, linear_recurrence_vjp, windowed_adjoint_states
from .loss import chunked_loss_and_cotangent
from .model import (
    LayerWeights,
    Weights,
    a_map,
    b_map,
    c_map,
    embed,
    emit,
    layer_forward,
    layer_forward_chunked,
    readout,
    rms_norm,
)

__all__ = [
    "AbstractLayerVJP",
    "AggregatedVJP",
    "LiteralVJP",
    "Stored",
    "embedding_gradient",
    "exact_chunk_backward",
    "exact_chunk_backward_from_input",
    "exact_layer_backward",
    "exact_layers_backward",
    "exact_value_and_grad",
    "forward_store",
    "highway_layers_backward",
    "highway_value_and_grad",
    "layer_backward",
    "layer_backward_literal",
]

_A_KEYS = ("a_kernel", "a_bias")
_B_KEYS = ("b_kernel", "b_bias")
_C_KEYS = ("c_kernel", "c_bias", "out_kernel")
_MAP_KEYS = _A_KEYS + _B_KEYS + ("c_kernel", "c_bias")


class Stored(NamedTuple):
    """What the evaluation-mode forward pass keeps (layers stacked on axis 0)."""

    r_in: Float[Array, "K T B P"] | None  # layer inputs r_{k-1} (paper's estimators only)
    a: Float[Array, "K T B N"]  # transitions
    c: Float[Array, "K T B N"]  # selections of the readout
    h: Float[Array, "K T B N"]  # states
    r_out: Float[Array, "T B P"]  # the final stream r_K


def forward_store(
    weights: Weights,
    inputs: Int[Array, "T B"],
    eps: float,
    h0: Float[Array, "K B N"] | None = None,
    *,
    keep_inputs: bool = False,
    chunk: int | None = None,
) -> Stored:
    """The evaluation-mode forward pass over all layers, keeping `a_k`, `c_k`, `h_k` (and
    the layer inputs `r_{k-1}` if `keep_inputs`); over time chunks of `chunk` tokens if
    given (`layer_forward_chunked`: a chunk's working set instead of the context's)."""

    def step(r: Array, xs: tuple[LayerWeights, Array | None]):
        w, h0k = xs
        if chunk is None:
            r_next, states = layer_forward(w, r, h0k, eps)
        else:
            r_next, states = layer_forward_chunked(w, r, h0k, eps, chunk)
        return r_next, (r if keep_inputs else None, *states)

    r_out, (r_in, a, c, h) = lax.scan(
        step, embed(weights["embed"], inputs), (weights["layers"], h0)
    )
    return Stored(r_in, a, c, h, r_out)


AdjointFn = Callable[[Array, Array], Array]


def _subset(w: LayerWeights, keys: tuple[str, ...]) -> LayerWeights:
    return {k: w[k] for k in keys}


def _previous_states(h: Array, h0: Array | None) -> Array:
    first = jnp.zeros_like(h[:1]) if h0 is None else h0[None]
    return jnp.concatenate([first, h[:-1]], axis=0)


def layer_backward(
    w: LayerWeights,
    r_in: Float[Array, "T B P"],
    a: Float[Array, "T B N"],
    h: Float[Array, "T B N"],
    G: Float[Array, "T B P"],
    *,
    eps: float,
    adjoint: AdjointFn = adjoint_states,
    h0: Float[Array, "B N"] | None = None,
    mu_end: Float[Array, "B N"] | None = None,
) -> tuple[LayerWeights, Float[Array, "T B P"], Float[Array, "B N"]]:
    """The gradients of one layer from its stored states and the cotangent `G` of its output.

    **Arguments:**

    - `w`, `r_in`, `a`, `h`: the layer's weights and stored input, transitions and states.
    - `G`: the cotangent of the layer's output stream.
    - `adjoint`: `(a, c) -> μ`, the adjoint states from the transitions and the direct
        cotangents `c = ∂L/∂h` (exact, or windowed for the truncated method).
    - `h0`: the state before the first step (zero if `None`), for chunks of a sequence.
    - `mu_end`: `a_{s+1} ⊙ μ_{s+1}` from the step after the last (zero if `None`).

    **Returns:**

    `(∂L/∂w, J_RMSNorm(r_in)ᵀ ξ, a_1 ⊙ μ_1)`: the weight gradients, the cotangent this layer
    adds to its input stream, and the adjoint carried to the step before the first.
    """
    x, norm_vjp = jax.vjp(lambda r, s: rms_norm(r, s, eps), r_in, w["norm"])
    # 𝒞 is local in time: its VJP gives the readout gradient and c = ∂L/∂h directly.
    _, readout_vjp = jax.vjp(readout, _subset(w, _C_KEYS), x, h)
    dw_c, dx_c, c = readout_vjp(G)
    if mu_end is not None:
        c = c.at[-1].add(mu_end)
    mu = adjoint(a, c)
    _, a_vjp = jax.vjp(a_map, _subset(w, _A_KEYS), x)
    dw_a, dx_a = a_vjp(mu * _previous_states(h, h0))
    _, b_vjp = jax.vjp(b_map, _subset(w, _B_KEYS), x)
    dw_b, dx_b = b_vjp(mu)
    dr, d_norm = norm_vjp(dx_a + dx_b + dx_c)
    return {**dw_a, **dw_b, **dw_c, "norm": d_norm}, dr, a[0] * mu[0]


def _maps(w: LayerWeights, x: Array) -> tuple[Array, Array, Array]:
    return a_map(w, x), b_map(w, x), c_map(w, x)


def exact_layer_backward(
    w: LayerWeights,
    a: Float[Array, "T B N"],
    c: Float[Array, "T B N"],
    h: Float[Array, "T B N"],
    r: Float[Array, "T B P"],
    G: Float[Array, "T B P"],
    *,
    eps: float,
    chunk: int,
    h0: Float[Array, "B N"] | None = None,
    mu_end: Float[Array, "B N"] | None = None,
) -> tuple[LayerWeights, Float[Array, "T B P"], Float[Array, "T B P"], Float[Array, "B N"]]:
    """One layer of the exact method: from the layer's output stream `r = r_k` and its
    cotangent `G = G_k`, the layer's gradients, `r_{k-1}` and `G_{k-1}`.

    Everything runs over chunks of `chunk` tokens (and a last partial chunk if `T` is not
    a multiple of `chunk`), last chunk first: the adjoint `μ` of a
    chunk is a reverse scan from the carry `a ⊙ μ` handed back by the chunk after it, then
    the per-token VJPs of 𝒜, ℬ, 𝒞 and of the norm run on the chunk, writing its `r_{k-1}`
    and `G_{k-1}` over `r` and `G` in place. No `T × N` buffer exists beyond the stored
    `a`, `c`, `h`: the working set is a chunk's.

    **Returns:** `(∂L/∂w, r_{k-1}, G_{k-1}, a_1 ⊙ μ_1)`.
    """
    first = jnp.zeros_like(h[0]) if h0 is None else h0
    T = r.shape[0]
    n_chunks, tail = divmod(T, chunk)
    zeros = jax.tree.map(jnp.zeros_like, w)
    after = jnp.zeros_like(h[0]) if mu_end is None else mu_end
    if tail:
        # A last partial chunk (T not a multiple of chunk) goes first, on its own.
        start = T - tail
        before = first if start == 0 else h[start - 1]
        zeros, r_prev, G_prev, after = exact_chunk_backward(
            w, a[start:], c[start:], h[start:], before, r[start:], G[start:], after, eps=eps
        )
        r = lax.dynamic_update_slice_in_dim(r, r_prev, start, 0)
        G = lax.dynamic_update_slice_in_dim(G, G_prev, start, 0)

    def one_chunk(i: Array, carry):
        r, G, dw, after = carry
        j = n_chunks - 1 - i  # last chunk first: μ flows backwards in time
        take = ft.partial(lax.dynamic_slice_in_dim, start_index=j * chunk, slice_size=chunk)
        before = lax.dynamic_index_in_dim(h, jnp.maximum(j * chunk - 1, 0), keepdims=False)
        before = jnp.where(j == 0, first, before)
        dw_j, r_prev, G_prev, after = exact_chunk_backward(
            w, take(a), take(c), take(h), before, take(r), take(G), after, eps=eps
        )
        r = lax.dynamic_update_slice_in_dim(r, r_prev, j * chunk, 0)
        G = lax.dynamic_update_slice_in_dim(G, G_prev, j * chunk, 0)
        return r, G, jax.tree.map(jnp.add, dw, dw_j), after

    r, G, dw, mu_start = lax.fori_loop(0, n_chunks, one_chunk, (r, G, zeros, after))
    return dw, r, G, mu_start


def exact_chunk_backward(
    w: LayerWeights,
    a: Float[Array, "C B N"],
    c: Float[Array, "C B N"],
    h: Float[Array, "C B N"],
    h_before: Float[Array, "B N"],
    r: Float[Array, "C B P"],
    G: Float[Array, "C B P"],
    after: Float[Array, "B N"],
    *,
    eps: float,
) -> tuple[LayerWeights, Float[Array, "C B P"], Float[Array, "C B P"], Float[Array, "B N"]]:
    """The exact method on one layer and one chunk of time: from the chunk's stored states,
    the state `h_before` entering it, its output stream `r` and cotangent `G`, and the carry
    `after = a ⊙ μ` handed back by the chunk after it (zero for the last), the chunk's
    contribution to the layer's gradients, its input stream `r - z`, the input's cotangent,
    and the carry `a_1 ⊙ μ_1` for the chunk before it."""
    r_prev = r - emit(w, c, h)  # the residual layer inverted: its input, not stored
    x, norm_vjp = jax.vjp(lambda r, s: rms_norm(r, s, eps), r_prev, w["norm"])
    _, maps_vjp = jax.vjp(_maps, _subset(w, _MAP_KEYS), x)
    dw, G_prev, mu_start = _chunk_vjps(w, a, c, h, h_before, G, after, norm_vjp, maps_vjp)
    return dw, r_prev, G_prev, mu_start


def exact_chunk_backward_from_input(
    w: LayerWeights,
    h: Float[Array, "C B N"],
    h_before: Float[Array, "B N"],
    r_in: Float[Array, "C B P"],
    G: Float[Array, "C B P"],
    after: Float[Array, "B N"],
    *,
    eps: float,
) -> tuple[LayerWeights, Float[Array, "C B P"], Float[Array, "B N"]]:
    """`exact_chunk_backward` from the chunk's input stream `r_in` and states `h` alone: the
    transitions and selections come out of the maps' own VJP (their primal outputs), so
    nothing but `h` need be stored. For schedules that recompute a chunk's streams.

    **Returns:** `(∂L/∂w over the chunk, the input's cotangent, a_1 ⊙ μ_1)`.
    """
    x, norm_vjp = jax.vjp(lambda r, s: rms_norm(r, s, eps), r_in, w["norm"])
    (a, _, c), maps_vjp = jax.vjp(_maps, _subset(w, _MAP_KEYS), x)
    return _chunk_vjps(w, a, c, h, h_before, G, after, norm_vjp, maps_vjp)


def _chunk_vjps(
    w: LayerWeights,
    a: Array,
    c: Array,
    h: Array,
    h_before: Array,
    G: Array,
    after: Array,
    norm_vjp: Callable,
    maps_vjp: Callable,
) -> tuple[LayerWeights, Array, Array]:
    dz = G @ w["out_kernel"].T  # ∂L/∂(c ⊙ h)
    # μ_t = a_{t+1} μ_{t+1} + c_t ⊙ dz_t; the chunk's last μ also gets a ⊙ μ from after it.
    d_a, mu, mu_start = linear_recurrence_vjp(a, h, dz * c, h_before, carry=after)
    dw_maps, dx = maps_vjp((d_a, mu, dz * h))
    dr, d_norm = norm_vjp(dx)
    d_out = jnp.einsum("...n,...p->np", c * h, G)
    return {**dw_maps, "norm": d_norm, "out_kernel": d_out}, G + dr, mu_start


def exact_layers_backward(
    layers: LayerWeights,
    stored: Stored,
    g: Float[Array, "T B P"],
    *,
    eps: float,
    chunk: int,
    h0: Float[Array, "K B N"] | None = None,
    mu_end: Float[Array, "K B N"] | None = None,
) -> tuple[LayerWeights, Float[Array, "T B P"], Float[Array, "K B N"]]:
    """The exact method over all layers, last to first (a reverse `lax.scan`).

    **Returns:** `(∂L/∂layers, G_0, a_1 ⊙ μ_1 per layer)`.
    """

    def step(carry, xs):
        r, G = carry
        w, a, c, h, h0k, mu_end_k = xs
        dw, r, G, mu_start = exact_layer_backward(
            w, a, c, h, r, G, eps=eps, chunk=chunk, h0=h0k, mu_end=mu_end_k
        )
        return (r, G), (dw, mu_start)

    xs = (layers, stored.a, stored.c, stored.h, h0, mu_end)
    (_, G0), (d_layers, mu_start) = lax.scan(step, (stored.r_out, g), xs, reverse=True)
    return d_layers, G0, mu_start


def layer_backward_literal(
    w: LayerWeights,
    r_in: Float[Array, "T B P"],
    a: Float[Array, "T B N"],
    h: Float[Array, "T B N"],
    G: Float[Array, "T B P"],
    *,
    eps: float,
    window: int | Int[ArrayLike, ""] | None = None,
) -> tuple[LayerWeights, Float[Array, "T B P"]]:
    """`layer_backward` by the paper's double sum (Proposition 2, Eq. 7 when `window`).

    For each output time `t`: `e^{t,i} = Φ(t,i)ᵀ c^t` for every source `i ≤ t` (and
    `t - i < window`), then one batched VJP of `𝒜` and of `ℬ` over the sources. The `𝒞` term
    is local in time, as in the aggregated form. O(T²) token-VJPs: a reference for small `T`.
    """
    T = a.shape[0]
    window = T if window is None else window
    x, norm_vjp = jax.vjp(lambda r, s: rms_norm(r, s, eps), r_in, w["norm"])
    _, readout_vjp = jax.vjp(readout, _subset(w, _C_KEYS), x, h)
    dw_c, dx_c, c = readout_vjp(G)
    _, a_vjp = jax.vjp(a_map, _subset(w, _A_KEYS), x)
    _, b_vjp = jax.vjp(b_map, _subset(w, _B_KEYS), x)
    h_prev = _previous_states(h, None)
    source = jnp.arange(T).reshape((T,) + (1,) * (a.ndim - 1))

    def one_output(carry, t):
        dw_a, dw_b, dx = carry
        # Φ(t,i) = a_t ⋯ a_{i+1}: a reverse cumulative product of the a_j with i < j ≤ t.
        a_upto_t = jnp.where(source <= t, a, 1)
        suffix = jnp.cumprod(a_upto_t[::-1], axis=0)[::-1]
        phi = jnp.concatenate([suffix[1:], jnp.ones_like(suffix[:1])], axis=0)
        kept = (source <= t) & (source > t - window)
        e = jnp.where(kept, phi * c[t], 0)
        ga, xa = a_vjp(e * h_prev)
        gb, xb = b_vjp(e)
        return (
            jax.tree.map(jnp.add, dw_a, ga),
            jax.tree.map(jnp.add, dw_b, gb),
            dx + xa + xb,
        ), None

    zeros = jax.tree.map(jnp.zeros_like, (_subset(w, _A_KEYS), _subset(w, _B_KEYS), dx_c))
    (dw_a, dw_b, dx_ab), _ = lax.scan(one_output, zeros, jnp.arange(T))
    dr, d_norm = norm_vjp(dx_ab + dx_c)
    return {**dw_a, **dw_b, **dw_c, "norm": d_norm}, dr


def embedding_gradient(weights: Weights, inputs: Array, G0: Array) -> Array:
    """The embedding table's gradient from the cotangent `G0` of the embedded stream."""
    table = jnp.zeros_like(weights["embed"])
    return table.at[inputs.reshape(-1)].add(G0.reshape(-1, G0.shape[-1]))


class AbstractLayerVJP(eqx.Module):
    """How one layer of the paper's estimator turns its stored states and the head cotangent
    into its gradients: `(w, r_in, a, h, G, eps) -> (∂L/∂w, J_RMSNorm(r_in)ᵀ ξ)`."""

    window: eqx.AbstractVar[int | None]

    @abc.abstractmethod
    def __call__(
        self, w: LayerWeights, r_in: Array, a: Array, h: Array, G: Array, eps: float
    ) -> tuple[LayerWeights, Array]:
        raise NotImplementedError


class AggregatedVJP(AbstractLayerVJP):
    """The O(T) form: the (windowed) adjoint states by one scan, then one VJP per map."""

    window: int | None = None

    def __call__(self, w, r_in, a, h, G, eps):
        window = self.window
        adjoint: AdjointFn = (
            adjoint_states if window is None else ft.partial(windowed_adjoint_states, window=window)
        )
        dw, dr, _ = layer_backward(w, r_in, a, h, G, eps=eps, adjoint=adjoint)
        return dw, dr


class LiteralVJP(AbstractLayerVJP):
    """The paper's O(T²) double sum (`layer_backward_literal`)."""

    window: int | None = None

    def __call__(self, w, r_in, a, h, G, eps):
        return layer_backward_literal(w, r_in, a, h, G, eps=eps, window=self.window)


def highway_layers_backward(
    layers: LayerWeights,
    stored: Stored,
    g: Float[Array, "T B P"],
    layer_vjp: AbstractLayerVJP,
    eps: float,
    acc: Float[Array, "T B P"],
) -> tuple[LayerWeights, Float[Array, "T B P"]]:
    """The paper's estimator over the stacked `layers`: every layer sees the head cotangent
    `g`, so the layers' VJP work is independent.

    **Returns:** `(∂L/∂layers, acc + Σ_k J_RMSNorm(r_{k-1})ᵀ ξ_k)` over these layers (the
    sum starts from `acc`, so that the caller's `g` needs no second buffer).
    """

    def step(acc: Array, xs):
        w, r_in, a, h = xs
        dw, dr = layer_vjp(w, r_in, a, h, g, eps)
        return acc + dr, dw

    xs = (layers, stored.r_in, stored.a, stored.h)
    acc, d_layers = lax.scan(step, acc, xs)
    return d_layers, acc


def highway_value_and_grad(
    weights: Weights,
    inputs: Int[Array, "T B"],
    targets: Int[Array, "T B"],
    mask: Float[Array, "T B"],
    scale: Float[Array, ""],
    *,
    eps: float,
    loss_chunk: int,
    layer_vjp: AbstractLayerVJP,
) -> tuple[Float[Array, ""], Weights]:
    """The loss and the paper's estimator of its gradient (`adjoint_paper`, `truncated`):
    every layer sees `g`; the embedding receives `g + Σ_k J_RMSNormᵀ ξ_k`."""
    stored = forward_store(weights, inputs, eps, keep_inputs=True, chunk=loss_chunk)
    loss, g, d_final_norm, d_head = chunked_loss_and_cotangent(
        weights["final_norm"], weights["head"], stored.r_out, targets, mask, eps, loss_chunk, scale
    )
    d_layers, G0 = highway_layers_backward(weights["layers"], stored, g, layer_vjp, eps, g)
    grads = {
        "embed": embedding_gradient(weights, inputs, G0),
        "layers": d_layers,
        "final_norm": d_final_norm,
        "head": d_head,
    }
    return loss, grads


def exact_value_and_grad(
    weights: Weights,
    inputs: Int[Array, "T B"],
    targets: Int[Array, "T B"],
    mask: Float[Array, "T B"],
    scale: Float[Array, ""],
    *,
    eps: float,
    loss_chunk: int,
) -> tuple[Float[Array, ""], Weights]:
    """The loss and its exact gradient by adjoint sharding (`adjoint`): the residual-stream
    cotangent is handed from layer to layer through the stored states."""
    stored = forward_store(weights, inputs, eps, chunk=loss_chunk)
    loss, g, d_final_norm, d_head = chunked_loss_and_cotangent(
        weights["final_norm"], weights["head"], stored.r_out, targets, mask, eps, loss_chunk, scale
    )
    d_layers, G0, _ = exact_layers_backward(weights["layers"], stored, g, eps=eps, chunk=loss_chunk)
    grads = {
        "embed": embedding_gradient(weights, inputs, G0),
        "layers": d_layers,
        "final_norm": d_final_norm,
        "head": d_head,
    }
    return loss, grads
