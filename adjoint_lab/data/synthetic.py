"""Synthetic long-context tasks for sequence models, generated from a seed (no files).

Both return `(tokens, weights)`: int32 tokens `[batch, length + 1]` and float32 weights
`[batch, length]` of the next-token targets, 1 on the answers and 0 elsewhere, so a model is
scored only where the answer is determined by the context.

- Selective copying (Gu and Dao 2023, Mamba §4.1.1): `num_memorize` data tokens scattered
  among noise (blank) tokens; after a separator, the model must reproduce them in order.
- Associative recall (Ba et al. 2016; Fu et al. 2023, H3): key–value pairs, then one query
  key; the model must answer its value.
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Float, Int

__all__ = ["associative_recall", "selective_copying"]

BLANK, SEPARATOR = 0, 1  # token ids shared by both tasks; data symbols start at 2


def selective_copying(
    rng: np.random.Generator, batch: int, length: int, num_memorize: int, vocab_size: int
) -> tuple[Int[np.ndarray, "batch T1"], Float[np.ndarray, "batch T"]]:
    """`length` context tokens with `num_memorize` data tokens among blanks, a separator,
    then the `num_memorize` data tokens in order (the answers)."""
    if vocab_size < 3 or not 1 <= num_memorize <= length:
        raise ValueError(
            f"selective copying needs vocab_size >= 3 and 1 <= num_memorize <= length; got "
            f"vocab_size={vocab_size}, num_memorize={num_memorize}, length={length}."
        )
    data = rng.integers(2, vocab_size, (batch, num_memorize))
    positions = np.sort(rng.random((batch, length)).argsort(axis=1)[:, :num_memorize], axis=1)
    context = np.full((batch, length), BLANK)
    np.put_along_axis(context, positions, data, axis=1)
    tokens = np.concatenate([context, np.full((batch, 1), SEPARATOR), data], axis=1)
    weights = np.zeros((batch, tokens.shape[1] - 1), np.float32)
    weights[:, length:] = 1.0  # predicting data[j] from the separator and data[:j]
    return tokens.astype(np.int32), weights


def associative_recall(
    rng: np.random.Generator, batch: int, num_pairs: int, vocab_size: int
) -> tuple[Int[np.ndarray, "batch T1"], Float[np.ndarray, "batch T"]]:
    """`num_pairs` key–value pairs (distinct keys), a separator, a queried key and its value.

    Keys use the lower half of the data symbols and values the upper half.
    """
    symbols = vocab_size - 2
    half = symbols // 2
    if half < 1 or num_pairs > half:
        raise ValueError(
            f"associative recall needs num_pairs <= (vocab_size - 2) // 2 distinct keys; got "
            f"num_pairs={num_pairs}, vocab_size={vocab_size}."
        )
    keys = 2 + rng.random((batch, half)).argsort(axis=1)[:, :num_pairs]
    values = 2 + half + rng.integers(0, symbols - half, (batch, num_pairs))
    pairs = np.stack([keys, values], axis=2).reshape(batch, 2 * num_pairs)
    which = rng.integers(0, num_pairs, batch)
    query = keys[np.arange(batch), which][:, None]
    answer = values[np.arange(batch), which][:, None]
    tokens = np.concatenate([pairs, np.full((batch, 1), SEPARATOR), query, answer], axis=1)
    weights = np.zeros((batch, tokens.shape[1] - 1), np.float32)
    weights[:, -1] = 1.0
    return tokens.astype(np.int32), weights
