"""The selective diagonal SSM language model of Xu et al. (2025, §3.1) in Flax NNX.

Token embedding `r_0`; `K` residual layers, each

    x_t = RMSNorm(r_{t}),  a_t = 𝒜(x_t) ∈ (0,1)^N,  u_t = ℬ(x_t),  h_t = a_t ⊙ h_{t-1} + u_t,
    z_t = 𝒞(x_t, h_t) = W_out (c(x_t) ⊙ h_t),  r ← r + z;

then a final RMSNorm and the head. The per-token maps are single dense layers from the width
`P` to the state size `N` (𝒜 with a sigmoid, so the diagonal transition lies in (0, 1)); `𝒞`
is the token-dependent readout `C_t = W_out diag(c(x_t))`, a P×N matrix. This is the paper's
"selective diagonal SSM with single-layer-MLP 𝒜, ℬ, 𝒞" (its §4.5, Table 1: every map's VJP
costs N(2P+1) flops per token).

The layers' parameters are stacked on a leading axis of size `K` with the mesh axis name
`"layer"` in their sharding metadata, so the layers can be scanned over and partitioned over
devices. The gradient methods (`adjoint_lab.ssm.value_and_grad`) work on the pure weights
`nnx.to_pure_dict(nnx.state(model, nnx.Param))` through the functions below, which use a
time-major layout `[T, batch, ...]`.
"""

from __future__ import annotations

import functools as ft
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax
from jaxtyping import Array, Float, Int

from ..core import associative_recurrence
from .config import SSMConfig

__all__ = [
    "LAYER_AXIS",
    "SSMLM",
    "LayerStates",
    "a_map",
    "b_map",
    "c_map",
    "emit",
    "embed",
    "layer_forward",
    "layer_forward_chunked",
    "readout",
    "rms_norm",
]

LAYER_AXIS = "layer"

Weights = dict[str, Any]
LayerWeights = dict[str, Array]
# `(a, b, h0) -> h`: how a layer's forward pass runs its recurrence (the autodiff baselines
# differ only in this: `core.associative_recurrence` or `core.sequential_recurrence`).
Recurrence = Callable[[Array, Array, Array | None], Array]


# --------------------------------------------------------------------------------------
# Pure pieces (time-major), shared by the forward pass and by every gradient method.
# --------------------------------------------------------------------------------------


def rms_norm(r: Float[Array, "... P"], scale: Float[Array, " P"], eps: float) -> Array:
    """`r / rms(r) * scale` over the last axis."""
    return r * lax.rsqrt(jnp.mean(r * r, axis=-1, keepdims=True) + eps) * scale


def a_map(w: LayerWeights, x: Float[Array, "... P"]) -> Float[Array, "... N"]:
    """𝒜: the diagonal transition `a_t = sigmoid(W_a x_t + b_a)`, in (0, 1)."""
    return jax.nn.sigmoid(x @ w["a_kernel"] + w["a_bias"])


def b_map(w: LayerWeights, x: Float[Array, "... P"]) -> Float[Array, "... N"]:
    """ℬ: the input of the recurrence, `u_t = B_t x_t = W_b x_t + b_b`."""
    return x @ w["b_kernel"] + w["b_bias"]


def c_map(w: LayerWeights, x: Float[Array, "... P"]) -> Float[Array, "... N"]:
    """𝒞's selection: `c_t = W_c x_t + b_c`, so that `C_t = W_out diag(c_t)`."""
    return x @ w["c_kernel"] + w["c_bias"]


def emit(
    w: LayerWeights, c: Float[Array, "... N"], h: Float[Array, "... N"]
) -> Float[Array, "... P"]:
    """The layer output `z_t = C_t h_t = W_out (c_t ⊙ h_t)` from the selection and the state."""
    return (c * h) @ w["out_kernel"]


