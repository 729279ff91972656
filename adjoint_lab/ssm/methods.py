"""The gradient methods of `SSMLM`, as objects: one abstract base, one small final class each.

A method turns a model config and a context length into the pure function
`(weights, inputs, targets, mask, scale) -> (loss, grads)` on time-major, padded tokens
(`value_and_grad_fn`), and says how much the context is padded (`time_chunk`). A method that
has a multi-device implementation also implements the hook of that layout
(`layer_function`, `sequence_function`); the others refuse it with the layouts they support.

Names become methods only at the API edge: `gradient_method("truncated", window=8)`.
"""

from __future__ import annotations

import abc
import functools as ft
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, cast

import equinox as eqx
import jax
from jax.sharding import Mesh
from jaxtyping import Array, Float, Int

from ..core import sequential_recurrence
from .adjoint import (
    AbstractLayerVJP,
    AggregatedVJP,
    LiteralVJP,
    highway_value_and_grad,
)
from .autodiff import backprop_loss, remat_loss
from .checkpointed import checkpointed_value_and_grad
from .config import SSMConfig
from .layouts import (
    LAYOUTS,
    GradientFn,
    layer_exact_function,
    layer_highway_function,
    layer_sequence_exact_function,
    sequence_backprop_function,
    sequence_exact_function,
)
from .model import Weights
from .schedule import (
    AbstractAdjointSchedule,
    Chunkwise,
    StoredStreams,
    loss_chunk_within,
)
from .tokens import DEFAULT_LOSS_CHUNK, default_chunk

__all__ = [
    "FORMS",
    "METHODS",
    "AbstractSSMGradient",
    "Adjoint",
    "AdjointPaper",
    "Backprop",
    "Checkpointed",
    "Remat",
    "ScanBackprop",
    "Truncated",
    "gradient_method",
]

FORMS = ("aggregated", "literal")

InnerFn = Callable[
    [Weights, Int[Array, "T B"], Int[Array, "T B"], Float[Array, "T B"], Float[Array, ""]],
    tuple[Float[Array, ""], Weights],
]


def _check_positive(owner: str, name: str, value: object, *, optional: bool = True) -> None:
    if value is None and optional:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{owner}: {name}= must be a positive int, got {value!r}.")


def _check_form(owner: str, form: object) -> None:
    if form not in FORMS:
        raise ValueError(
            f"{owner}: form={form!r}; choose one of {FORMS} ('aggregated': the O(T) "
            "adjoint-state form, 'literal': the paper's O(T²) double sum)."
        )


class AbstractSSMGradient(eqx.Module):
    """How the loss of `SSMLM` is differentiated.

    Subclasses are final; they hold their options as fields, validated at construction, and
    implement `value_and_grad_fn`. Every method takes `loss_chunk`: the tokens per chunk of
    the head and the loss (default 256 or the whole context), so the `T × V` logits never
    exist at once. Methods are hashable (`gradient_function` caches on them).
    """

    # Every subclass has a field `loss_chunk: int | None = None` (not an `AbstractVar` here,
    # so that a subclass may put an option without default, `Truncated.window`, first); the
    # declaration for the type checker makes no field.
    name: ClassVar[str]
    if TYPE_CHECKING:
        loss_chunk: int | None

    def __check_init__(self) -> None:
        _check_positive(type(self).__name__, "loss_chunk", self.loss_chunk)

    def time_chunk(self, context: int) -> int:
        """The chunk length that a context of `context` tokens is padded to a multiple of."""
        return min(self.loss_chunk or DEFAULT_LOSS_CHUNK, context)

    @abc.abstractmethod
    def value_and_grad_fn(self, config: SSMConfig, context: int) -> InnerFn:
        """The pure `(weights, inputs, targets, mask, scale) -> (loss, grads)` on one device,
        for time-major tokens padded to a multiple of `time_chunk(context)`."""
        raise NotImplementedError

    # Layout hooks: a method supports a layout by implementing its hook.
    def layer_function(self, config: SSMConfig, context: int, mesh: Mesh) -> GradientFn:
        raise self._unsupported("layer")

    def sequence_function(self, config: SSMConfig, context: int, mesh: Mesh) -> GradientFn:
        raise self._unsupported("sequence")

    def layer_sequence_function(self, config: SSMConfig, context: int, mesh: Mesh) -> GradientFn:
        raise self._unsupported("layer_sequence")

    @classmethod
    def supported_layouts(cls) -> tuple[str, ...]:
        """The names of the device layouts this method implements."""
        hooks = {
            "layer": "layer_function",
            "sequence": "sequence_function",
            "layer_sequence": "layer_sequence_function",
        }
        base = AbstractSSMGradient
        return tuple(n for n in LAYOUTS if getattr(cls, hooks[n]) is not getattr(base, hooks[n]))

    def check_layout(self, layout: str) -> None:
        """Raise an error naming the supported layouts if this method does not run `layout`."""
        if layout not in self.supported_layouts():
            raise self._unsupported(layout)

    def _unsupported(self, layout: str) -> ValueError:
        supported = self.supported_layouts()
        own = (
            f"it supports layout={' or '.join(map(repr, supported))}"
            if supported
            else "it runs on one device only, layout=None"
        )
        return ValueError(
            f"method={self.name!r} has no layout={layout!r} implementation: {own}. The "
            f"supported combinations are {_supported_text()}."
        )


