"""Held-out loss and next-token accuracy, over chunks of tokens (no `T × V` logits)."""

from __future__ import annotations

import functools as ft
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, ArrayLike, Float, Int

from .config import SSMConfig
from .loss import _chunks
from .model import Weights, final_stream, rms_norm
from .tokens import DEFAULT_LOSS_CHUNK, prepare_tokens

__all__ = ["evaluation_function"]


@ft.lru_cache(maxsize=16)
def evaluation_function(
    config: SSMConfig, context: int, chunk: int | None = None
) -> Callable[
    [Weights, Int[ArrayLike, "B T1"], Float[ArrayLike, "B T"]], tuple[Array, Array, Array]
]:
    """A jitted `(weights, tokens, target_weights) -> (Σ w·loss, Σ w·correct, Σ w)`."""
    chunk = min(chunk or DEFAULT_LOSS_CHUNK, context)
    eps = config.norm_eps

    @jax.jit
    def fn(weights: Weights, tokens: Array, target_weights: Array):
        dtype = weights["head"].dtype
        inputs, targets, mask, _ = prepare_tokens(tokens, chunk, dtype, target_weights)
        r = final_stream(weights, inputs, eps)

        def body(carry, xs):
            r_c, t_c, m_c = xs
            logits = rms_norm(r_c, weights["final_norm"], eps) @ weights["head"]
            logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
            picked = jnp.take_along_axis(logits, t_c[..., None], axis=-1)[..., 0]
            loss = jnp.sum((jax.nn.logsumexp(logits, axis=-1) - picked) * m_c)
            correct = jnp.sum((jnp.argmax(logits, axis=-1) == t_c) * m_c)
            return (carry[0] + loss, carry[1] + correct), None

        xs = (_chunks(r, chunk), _chunks(targets, chunk), _chunks(mask, chunk))
        zero = jnp.zeros((), jnp.promote_types(dtype, jnp.float32))
        (loss, correct), _ = lax.scan(body, (zero, zero), xs)
        return loss, correct, jnp.sum(mask)

    return fn