def readout(
    w: LayerWeights, x: Float[Array, "... P"], h: Float[Array, "... N"]
) -> Float[Array, "... P"]:
    """𝒞: the layer output `z_t = C_t h_t` with `C_t = W_out diag(W_c x_t + b_c)`."""
    return emit(w, c_map(w, x), h)


def embed(table: Float[Array, "V P"], tokens: Int[Array, "T B"]) -> Float[Array, "T B P"]:
    return jnp.take(table, tokens, axis=0)


class LayerStates(NamedTuple):
    """One layer's per-token quantities: transition `a`, selection `c` and state `h`."""

    a: Float[Array, "T B N"]
    c: Float[Array, "T B N"]
    h: Float[Array, "T B N"]


def layer_forward(
    w: LayerWeights,
    r: Float[Array, "T B P"],
    h0: Float[Array, "B N"] | None,
    eps: float,
    recurrence: Recurrence = associative_recurrence,
) -> tuple[Float[Array, "T B P"], LayerStates]:
    """One residual layer: returns `r + z` and the layer's `(a, c, h)`."""
    x = rms_norm(r, w["norm"], eps)
    a = a_map(w, x)
    # The plain associative scan by default, differentiated by autodiff in the baselines; the
    # adjoint methods never differentiate it.
    h = recurrence(a, b_map(w, x), h0)
    c = c_map(w, x)
    return r + emit(w, c, h), LayerStates(a, c, h)


def layer_forward_chunked(
    w: LayerWeights,
    r: Float[Array, "T B P"],
    h0: Float[Array, "B N"] | None,
    eps: float,
    chunk: int,
) -> tuple[Float[Array, "T B P"], LayerStates]:
    """`layer_forward` over time chunks of `chunk` tokens, carrying the state from chunk to
    chunk: the same outputs, while the scan's temporaries, `b` and the normalised input exist
    for one chunk at a time. For the stored-state methods, whose forward pass is never
    differentiated. A last partial chunk (`T` not a multiple of `chunk`) runs after the
    others, on its own."""
    T, B = r.shape[:2]
    n_chunks, tail = divmod(T, chunk)
    a_spec = jax.eval_shape(lambda x: a_map(w, x), r[:1])
    n_states, dtype = a_spec.shape[-1], a_spec.dtype

    # A fori_loop writing into preallocated outputs, not a scan stacking them: the outputs
    # are updated in place (measured: a scan over chunks doubles the stored states' memory).
    def one_chunk(j: Array, carry):
        r_out, a_all, c_all, h_all, h_in = carry
        r_next, (a, c, h) = layer_forward(
            w, lax.dynamic_slice_in_dim(r, j * chunk, chunk), h_in, eps
        )
        put = ft.partial(lax.dynamic_update_slice_in_dim, start_index=j * chunk, axis=0)
        outputs = (put(r_out, r_next), put(a_all, a), put(c_all, c), put(h_all, h))
        return (*outputs, h[-1])

    zeros = jnp.zeros((T, B, n_states), dtype)
    first = jnp.zeros((B, n_states), dtype) if h0 is None else h0
    carry = (jnp.zeros_like(r), zeros, zeros, zeros, first)
    r_out, a, c, h, h_end = lax.fori_loop(0, n_chunks, one_chunk, carry)
    if tail:
        start = n_chunks * chunk
        r_next, states = layer_forward(w, r[start:], h_end, eps)
        r_out = lax.dynamic_update_slice_in_dim(r_out, r_next, start, 0)
        a, c, h = (
            lax.dynamic_update_slice_in_dim(x, y, start, 0)
            for x, y in zip((a, c, h), states, strict=True)
        )
    return r_out, LayerStates(a, c, h)


def layer_weights(weights: Weights, k: int) -> LayerWeights:
    """The weights of layer `k` (one slice of the stacked layer parameters)."""
    return {name: value[k] for name, value in weights["layers"].items()}


# --------------------------------------------------------------------------------------
# The module.
# --------------------------------------------------------------------------------------