def _supported_text() -> str:
    by_layout = {
        name: sorted(m for m, cls in _BY_NAME.items() if name in cls.supported_layouts())
        for name in LAYOUTS
    }
    return "; ".join(f"layout={k!r}: {', '.join(v)}" for k, v in by_layout.items())


class Backprop(AbstractSSMGradient):
    """`jax.grad` through the model: the reference, and the memory baseline (it keeps the
    forward pass's intermediates). Supports `layout="sequence"`."""

    loss_chunk: int | None = None
    name: ClassVar[str] = "backprop"

    def value_and_grad_fn(self, config, context):
        loss = ft.partial(backprop_loss, eps=config.norm_eps, loss_chunk=self.time_chunk(context))
        return jax.value_and_grad(loss)

    def sequence_function(self, config, context, mesh):
        return sequence_backprop_function(config, context, mesh, self.time_chunk)


class ScanBackprop(AbstractSSMGradient):
    """`jax.grad` through the model with each layer's recurrence by `lax.scan`
    (`core.sequential_recurrence`) instead of `lax.associative_scan`: autodiff through a scan
    keeps one transition and one state per step, not every level of the associative scan's
    tree, so its tape is smaller (depth O(T) instead of O(log T)). The plain-autodiff
    memory reference without rematerialisation."""

    loss_chunk: int | None = None
    name: ClassVar[str] = "scan_backprop"

    def value_and_grad_fn(self, config, context):
        loss = ft.partial(
            backprop_loss,
            eps=config.norm_eps,
            loss_chunk=self.time_chunk(context),
            recurrence=sequential_recurrence,
        )
        return jax.value_and_grad(loss)


class _AbstractChunked(AbstractSSMGradient):
    """A method that cuts time into chunks of `chunk` tokens and keeps only the states at
    chunk boundaries; the loss of a chunk runs over `loss_chunk` tokens at a time."""

    # Subclasses have a field `chunk: int | None = None`.
    if TYPE_CHECKING:
        chunk: int | None

    def __check_init__(self) -> None:
        _check_positive(type(self).__name__, "chunk", self.chunk)

    def time_chunk(self, context: int) -> int:
        return min(self.chunk or default_chunk(context), context)

    def _loss_chunk(self, context: int) -> int:
        owner = f"{type(self).__name__}(chunk={self.chunk})"
        return loss_chunk_within(owner, self.time_chunk(context), self.loss_chunk, context)


class Remat(_AbstractChunked):
    """`jax.grad` with per-layer and time-chunk rematerialisation: the strongest plain-autodiff
    baseline. `chunk`: tokens per chunk (default: the power of two nearest `sqrt(T)`)."""

    chunk: int | None = None
    loss_chunk: int | None = None
    name: ClassVar[str] = "remat"

    def value_and_grad_fn(self, config, context):
        loss = ft.partial(
            remat_loss,
            eps=config.norm_eps,
            chunk=self.time_chunk(context),
            loss_chunk=self._loss_chunk(context),
        )
        return jax.value_and_grad(loss)


