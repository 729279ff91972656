"""`value_and_grad`: the loss and gradient of `SSMLM` by any of the gradient methods."""

from __future__ import annotations

import functools as ft
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float, Int

from .adjoint import adjoint_value_and_grad
from .autodiff import backprop_loss, remat_loss
from .checkpointed import checkpointed_value_and_grad
from .config import SSMConfig
from .model import SSMLM, Weights

__all__ = [
    "FORMS",
    "LAYOUTS",
    "METHODS",
    "GradientOptions",
    "default_chunk",
    "gradient_function",
    "prepare_tokens",
    "value_and_grad",
]

METHODS = ("backprop", "remat", "adjoint_paper", "adjoint", "truncated", "checkpointed")
FORMS = ("aggregated", "literal")
LAYOUTS = ("layer", "sequence")
_DEFAULT_LOSS_CHUNK = 256


def default_chunk(context: int) -> int:
    """The power of two nearest `sqrt(context)`: it balances boundary and in-chunk memory."""
    return max(1, 2 ** round(math.log2(max(context, 1)) / 2))


@dataclass(frozen=True)
class GradientOptions:
    """A gradient method and its options, checked (see `value_and_grad` for the meaning).

    `chunk` and `loss_chunk` may be `None`: then they follow the context (`default_chunk`,
    and 256 tokens or the whole context for the loss).
    """

    method: str = "adjoint"
    window: int | None = None
    chunk: int | None = None
    form: str = "aggregated"
    loss_chunk: int | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(
                f"method={self.method!r} is not a gradient method; choose one of {METHODS}."
            )
        if self.form not in FORMS:
            raise ValueError(f"form={self.form!r}; choose one of {FORMS}.")
        if self.form == "literal" and self.method not in ("adjoint_paper", "truncated"):
            raise ValueError(
                f"form='literal' (the paper's double sum) applies to method='adjoint_paper' or "
                f"'truncated', not {self.method!r}."
            )
        if self.method == "truncated":
            if self.window is None:
                raise ValueError(
                    "method='truncated' needs window= (the number of tokens each "
                    "adjoint state sees), a positive int."
                )
        elif self.window is not None:
            raise ValueError(f"window= applies only to method='truncated', not {self.method!r}.")
        if self.chunk is not None and self.method not in ("remat", "checkpointed"):
            raise ValueError(
                f"chunk= applies only to method='remat' or 'checkpointed', not {self.method!r}."
            )
        for name in ("window", "chunk", "loss_chunk"):
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 1
            ):
                raise ValueError(f"{name}= must be a positive int, got {value!r}.")

    def time_chunk(self, context: int) -> int:
        """The chunk length that the context is padded to a multiple of."""
        if self.method in ("remat", "checkpointed"):
            return min(self.chunk or default_chunk(context), context)
        return min(self.loss_chunk or _DEFAULT_LOSS_CHUNK, context)


def prepare_tokens(
    tokens: Int[Array, "B T1"],
    multiple: int,
    dtype: Any,
    target_weights: Float[Array, "B T"] | None = None,
) -> tuple[Int[Array, "T B"], Int[Array, "T B"], Float[Array, "T B"], Float[Array, ""]]:
    """Inputs, targets and loss weights, time-major and zero-padded at the end to a multiple
    of `multiple` tokens (the model is causal: padding after the end changes nothing before
    it), and the scale `1 / Σ weights` that makes the loss a (weighted) mean."""
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


def _single_device(config: SSMConfig, options: GradientOptions, context: int):
    eps = config.norm_eps
    chunk = options.time_chunk(context)
    method = options.method
    if method == "backprop":
        return jax.value_and_grad(ft.partial(backprop_loss, eps=eps, loss_chunk=chunk))
    if method == "remat":
        return jax.value_and_grad(ft.partial(remat_loss, eps=eps, chunk=chunk))
    if method == "checkpointed":
        return ft.partial(checkpointed_value_and_grad, eps=eps, chunk=chunk)
    return ft.partial(
        adjoint_value_and_grad,
        eps=eps,
        loss_chunk=chunk,
        exact=method == "adjoint",
        window=options.window,
        literal=options.form == "literal",
    )


@ft.lru_cache(maxsize=64)
def gradient_function(
    config: SSMConfig,
    options: GradientOptions,
    context: int,
    mesh: jax.sharding.Mesh | None = None,
    layout: str | None = None,
) -> Callable[[Weights, Int[Array, "B T1"]], tuple[Float[Array, ""], Weights]]:
    """The jitted pure function `(weights, tokens, target_weights=None) -> (loss, grads)` for
    a context of `context` next-token predictions (`tokens` of shape `[batch, context + 1]`).

    `weights` and `grads` are pure dicts: `nnx.to_pure_dict(nnx.state(model, nnx.Param))`.
    """
    if layout is not None:
        from .layouts import layout_gradient_function

        return layout_gradient_function(config, options, context, mesh, layout)
    inner = _single_device(config, options, context)
    multiple = options.time_chunk(context)

    @jax.jit
    def fn(weights: Weights, tokens: Array, target_weights: Array | None = None):
        dtype = weights["head"].dtype
        return inner(weights, *prepare_tokens(tokens, multiple, dtype, target_weights))

    return fn


