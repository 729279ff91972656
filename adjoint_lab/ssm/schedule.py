"""How the single-device exact adjoint (`Adjoint`) walks time: its schedules, as objects.

- `StoredStreams()`: the forward pass runs each layer over the whole context and keeps every
  layer's `(a, c, h)` per token; the head cotangent `g` of all tokens comes first, then the
  layers are walked back one at a time (`adjoint.exact_value_and_grad`). The backward pass
  holds two `T × P` streams (`r`, `G`) besides the stored states.
- `Chunkwise(chunk)`: the layer layout's wavefront on one device. The forward pass runs time
  chunks of `chunk` tokens through all layers, carrying each layer's state from chunk to
  chunk, and keeps only the states `h` of every layer and token (`K × T × N` numbers). The
  backward pass walks the chunks last to first: it rebuilds the chunk's streams from the
  embedding and the stored `h` (the maps only, no scan), takes the chunk's head cotangent,
  and runs the exact adjoint down the layers on the chunk
  (`adjoint.exact_chunk_backward_from_input`), with every layer's carry `a ⊙ μ` handed back
  across the chunk boundary. No `T × P` stream exists: besides `h`, a chunk's working set.

Both give `jax.grad`'s gradient. `StoredStreams` does one map evaluation less per layer and
token (the backward pass reads `a`, `c` instead of recomputing them), so it is the faster
where its streams fit (see `results/ssm_time.md`); `Chunkwise` needs `3P/N + 2` times less
memory at `ssm-ref`'s shapes (`results/ssm_memory.md`).
"""

from __future__ import annotations

import abc
import functools as ft

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float, Int

from .adjoint import exact_chunk_backward_from_input, exact_value_and_grad
from .loss import chunked_loss_and_cotangent
from .model import LayerWeights, Weights, c_map, embed, emit, layer_forward, rms_norm
from .tokens import DEFAULT_LOSS_CHUNK

__all__ = [
    "DEFAULT_ADJOINT_CHUNK",
    "AbstractAdjointSchedule",
    "Chunkwise",
    "StoredStreams",
    "chunkwise_value_and_grad",
    "loss_chunk_within",
]

# Tokens per time chunk of `Chunkwise`: the chunk's working set is small at any width, and
# the loop over chunks amortises its per-chunk overhead (measured on CPU: ssm_time).
DEFAULT_ADJOINT_CHUNK = 64


def _check_positive(owner: str, name: str, value: object) -> None:
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{owner}: {name}= must be a positive int, got {value!r}.")


def loss_chunk_within(owner: str, chunk: int, loss_chunk: int | None, context: int) -> int:
    """The loss chunk inside a time chunk of `chunk` tokens: `loss_chunk` if it divides it,
    the whole time chunk if `loss_chunk` is `None` or not smaller."""
    if loss_chunk is None or loss_chunk >= chunk:
        return chunk
    if chunk % loss_chunk:
        raise ValueError(
            f"{owner}: loss_chunk={loss_chunk} must divide the time chunk {chunk} (context "
            f"{context}); pass a loss_chunk that divides it, or None for the whole chunk."
        )
    return loss_chunk


class AbstractAdjointSchedule(eqx.Module):
    """The order in which `Adjoint` computes and stores: subclasses are final, and implement
    the padding multiple (`time_chunk`) and the pure gradient function (`value_and_grad_fn`)."""

    @abc.abstractmethod
    def time_chunk(self, context: int, loss_chunk: int | None) -> int:
        """The chunk length a context of `context` tokens is padded to a multiple of."""
        raise NotImplementedError

    @abc.abstractmethod
    def value_and_grad_fn(self, eps: float, context: int, loss_chunk: int | None):
        """`(weights, inputs, targets, mask, scale) -> (loss, grads)` on padded tokens."""
        raise NotImplementedError


class StoredStreams(AbstractAdjointSchedule):
    """Every layer's `(a, c, h)` per token, the whole context at a time (the backward pass
    holds two `T × P` streams); the loss over chunks of `loss_chunk` (default 256)."""

    def time_chunk(self, context, loss_chunk):
        return min(loss_chunk or DEFAULT_LOSS_CHUNK, context)

    def value_and_grad_fn(self, eps, context, loss_chunk):
        return ft.partial(
            exact_value_and_grad, eps=eps, loss_chunk=self.time_chunk(context, loss_chunk)
        )


class Chunkwise(AbstractAdjointSchedule):
    """Time chunks of `chunk` tokens both ways (default 64), storing only the states `h`;
    the loss of a chunk over `loss_chunk` tokens at a time (a divisor of `chunk`)."""

    chunk: int | None = None

    def __check_init__(self) -> None:
        _check_positive("Chunkwise", "chunk", self.chunk)

    def time_chunk(self, context, loss_chunk):
        return min(self.chunk or DEFAULT_ADJOINT_CHUNK, context)

    def value_and_grad_fn(self, eps, context, loss_chunk):
        chunk = self.time_chunk(context, loss_chunk)
        return ft.partial(
            chunkwise_value_and_grad,
            eps=eps,
            chunk=chunk,
            loss_chunk=loss_chunk_within("Chunkwise", chunk, loss_chunk, context),
        )