class Checkpointed(_AbstractChunked):
    """The exact adjoint with memory sublinear in `T`: only every layer's state at chunk
    boundaries is stored, and each chunk is recomputed in the backward pass. `chunk`: tokens
    per chunk (default: the power of two nearest `sqrt(T)`)."""

    chunk: int | None = None
    loss_chunk: int | None = None
    name: ClassVar[str] = "checkpointed"

    def value_and_grad_fn(self, config, context):
        return ft.partial(
            checkpointed_value_and_grad,
            eps=config.norm_eps,
            chunk=self.time_chunk(context),
            loss_chunk=self._loss_chunk(context),
        )


class Adjoint(AbstractSSMGradient):
    """Exact adjoint sharding: the residual-stream cotangent is handed from layer to layer
    through the stored states (no autodiff tape). Equals `jax.grad`. Supports every layout
    (`"layer"`, `"sequence"`, `"layer_sequence"`).

    `schedule`: how one device walks time (`ssm.schedule`): `Chunkwise(chunk=64)` (the
    default: time chunks both ways, only the states `h` stored, no `T × P` stream) or
    `StoredStreams()` (the whole context at a time, `(a, c, h)` and two streams stored).
    The layouts run their own schedules over time chunks of `loss_chunk` tokens."""

    schedule: AbstractAdjointSchedule = Chunkwise()
    loss_chunk: int | None = None
    name: ClassVar[str] = "adjoint"

    def __check_init__(self) -> None:
        if not isinstance(self.schedule, AbstractAdjointSchedule):
            raise ValueError(
                f"Adjoint: schedule={self.schedule!r}; pass ssm.Chunkwise(chunk=...) or "
                "ssm.StoredStreams() (by name: schedule='chunkwise' or 'stored_streams')."
            )

    def time_chunk(self, context):
        return self.schedule.time_chunk(context, self.loss_chunk)

    def value_and_grad_fn(self, config, context):
        return self.schedule.value_and_grad_fn(config.norm_eps, context, self.loss_chunk)

    def _stream_chunk(self, context: int) -> int:
        # The layouts' time chunk: the loss chunk, as for the stored-stream schedule.
        return min(self.loss_chunk or DEFAULT_LOSS_CHUNK, context)

    def layer_function(self, config, context, mesh):
        return layer_exact_function(config, mesh, self._stream_chunk(context))

    def sequence_function(self, config, context, mesh):
        return sequence_exact_function(config, context, mesh, self._stream_chunk)

    def layer_sequence_function(self, config, context, mesh):
        return layer_sequence_exact_function(config, context, mesh, self._stream_chunk)


class _AbstractHighway(AbstractSSMGradient):
    """The paper's estimator (Proposition 3): every layer sees the head cotangent `g` (the
    residual highway only), so the layers are independent. Exact for one layer; for `K ≥ 2`
    it drops every path through later layers."""

    # Subclasses have a field `form: str = "aggregated"`.
    if TYPE_CHECKING:
        form: str

    def __check_init__(self) -> None:
        _check_form(type(self).__name__, self.form)

    @abc.abstractmethod
    def layer_vjp(self) -> AbstractLayerVJP:
        """Each layer's backward pass."""
        raise NotImplementedError

    def value_and_grad_fn(self, config, context):
        return ft.partial(
            highway_value_and_grad,
            eps=config.norm_eps,
            loss_chunk=self.time_chunk(context),
            layer_vjp=self.layer_vjp(),
        )

    def layer_function(self, config, context, mesh):
        return layer_highway_function(config, mesh, self.time_chunk(context), self.layer_vjp())


def _layer_vjp(form: str, window: int | None) -> AbstractLayerVJP:
    return LiteralVJP(window) if form == "literal" else AggregatedVJP(window)


class AdjointPaper(_AbstractHighway):
    """The paper's estimator with the full adjoint. `form`: `"aggregated"` (the O(T)
    adjoint-state form) or `"literal"` (the paper's O(T²) double sum). Supports
    `layout="layer"`."""

    form: str = "aggregated"
    loss_chunk: int | None = None
    name: ClassVar[str] = "adjoint_paper"

    def layer_vjp(self) -> AbstractLayerVJP:
        return _layer_vjp(self.form, None)


class Truncated(_AbstractHighway):
    """The paper's truncated adjoint (§4.3): the estimator with each adjoint state seeing only
    the `window` outputs from its token on. `form` as for `AdjointPaper`. Supports
    `layout="layer"`."""

    window: int
    form: str = "aggregated"
    loss_chunk: int | None = None
    name: ClassVar[str] = "truncated"

    def __check_init__(self) -> None:
        _check_positive("Truncated", "window", self.window, optional=False)

    def layer_vjp(self) -> AbstractLayerVJP:
        return _layer_vjp(self.form, self.window)


