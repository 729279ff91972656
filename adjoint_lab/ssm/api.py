"""`value_and_grad`: the loss and gradient of `SSMLM` by any of the gradient methods."""

from __future__ import annotations

import functools as ft

import jax
from flax import nnx
from jaxtyping import Array, Float, Int

from .config import SSMConfig
from .layouts import AbstractLayout, GradientFn, layout_of
from .methods import FORMS, METHODS, AbstractSSMGradient, gradient_method
from .model import SSMLM, Weights
from .tokens import check_tokens, default_chunk, prepare_tokens

__all__ = [
    "FORMS",
    "LAYOUTS",
    "METHODS",
    "check_tokens",
    "default_chunk",
    "gradient_function",
    "prepare_tokens",
    "value_and_grad",
]

LAYOUTS = ("layer", "sequence", "layer_sequence")


def _named_method(
    method: str,
    window: int | None = None,
    chunk: int | None = None,
    form: str = "aggregated",
    loss_chunk: int | None = None,
) -> AbstractSSMGradient:
    """`value_and_grad`'s string form: the method `method` with its options.

    Options left at their defaults (`None`, `form="aggregated"`) are not passed, so a method
    is never handed an option it does not take.
    """
    given: dict[str, object] = {"window": window, "chunk": chunk, "loss_chunk": loss_chunk}
    options = {k: v for k, v in given.items() if v is not None}
    if form != "aggregated":
        options["form"] = form
    return gradient_method(method, **options)


@ft.lru_cache(maxsize=64)
def gradient_function(
    config: SSMConfig,
    method: AbstractSSMGradient | str,
    context: int,
    mesh: jax.sharding.Mesh | None = None,
    layout: AbstractLayout | str | None = None,
) -> GradientFn:
    """The jitted pure function `(weights, tokens, target_weights=None) -> (loss, grads)` for
    a context of `context` next-token predictions (`tokens` of shape `[batch, context + 1]`).

    **Arguments:**

    - `config`: the model's `SSMConfig`.
    - `method`: an `AbstractSSMGradient` (`ssm.Adjoint()`, ...) or a method's name.
    - `context`: `T`, the number of next-token predictions.
    - `mesh`, `layout`: run on the devices of `mesh` in `layout` (`ssm.LayerLayout()`,
        `ssm.SequenceLayout()`, `ssm.LayerSequenceLayout()` or their names `"layer"`,
        `"sequence"`, `"layer_sequence"`); `None` for one device.

    **Returns:**

    The jitted function; `weights` and `grads` are pure dicts:
    `nnx.to_pure_dict(nnx.state(model, nnx.Param))`.
    """
    method = gradient_method(method)
    if layout is not None:
        if mesh is None:
            raise ValueError(
                f"layout={layout!r} runs on the devices of a mesh: pass mesh= as well, or "
                "layout=None for one device."
            )
        return layout_of(layout).gradient_function(method, config, context, mesh)
    inner = method.value_and_grad_fn(config, context)
    multiple = method.time_chunk(context)

    @jax.jit
    def fn(weights: Weights, tokens: Array, target_weights: Array | None = None):
        dtype = weights["head"].dtype
        return inner(weights, *prepare_tokens(tokens, multiple, dtype, target_weights))

    return fn


def value_and_grad(
    model: SSMLM,
    tokens: Int[Array, "B T1"],
    method: AbstractSSMGradient | str = "adjoint",
    *,
    window: int | None = None,
    chunk: int | None = None,
    form: str = "aggregated",
    loss_chunk: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
    layout: AbstractLayout | str | None = None,
    target_weights: Float[Array, "B T"] | None = None,
) -> tuple[Float[Array, ""], nnx.State]:
    """The mean next-token cross-entropy of `model` on `tokens` and its gradient.

    **Arguments:**

    - `model`: an `SSMLM`.
    - `tokens`: int ids `[batch, T+1]`; the model predicts `tokens[:, 1:]` from
        `tokens[:, :-1]`.
    - `method`: a method object (`ssm.Backprop()`, `ssm.ScanBackprop()`,
        `ssm.Remat(chunk=None)`, `ssm.AdjointPaper(form=...)`,
        `ssm.Adjoint(schedule=ssm.Chunkwise())`, `ssm.Truncated(window)`,
        `ssm.Checkpointed(chunk=None)`), or its name with the options below as keywords:
        `"backprop"` (jax.grad through the model), `"scan_backprop"` (the same with the
        recurrences by `lax.scan`), `"remat"` (the same with
        per-layer and time-chunk rematerialisation), `"adjoint_paper"` (the paper's
        estimator: exact for one layer, highway-only for more), `"adjoint"` (exact adjoint
        sharding), `"truncated"` (the paper's truncated adjoint, needs `window`),
        `"checkpointed"` (exact, chunk boundary states only).
    - `window`: for `"truncated"`, the number of tokens each adjoint state sees.
    - `chunk`: for `"remat"` and `"checkpointed"`, tokens per chunk (default: the power of
        two nearest `sqrt(T)`); for `"adjoint"`, the time chunk of its chunkwise schedule
        (default 64). `T` need not be a multiple: the end is padded and masked.
    - `form`: `"aggregated"` (the O(T) adjoint-state form) or `"literal"` (the paper's O(T²)
        double sum), for `"adjoint_paper"` and `"truncated"`.
    - `loss_chunk`: tokens per chunk of the head and loss (default 256).
    - `mesh`, `layout`: run on the devices of `mesh`: `"layer"` (`ssm.LayerLayout()`)
        partitions the layers over
        its `"layer"` axis; `"sequence"` splits time over its `"sequence"` axis (and the
        batch over `"data"`, if present); `"layer_sequence"` (`adjoint` only) does both on
        a mesh with both axes.
    - `target_weights`: optional weights `[batch, T]` of the next-token losses (e.g. 1 on the
        answer tokens of a synthetic task, 0 elsewhere); the loss is their weighted mean.

    **Returns:**

    `(loss, grads)`, with `grads` of the structure of `nnx.state(model, nnx.Param)`.
    """
    if isinstance(method, AbstractSSMGradient):
        given = {"window": window, "chunk": chunk, "loss_chunk": loss_chunk}
        given = [k for k, v in given.items() if v is not None] + (
            ["form"] if form != "aggregated" else []
        )
        if given:
            raise ValueError(
                f"method={method!r} is a method object: set {', '.join(f'{k}=' for k in given)} "
                f"on it (e.g. ssm.{type(method).__name__}(...)), not on value_and_grad."
            )
    else:
        method = _named_method(method, window, chunk, form, loss_chunk)
    if layout is not None:
        layout = layout_of(layout)
    if (layout is None) != (mesh is None):
        raise ValueError("mesh= and layout= go together: give both, or neither for one device.")
    check_tokens(tokens, model.config.vocab_size)
    params = nnx.state(model, nnx.Param)
    fn = gradient_function(model.config, method, tokens.shape[1] - 1, mesh, layout)
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