def _add_at(tree: LayerWeights, k: Array, update: LayerWeights) -> LayerWeights:
    # In place on a loop carry: no second gradient-sized buffer.
    return jax.tree.map(lambda d, x: d.at[k].add(x), tree, update)


def chunkwise_value_and_grad(
    weights: Weights,
    inputs: Int[Array, "T B"],
    targets: Int[Array, "T B"],
    mask: Float[Array, "T B"],
    scale: Float[Array, ""],
    *,
    eps: float,
    chunk: int,
    loss_chunk: int,
) -> tuple[Float[Array, ""], Weights]:
    """The loss and its exact gradient on the `Chunkwise` schedule (see the module
    docstring); `T` a multiple of `chunk`, `chunk` a multiple of `loss_chunk`."""
    layers, table = weights["layers"], weights["embed"]
    K = layers["a_bias"].shape[0]
    T = inputs.shape[0]
    n_chunks = T // chunk
    take = ft.partial(lax.dynamic_slice_in_dim, slice_size=chunk, axis=0)

    def chunk_states(r: Array, h_in: Array | None) -> Array:
        def layer(r: Array, xs: tuple[LayerWeights, Array | None]):
            w, h0 = xs
            r, states = layer_forward(w, r, h0, eps)
            return r, states.h

        return lax.scan(layer, r, (layers, h_in))[1]  # pyright: ignore[reportArgumentType]

    # Forward: the states of every layer and token, written in place chunk by chunk.
    spec = jax.eval_shape(lambda t: chunk_states(embed(table, take(t, 0)), None), inputs)
    states = jnp.zeros((K, T, *spec.shape[2:]), spec.dtype)

    def forward_chunk(j: Array, carry: tuple[Array, Array]) -> tuple[Array, Array]:
        states, h_last = carry
        h = chunk_states(embed(table, take(inputs, j * chunk)), h_last)
        return lax.dynamic_update_slice_in_dim(states, h, j * chunk, axis=1), h[:, -1]

    zero_state = jnp.zeros((K, *spec.shape[2:]), spec.dtype)
    states, _ = lax.fori_loop(0, n_chunks, forward_chunk, (states, zero_state))

    # Backward: the chunks last to first.
    def stream(r: Array, xs: tuple[LayerWeights, Array]) -> tuple[Array, Array]:
        # The layer from its stored states: z = W_out (c ⊙ h) needs the maps only, no scan.
        w, h = xs
        c = c_map(w, rms_norm(r, w["norm"], eps))
        return r + emit(w, c, h), r

    def layer_back(carry: tuple[Array, LayerWeights], xs):
        G, d_layers = carry
        k, w, h, before, r_in, after = xs
        dw, G, after = exact_chunk_backward_from_input(w, h, before, r_in, G, after, eps=eps)
        return (G, _add_at(d_layers, k, dw)), after

    def backward_chunk(i: Array, carry: tuple[Array, Weights, Array]):
        loss, grads, after = carry
        start = (n_chunks - 1 - i) * chunk
        tokens = take(inputs, start)
        h = lax.dynamic_slice_in_dim(states, start, chunk, axis=1)
        before = lax.dynamic_index_in_dim(states, jnp.maximum(start - 1, 0), 1, keepdims=False)
        before = jnp.where(start == 0, jnp.zeros_like(before), before)
        r_out, r_in = lax.scan(stream, embed(table, tokens), (layers, h))
        value, g, d_norm, d_head = chunked_loss_and_cotangent(
            weights["final_norm"],
            weights["head"],
            r_out,
            take(targets, start),
            take(mask, start),
            eps,
            loss_chunk,
            scale,
        )
        xs = (jnp.arange(K), layers, h, before, r_in, after)
        (G0, d_layers), after = lax.scan(layer_back, (g, grads["layers"]), xs, reverse=True)
        grads = {
            "embed": grads["embed"].at[tokens.reshape(-1)].add(G0.reshape(-1, G0.shape[-1])),
            "layers": d_layers,
            "final_norm": grads["final_norm"] + d_norm,
            "head": grads["head"] + d_head,
        }
        return loss + value, grads, after

    loss0 = jnp.zeros((), jnp.promote_types(mask.dtype, jnp.float32))
    init = (loss0, jax.tree.map(jnp.zeros_like, weights), zero_state)
    loss, grads, _ = lax.fori_loop(0, n_chunks, backward_chunk, init)
    return loss, grads
