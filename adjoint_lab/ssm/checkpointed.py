"""The `checkpointed` method: exact adjoint gradients with memory sublinear in `T`.

The forward pass keeps only every layer's recurrent state at the chunk boundaries (`T/C`
times `K × N` numbers) plus the tokens. The backward pass walks the chunks in reverse order,
on the schedule of `remat` with the exact adjoint in place of autodiff: it runs the chunk
through all layers keeping only each layer's input stream (`K × C × P`; or, where the state
is narrow, `2N < P`, each layer's selection and states `K × C × 2N`, from which the inputs
are recovered on the way down by inverting the residual layers), takes the chunk's loss
cotangent, then goes down the layers, recomputing one layer's states from its input and
boundary state and running the exact chunk adjoint (`adjoint.exact_chunk_backward_from_input`),
with every layer's `a_{s+1} ⊙ μ_{s+1}` carried back across the chunk boundary. The gradients
are accumulated in place into one buffer. Memory: O(T/C) boundary states, the chunk's kept
streams and one layer's chunk (C ≈ √T minimises it), for one extra forward pass.

(Before, a chunk's backward pass stored the `(a, c, h)` of all `K` layers at once, `3KN`
numbers per token against `remat`'s `KP` layer inputs, and built a second gradient-sized
buffer per chunk: 1.08–1.23× `remat`'s memory where `N > P`.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float, Int

from ..core import boundary_states, chunked_scan
from .adjoint import exact_chunk_backward_from_input
from .loss import chunked_loss_and_cotangent
from .model import LayerWeights, Weights, embed, emit, layer_forward

__all__ = ["checkpointed_value_and_grad"]


def _boundary_states(weights: Weights, inputs: Array, eps: float, chunk: int) -> Array:
    """The state of every layer before each chunk, `[num_chunks, K, B, N]` (no tape)."""
    layers = weights["layers"]
    K, N = layers["a_bias"].shape

    def chunk_step(h: Array, tokens: Array) -> Array:
        def layer(r: Array, xs: tuple[LayerWeights, Array]):
            w, h0 = xs
            r, states = layer_forward(w, r, h0, eps)
            return r, states.h[-1]

        return lax.scan(layer, embed(weights["embed"], tokens), (layers, h))[1]

    h0 = jnp.zeros((K, inputs.shape[1], N), layers["a_bias"].dtype)
    return boundary_states(chunk_step, h0, inputs, chunk=chunk)


def checkpointed_value_and_grad(
    weights: Weights,
    inputs: Int[Array, "T B"],
    targets: Int[Array, "T B"],
    mask: Float[Array, "T B"],
    scale: Float[Array, ""],
    *,
    eps: float,
    chunk: int,
    loss_chunk: int | None = None,
) -> tuple[Float[Array, ""], Weights]:
    """The loss and its exact gradient, chunk by chunk in reverse order; each chunk's loss
    runs over `loss_chunk` tokens at a time (a divisor of `chunk`; default the chunk)."""
    loss_chunk = chunk if loss_chunk is None else loss_chunk
    layers = weights["layers"]
    K = layers["a_bias"].shape[0]
    boundaries = _boundary_states(weights, inputs, eps, chunk)

    P = weights["embed"].shape[-1]
    N = layers["a_bias"].shape[-1]
    # What a chunk keeps per layer and token for the way down: the layer's input stream (P
    # numbers), or, where that is more, its selection and states (2N), from which the input
    # is recovered by inverting the residual layer, r_{k-1} = r_k - W_out (c ⊙ h).
    invert = 2 * N < P

    def forward(r: Array, xs: tuple[LayerWeights, Array]):
        w, h0 = xs
        r_next, states = layer_forward(w, r, h0, eps)
        return r_next, (states.c, states.h) if invert else r

    def layer_back(carry, xs):
        r, G, d_layers = carry
        k, w, kept, h0, after = xs
        if invert:
            c, h = kept
            r = r - emit(w, c, h)  # this layer's input
        else:
            r = kept
            h = layer_forward(w, r, h0, eps)[1].h  # this layer's states, recomputed
        dw, G, after = exact_chunk_backward_from_input(w, h, h0, r, G, after, eps=eps)
        # In place on the carry: no second gradient-sized buffer.
        d_layers = jax.tree.map(lambda d, x: d.at[k].add(x), d_layers, dw)
        return (r, G, d_layers), after

    def chunk_backward(carry, xs):
        loss, grads, after = carry
        (tokens, tgt, m), h_start = xs
        r_out, kept = lax.scan(forward, embed(weights["embed"], tokens), (layers, h_start))
        value, g, d_final_norm, d_head = chunked_loss_and_cotangent(
            weights["final_norm"], weights["head"], r_out, tgt, m, eps, loss_chunk, scale
        )
        xs = (jnp.arange(K), layers, kept, h_start, after)
        init = (r_out, g, grads["layers"])
        (_, G0, d_layers), after = lax.scan(layer_back, init, xs, reverse=True)
        grads = {
            "embed": grads["embed"].at[tokens.reshape(-1)].add(G0.reshape(-1, G0.shape[-1])),
            "layers": d_layers,
            "final_norm": grads["final_norm"] + d_final_norm,
            "head": grads["head"] + d_head,
        }
        return (loss + value, grads, after), None

    after0 = jnp.zeros_like(boundaries[0])
    loss0 = jnp.zeros((), jnp.promote_types(mask.dtype, jnp.float32))
    (loss, grads, _), _ = chunked_scan(
        chunk_backward,
        (loss0, jax.tree.map(jnp.zeros_like, weights), after0),
        (inputs, targets, mask),
        chunk=chunk,
        reverse=True,
        extra=boundaries,
    )
    return loss, grads