def _param(value: Array, *names: str | None) -> nnx.Param:
    # Sharding names as metadata only: placement happens when a layout shards the state.
    return nnx.Param(value, out_sharding=names, eager_sharding=False)


class _Layers(nnx.Module):
    """The `K` layers' parameters, stacked on a leading `"layer"` axis."""

    def __init__(self, config: SSMConfig, key: Array):
        K, P, N = config.num_layers, config.width, config.state_size
        dtype = jnp.dtype(config.param_dtype)
        keys = jax.random.split(key, 5)

        def normal(k: Array, shape: tuple[int, ...], std: float) -> Array:
            return (std * jax.random.normal(k, shape, jnp.float32)).astype(dtype)

        # Transitions start between 0.9 and 0.999 (memories of 10 to 1000 tokens).
        a0 = 1.0 - jnp.exp(
            jax.random.uniform(keys[4], (K, N), minval=jnp.log(1e-3), maxval=jnp.log(0.1))
        )
        L = LAYER_AXIS
        self.norm = _param(jnp.ones((K, P), dtype), L, None)
        self.a_kernel = _param(normal(keys[0], (K, P, N), 0.1 / P**0.5), L, None, None)
        self.a_bias = _param(jnp.log(a0 / (1 - a0)).astype(dtype), L, None)
        self.b_kernel = _param(normal(keys[1], (K, P, N), 1 / P**0.5), L, None, None)
        self.b_bias = _param(jnp.zeros((K, N), dtype), L, None)
        self.c_kernel = _param(normal(keys[2], (K, P, N), 1 / P**0.5), L, None, None)
        self.c_bias = _param(jnp.ones((K, N), dtype), L, None)
        self.out_kernel = _param(normal(keys[3], (K, N, P), 1 / (N * K) ** 0.5), L, None, None)


class SSMLM(nnx.Module):
    """The selective diagonal SSM language model (see the module docstring).

    **Arguments:**

    - `config`: the shapes, an `SSMConfig` (or a preset: `ssm.preset("ssm-ref")`).
    - `rngs`: `nnx.Rngs` for the initial parameters.

    Calling the model on int tokens `[batch, T]` returns the logits `[batch, T, V]`; for
    training at long context use `adjoint_lab.ssm.value_and_grad`, which never holds the
    `T × V` logits.
    """

    def __init__(self, config: SSMConfig, *, rngs: nnx.Rngs):
        self.config = config
        V, P = config.vocab_size, config.width
        dtype = jnp.dtype(config.param_dtype)
        k_embed, k_head, k_layers = jax.random.split(rngs.params(), 3)
        self.embed = _param(
            jax.random.normal(k_embed, (V, P), jnp.float32).astype(dtype), None, None
        )
        self.layers = _Layers(config, k_layers)
        self.final_norm = _param(jnp.ones((P,), dtype), None)
        self.head = _param(
            (jax.random.normal(k_head, (P, V), jnp.float32) / P**0.5).astype(dtype), None, None
        )

    def __call__(self, tokens: Int[Array, "B T"]) -> Float[Array, "B T V"]:
        weights = nnx.to_pure_dict(nnx.state(self, nnx.Param))
        r = final_stream(weights, tokens.T, self.config.norm_eps)
        x = rms_norm(r, weights["final_norm"], self.config.norm_eps)
        return jnp.swapaxes(x @ weights["head"], 0, 1)


def final_stream(
    weights: Weights,
    tokens: Int[Array, "T B"],
    eps: float,
    recurrence: Recurrence = associative_recurrence,
) -> Float[Array, "T B P"]:
    """The residual stream `r_K` after all layers (a `lax.scan` over the stacked layers)."""

    def step(r: Array, w: LayerWeights) -> tuple[Array, None]:
        return layer_forward(w, r, None, eps, recurrence)[0], None

    return lax.scan(step, embed(weights["embed"], tokens), weights["layers"])[0]
