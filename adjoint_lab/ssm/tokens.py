"""Token batches as the gradient methods take them: checked, time-major, padded to a chunk."""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax.core import Tracer
from jaxtyping import Array, Float, Int

__all__ = ["DEFAULT_LOSS_CHUNK", "check_tokens", "default_chunk", "prepare_tokens"]

DEFAULT_LOSS_CHUNK = 256


def default_chunk(context: int) -> int:
    """The power of two nearest `sqrt(context)`: it balances boundary and in-chunk memory."""
    return max(1, 2 ** round(math.log2(max(context, 1)) / 2))


def prepare_tokens(
    tokens: Int[Array, "B T1"],
    multiple: int,
    dtype: Any,
    target_weights: Float[Array, "B T"] | None = None,
) -> tuple[
    Int[Array, "T_padded B"], Int[Array, "T_padded B"], Float[Array, "T_padded B"], Float[Array, ""]
]:
    """Inputs, targets and loss weights, time-major and zero-padded at the end to a multiple
    of `multiple` tokens (the model is causal: padding after the end changes nothing before
    it), and the scale `1 / Σ weights` that makes the loss a (weighted) mean.

    **Arguments:**

    - `tokens`: int ids `[batch, T+1]`.
    - `multiple`: the chunk length the context is padded to a multiple of.
    - `dtype`: the dtype of the weights and the scale.
    - `target_weights`: optional weights `[batch, T]` of the next-token losses.

    **Returns:**

    `(inputs, targets, mask, scale)`, the first three `[T', batch]` with `T'` the padded
    context.
    """
    inputs, targets = tokens[:, :-1].T, tokens[:, 1:].T
    T, B = inputs.shape
    pad = -T % multiple
    if target_weights is None:
        mask = jnp.ones((T, B), dtype)
    else:
        mask = jnp.asarray(target_weights, dtype).T
    if pad:
        inputs, targets, mask = (jnp.pad(x, ((0, pad), (0, 0))) for x in (inputs, targets, mask))
    return inputs, targets, mask, 1 / jnp.sum(mask)


def check_tokens(tokens: Any, vocab_size: int) -> None:
    """Shape, dtype and (when the ids are concrete) range of a token batch."""
    shape = getattr(tokens, "shape", None)
    dtype = getattr(tokens, "dtype", None)
    if shape is None or len(shape) != 2 or shape[1] < 2:
        raise ValueError(
            f"tokens must be int ids of shape [batch, T+1] with T >= 1; got shape {shape}."
        )
    if dtype is None or not jnp.issubdtype(dtype, jnp.integer):
        raise ValueError(f"tokens must be integer ids, got dtype {dtype}.")
    if isinstance(tokens, Tracer):
        return  # traced: the range cannot be checked here
    ids = np.asarray(tokens)
    bad = np.flatnonzero((ids < 0) | (ids >= vocab_size))
    if bad.size:
        b, t = np.unravel_index(bad[0], ids.shape)
        raise ValueError(
            f"token id {ids[b, t]} at [batch {b}, position {t}] is outside the vocabulary "
            f"[0, {vocab_size}); {bad.size} ids are out of range."
        )
