"""The `checkpointed` method: exact adjoint gradients with memory sublinear in `T`.

The forward pass keeps only every layer's recurrent state at the chunk boundaries (`T/C`
times `K × N` numbers) plus the tokens. The backward pass walks the chunks in reverse order:
it recomputes one chunk's states from its boundary state, takes that chunk's loss cotangent,
and runs the exact layer-to-layer adjoint of `adjoint.py` inside the chunk, with the adjoint
`a_{s+1} ⊙ μ_{s+1}` of every layer carried back across the boundary. Memory: O(T/C + C)
states per layer (C ≈ √T minimises it), for one extra forward pass.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float, Int

from ..core import boundary_states, chunked_scan
from .adjoint import embedding_gradient, exact_layers_backward, forward_store
from .loss import chunked_loss_and_cotangent
from .model import LayerWeights, Weights, embed, layer_forward

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
    boundaries = _boundary_states(weights, inputs, eps, chunk)
    zero_grads = jax.tree.map(jnp.zeros_like, weights)

    def chunk_backward(carry, xs):
        loss, grads, mu_carry = carry
        (tokens, tgt, m), h_start = xs
        stored = forward_store(weights, tokens, eps, h0=h_start)
        value, g, d_final_norm, d_head = chunked_loss_and_cotangent(
            weights["final_norm"], weights["head"], stored.r_out, tgt, m, eps, loss_chunk, scale
        )
        d_layers, G0, mu_start = exact_layers_backward(
            weights["layers"], stored, g, eps=eps, chunk=chunk, h0=h_start, mu_end=mu_carry
        )
        chunk_grads = {
            "embed": embedding_gradient(weights, tokens, G0),
            "layers": d_layers,
            "final_norm": d_final_norm,
            "head": d_head,
        }
        grads = jax.tree.map(jnp.add, grads, chunk_grads)
        return (loss + value, grads, mu_start), None

    mu0 = jnp.zeros_like(boundaries[0])
    loss0 = jnp.zeros((), jnp.promote_types(mask.dtype, jnp.float32))
    (loss, grads, _), _ = chunked_scan(
        chunk_backward,
        (loss0, zero_grads, mu0),
        (inputs, targets, mask),
        chunk=chunk,
        reverse=True,
        extra=boundaries,
    )
    return loss, grads
