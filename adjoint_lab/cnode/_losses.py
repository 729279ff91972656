"""Classification losses: standard cross-entropy, and the authors' double softmax."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, Int, Scalar

__all__ = ["accuracy", "cross_entropy", "double_softmax_cross_entropy"]


def cross_entropy(logits: Float[Array, "batch classes"], labels: Int[Array, " batch"]) -> Scalar:
    """The mean softmax cross-entropy of integer labels.

    **Arguments:**

    - `logits`: `[batch, classes]`.
    - `labels`: `[batch]` integers in `[0, classes)`.

    **Returns:**

    A scalar.
    """
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def double_softmax_cross_entropy(
    logits: Float[Array, "batch classes"], labels: Int[Array, " batch"]
) -> Scalar:
    """Cross-entropy applied to softmax probabilities, as in the authors' code.

    Their scripts pass `softmax(logits)` to PyTorch's `cross_entropy`, which applies a
    (log-)softmax again. The loss is then bounded and its gradients are small; use it only
    to match the authors' numbers.

    **Arguments:**

    - `logits`: `[batch, classes]`.
    - `labels`: `[batch]` integers in `[0, classes)`.

    **Returns:**

    A scalar.
    """
    return cross_entropy(jax.nn.softmax(logits, axis=-1), labels)


def accuracy(logits: Float[Array, "batch classes"], labels: Int[Array, " batch"]) -> Scalar:
    """The fraction of argmax predictions equal to the labels."""
    return jnp.mean(jnp.argmax(logits, axis=-1) == labels)
