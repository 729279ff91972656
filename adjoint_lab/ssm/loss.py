"""Next-token cross-entropy over chunks of tokens: the `T × V` logits never exist at once.

At long context the head's logits dominate memory (a 16K × 153K float32 logit tensor is
9.6 GB), so the loss is a `lax.scan` over chunks of `chunk` tokens. The autodiff version
rematerialises each chunk's logits in the backward pass; the adjoint version returns, chunk
by chunk, the head cotangent `g_t = ∂L/∂r_K^t` that the adjoint methods start from, with the
gradients of the final norm and the head.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float, Int

from .model import rms_norm

__all__ = ["chunked_loss", "chunked_loss_and_cotangent"]


def _chunk_loss(
    final_norm: Array, head: Array, r: Array, targets: Array, mask: Array, eps: float
) -> Array:
    """The masked sum of cross-entropies of one chunk `[C, B, P]`."""
    logits = rms_norm(r, final_norm, eps) @ head
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return jnp.sum((jax.nn.logsumexp(logits, axis=-1) - picked) * mask)


def _chunks(x: Array, chunk: int) -> Array:
    T = x.shape[0]
    if T % chunk:
        raise ValueError(f"the context {T} is not a multiple of the loss chunk {chunk}")
    return x.reshape(T // chunk, chunk, *x.shape[1:])


def chunked_loss(
    final_norm: Float[Array, " P"],
    head: Float[Array, "P V"],
    r: Float[Array, "T B P"],
    targets: Int[Array, "T B"],
    mask: Float[Array, "T B"],
    eps: float,
    chunk: int,
) -> Float[Array, ""]:
    """The masked sum of next-token cross-entropies, differentiable by autodiff; each chunk's
    logits are recomputed in the backward pass instead of stored."""

    @jax.checkpoint
    def body(total: Array, xs: tuple[Array, Array, Array]) -> tuple[Array, None]:
        return total + _chunk_loss(final_norm, head, *xs, eps), None

    xs = (_chunks(r, chunk), _chunks(targets, chunk), _chunks(mask, chunk))
    return lax.scan(body, jnp.zeros((), jnp.promote_types(r.dtype, jnp.float32)), xs)[0]


def chunked_loss_and_cotangent(
    final_norm: Float[Array, " P"],
    head: Float[Array, "P V"],
    r: Float[Array, "T B P"],
    targets: Int[Array, "T B"],
    mask: Float[Array, "T B"],
    eps: float,
    chunk: int,
    scale: Float[Array, ""] | float,
) -> tuple[Float[Array, ""], Float[Array, "T B P"], Float[Array, " P"], Float[Array, "P V"]]:
    """`L = scale · Σ masked cross-entropy`, with `g = ∂L/∂r` and the gradients of the final
    norm gain and the head, one chunk at a time.

    **Returns:** `(L, g, ∂L/∂final_norm, ∂L/∂head)`.
    """
    grad_chunk = jax.value_and_grad(_chunk_loss, argnums=(0, 1, 2))

    def body(carry: tuple[Array, Array, Array], xs: tuple[Array, Array, Array]):
        total, d_norm, d_head = carry
        value, (dn, dh, g) = grad_chunk(final_norm, head, *xs, eps)
        return (total + value, d_norm + dn, d_head + dh), g

    xs = (_chunks(r, chunk), _chunks(targets, chunk), _chunks(mask, chunk))
    init = (
        jnp.zeros((), jnp.promote_types(r.dtype, jnp.float32)),
        jnp.zeros_like(final_norm),
        jnp.zeros_like(head),
    )
    (total, d_norm, d_head), g = lax.scan(body, init, xs)
    g = g.reshape(r.shape) * jnp.asarray(scale, r.dtype)
    return total * scale, g, d_norm * scale, d_head * scale