def check_tokens(tokens: Any, vocab_size: int) -> None:
    """Shape, dtype and (when the ids are concrete) range of a token batch."""
    shape = getattr(tokens, "shape", None)
    dtype = getattr(tokens, "dtype", None)
    if shape is None or len(shape) != 2 or shape[1] < 2:
        raise ValueError(
            f"tokens must be int ids of shape [batch, T+1] with T >= 1; got shape {shape}."
        )
    if not jnp.issubdtype(dtype, jnp.integer):
        raise ValueError(f"tokens must be integer ids, got dtype {dtype}.")
    if isinstance(tokens, jax.core.Tracer):
        return  # traced: the range cannot be checked here
    ids = np.asarray(tokens)
    bad = np.flatnonzero((ids < 0) | (ids >= vocab_size))
    if bad.size:
        b, t = np.unravel_index(bad[0], ids.shape)
        raise ValueError(
            f"token id {ids[b, t]} at [batch {b}, position {t}] is outside the vocabulary "
            f"[0, {vocab_size}); {bad.size} ids are out of range."
        )


def value_and_grad(
    model: SSMLM,
    tokens: Int[Array, "B T1"],
    method: str = "adjoint",
    *,
    window: int | None = None,
    chunk: int | None = None,
    form: str = "aggregated",
    loss_chunk: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
    layout: str | None = None,
    target_weights: Float[Array, "B T"] | None = None,
) -> tuple[Float[Array, ""], nnx.State]:
    """The mean next-token cross-entropy of `model` on `tokens` and its gradient.

    **Arguments:**

    - `model`: an `SSMLM`.
    - `tokens`: int ids `[batch, T+1]`; the model predicts `tokens[:, 1:]` from
        `tokens[:, :-1]`.
    - `method`: `"backprop"` (jax.grad through the model), `"remat"` (the same with
        per-layer and time-chunk rematerialisation), `"adjoint_paper"` (the paper's
        estimator: exact for one layer, highway-only for more), `"adjoint"` (exact adjoint
        sharding), `"truncated"` (the paper's truncated adjoint, needs `window`),
        `"checkpointed"` (exact, chunk boundary states only).
    - `window`: for `"truncated"`, the number of tokens each adjoint state sees.
    - `chunk`: for `"remat"` and `"checkpointed"`, tokens per chunk (default: the power of
        two nearest `sqrt(T)`). `T` need not be a multiple: the end is padded and masked.
    - `form`: `"aggregated"` (the O(T) adjoint-state form) or `"literal"` (the paper's O(T²)
        double sum), for `"adjoint_paper"` and `"truncated"`.
    - `loss_chunk`: tokens per chunk of the head and loss (default 256).
    - `mesh`, `layout`: run on the devices of `mesh`: `"layer"` partitions the layers over
        its `"layer"` axis; `"sequence"` splits time over its `"sequence"` axis (and the
        batch over `"data"`, if present).
    - `target_weights`: optional weights `[batch, T]` of the next-token losses (e.g. 1 on the
        answer tokens of a synthetic task, 0 elsewhere); the loss is their weighted mean.

    **Returns:**

    `(loss, grads)`, with `grads` of the structure of `nnx.state(model, nnx.Param)`.
    """
    options = GradientOptions(method, window, chunk, form, loss_chunk)
    if layout is not None and layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r}; choose one of {LAYOUTS} (or None for one device).")
    if (layout is None) != (mesh is None):
        raise ValueError("mesh= and layout= go together: give both, or neither for one device.")
    check_tokens(tokens, model.config.vocab_size)
    params = nnx.state(model, nnx.Param)
    fn = gradient_function(model.config, options, tokens.shape[1] - 1, mesh, layout)
    if target_weights is not None and target_weights.shape != (
        tokens.shape[0],
        tokens.shape[1] - 1,
    ):
        raise ValueError(
            f"target_weights has shape {target_weights.shape}; it needs one weight per "
            f"next-token target, shape {(tokens.shape[0], tokens.shape[1] - 1)}."
        )
    loss, grads = fn(nnx.to_pure_dict(params), tokens, target_weights)
    nnx.replace_by_pure_dict(params, grads)
    return loss, params
