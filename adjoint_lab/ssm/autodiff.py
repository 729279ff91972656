"""The autodiff baselines: `backprop` (jax.grad through the model, its recurrences by
`lax.associative_scan`), `scan_backprop` (the same with the recurrences by `lax.scan`) and
`remat` (per-layer and time-chunk rematerialisation).

`remat` is the strongest plain-autodiff baseline: the sequence is cut into chunks of `chunk`
tokens; a `lax.scan` over chunks carries every layer's recurrent state, and the chunk body
(all layers and the chunk's loss) is under `jax.checkpoint`, with each layer checkpointed
again inside it. The backward pass stores only the `K × N` states at chunk boundaries and
recomputes one chunk at a time (the pattern of Mamba's fused kernels and of axlearn's
boundary-state backward).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float, Int

from ..core import associative_recurrence, chunked_scan
from .loss import _chunk_loss, chunked_loss
from .model import LayerWeights, Recurrence, Weights, embed, final_stream, layer_forward

__all__ = ["backprop_loss", "remat_loss"]


def backprop_loss(
    weights: Weights,
    inputs: Int[Array, "T B"],
    targets: Int[Array, "T B"],
    mask: Float[Array, "T B"],
    scale: Float[Array, ""],
    *,
    eps: float,
    loss_chunk: int,
    recurrence: Recurrence = associative_recurrence,
) -> Float[Array, ""]:
    """The mean next-token loss, written for `jax.value_and_grad`; each layer runs its
    recurrence by `recurrence` (`core.associative_recurrence` or
    `core.sequential_recurrence`)."""
    r = final_stream(weights, inputs, eps, recurrence)
    return scale * chunked_loss(
        weights["final_norm"], weights["head"], r, targets, mask, eps, loss_chunk
    )


def remat_loss(
    weights: Weights,
    inputs: Int[Array, "T B"],
    targets: Int[Array, "T B"],
    mask: Float[Array, "T B"],
    scale: Float[Array, ""],
    *,
    eps: float,
    chunk: int,
    loss_chunk: int | None = None,
) -> Float[Array, ""]:
    """`backprop_loss` with per-layer and time-chunk rematerialisation; each chunk's loss
    runs over `loss_chunk` tokens at a time (a divisor of `chunk`; default the chunk)."""
    layers = weights["layers"]
    K, N = layers["a_bias"].shape
    B = inputs.shape[1]

    @jax.checkpoint
    def layer(r: Array, xs: tuple[LayerWeights, Array]) -> tuple[Array, Array]:
        w, h0 = xs
        r, states = layer_forward(w, r, h0, eps)
        return r, states.h[-1]

    def chunk_body(h: Array, xs: tuple[Array, Array, Array]) -> tuple[Array, Array]:
        tokens, tgt, m = xs
        r, h_end = lax.scan(layer, embed(weights["embed"], tokens), (layers, h))
        if loss_chunk is None or loss_chunk == chunk:
            return h_end, _chunk_loss(weights["final_norm"], weights["head"], r, tgt, m, eps)
        return h_end, chunked_loss(
            weights["final_norm"], weights["head"], r, tgt, m, eps, loss_chunk
        )

    h0 = jnp.zeros((K, B, N), layers["a_bias"].dtype)
    # Under jax.checkpoint per chunk: the backward pass stores the boundary states only.
    _, losses = chunked_scan(chunk_body, h0, (inputs, targets, mask), chunk=chunk, checkpoint=True)
    return scale * jnp.sum(losses)