_BY_NAME: dict[str, type[AbstractSSMGradient]] = {
    cls.name: cls
    for cls in (Backprop, Remat, AdjointPaper, Adjoint, Truncated, Checkpointed, ScanBackprop)
}
METHODS: tuple[str, ...] = tuple(_BY_NAME)

# The options of each method (constructor keywords), for the messages of `gradient_method`.
_OPTIONS: dict[str, tuple[str, ...]] = {
    "backprop": ("loss_chunk",),
    "remat": ("chunk", "loss_chunk"),
    "adjoint_paper": ("form", "loss_chunk"),
    "adjoint": ("schedule", "chunk", "loss_chunk"),
    "truncated": ("window", "form", "loss_chunk"),
    "checkpointed": ("chunk", "loss_chunk"),
    "scan_backprop": ("loss_chunk",),
}
# The schedules of `Adjoint` by name (`schedule="stored_streams"`).
SCHEDULES: dict[str, type[AbstractAdjointSchedule]] = {
    "chunkwise": Chunkwise,
    "stored_streams": StoredStreams,
}


def gradient_method(name: str | AbstractSSMGradient, **options: object) -> AbstractSSMGradient:
    """The gradient method named `name` with `options` (an object is returned as it is).

    **Arguments:**

    - `name`: one of `METHODS`: `"backprop"`, `"remat"`, `"adjoint_paper"`, `"adjoint"`,
        `"truncated"`, `"checkpointed"`, `"scan_backprop"`.
    - `options`: the method's options as keywords (`window=`, `chunk=`, `form=`,
        `loss_chunk=`, and for `"adjoint"` `schedule=` by name, `"chunkwise"` (with
        `chunk=`) or `"stored_streams"`); an option the method does not take is an error.

    **Returns:**

    The method object, e.g. `Truncated(window=8)` for `gradient_method("truncated", window=8)`.
    """
    if isinstance(name, AbstractSSMGradient):
        if options:
            raise ValueError(
                f"method={name!r} is already a method object; set its options on it, not as "
                f"{', '.join(f'{k}=' for k in options)}."
            )
        return name
    if name not in METHODS:
        raise ValueError(f"method={name!r} is not a gradient method; choose one of {METHODS}.")
    takes = _OPTIONS[name]
    for option, value in options.items():
        if option not in takes:
            takers = [repr(m) for m, opts in _OPTIONS.items() if option in opts]
            where = f"method={' or '.join(takers)}" if takers else "no method"
            raise ValueError(
                f"{option}= applies only to {where}, not {name!r} (got {option}={value!r}); "
                f"method={name!r} takes {', '.join(f'{o}=' for o in takes)}."
            )
    if name == "truncated" and options.get("window") is None:
        raise ValueError(
            "method='truncated' needs window= (the number of tokens each adjoint state "
            "sees), a positive int."
        )
    # Checked above by name; each method's fields check the values.
    kwargs = cast(dict[str, Any], options)
    if name == "adjoint":
        kwargs = _adjoint_options(**kwargs)
    return _BY_NAME[name](**kwargs)


def _adjoint_options(
    schedule: str | AbstractAdjointSchedule | None = None,
    chunk: int | None = None,
    loss_chunk: int | None = None,
) -> dict[str, Any]:
    """`Adjoint`'s keywords from names: the schedule object from `schedule=` and `chunk=`."""
    if schedule is None or isinstance(schedule, str):
        name = schedule or "chunkwise"
        if name not in SCHEDULES:
            raise ValueError(
                f"method='adjoint': schedule={schedule!r}; choose one of {tuple(SCHEDULES)}."
            )
        if name == "stored_streams" and chunk is not None:
            raise ValueError(
                f"method='adjoint': chunk={chunk} applies only to schedule='chunkwise', not "
                "'stored_streams' (whose time chunk is loss_chunk=)."
            )
        schedule = Chunkwise(chunk) if name == "chunkwise" else StoredStreams()
    elif chunk is not None:
        raise ValueError(
            f"method='adjoint': schedule={schedule!r} is an object; set its chunk on it "
            f"(ssm.Chunkwise(chunk={chunk})), not as chunk=."
        )
    return {"schedule": schedule, "loss_chunk": loss_chunk}
