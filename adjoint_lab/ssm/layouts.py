"""Gradients of `SSMLM` on several devices: layers or time partitioned over a mesh.

Two layouts, each a `jax.shard_map` over the mesh (manual collectives, so that what moves
between devices is exactly what the paper's schedule moves):

- `"layer"` — the paper's distributed adjoint sharding (Xu et al. 2025, §4.4, Alg. 1/4).
  The `K` layers are split over the mesh axis `"layer"` (`K / S` consecutive layers per
  device); a device holds only its layers' parameters and returns only their gradients
  (sharded `P("layer")`, no all-reduce).
  * `adjoint_paper` / `truncated`: the paper's schedule. The evaluation-mode forward pass is
    a pipeline: stage `j` runs its layers on the stream received from stage `j - 1`, keeps
    its `(a, c, h)` and layer inputs and hands `r` on (`lax.ppermute`); the last stage
    computes the loss and the head cotangent `g`, which is broadcast once, and every device
    runs its layers' VJPs independently (the paper's "embarrassingly parallel" backward);
    the embedding receives `g + Σ_k J_RMSNormᵀ ξ_k`, one all-reduce of a `T × P` stream.
  * `adjoint` (exact): the residual-stream cotangent must be handed back stage by stage (the
    paper's multi-layer formula is exact only for one layer: §1.4, §3.1 caveat in
    `papers/adjoint_sharding.md`). Both directions run as a *wavefront over time chunks*
    (GPipe's schedule with time chunks as the micro-batches; the recurrence's carry across
    chunks stays on the device that owns the layer). Forward: at tick `τ` stage `s` runs its
    layers on chunk `τ - s`, stores their `(a, c, h)` and hands the chunk's stream on.
    Backward: at tick `τ` stage `s` runs the exact adjoint of its layers on chunk
    `n - 1 - (τ - (S - 1 - s))` from the carry `a ⊙ μ` of the chunk after it, and hands the
    chunk's input stream (recovered as `r - z`: the residual layer is inverted, not stored)
    and its cotangent `G` back. The last stage's input, the final stream, is rebuilt chunk by
    chunk as embedding + `Σ_k z_k` (one all-reduce of a chunk: each stage adds its layers'
    `z` from its stored `c, h`) and the head gives `g` for that chunk. So no device holds any
    `T × P` stream: each stores its layers' `3N` numbers per token and a few chunk buffers,
    and all stages work at once except in the `S - 1`-tick fill and drain.
- `"sequence"` — time split over the mesh axis `"sequence"` (the batch over `"data"`, if the
  mesh has it). Every layer scans its chunk from a zero state, then each device combines the
  all-gathered `(Π a, h_end)` of the devices before it into its incoming state and fixes its
  states up (`h = h_local + (Π_{τ≤t} a_τ) h_in`): an exclusive scan over devices of `K·B·N`
  numbers per layer. The exact adjoint does the same in reverse for the carry `a ⊙ μ` at the
  chunk's start (`exact_layer_backward`'s `h0` / `mu_end`). Loss and all parameter gradients
  are `psum`s over the sequence and data axes. `backprop` differentiates the same
  forward pass (with its collectives) by `jax.grad`.

- `"layer_sequence"` — both at once on a 2-D mesh (`"layer"` × `"sequence"`), for the exact
  `adjoint`: the layer layout's wavefront over time chunks, with each part of time on its own
  devices. The wavefront runs on through the parts in order (a layer's state at the end of
  part `q - 1` is sent along `"sequence"` the tick before part `q` starts; backwards, the
  carry `a ⊙ μ` goes the other way), so a device stores its layers' states for its part of
  time only: memory divided over all `S · Q` devices, compute pipelined over the `S`
  stages (the parts of time run one after the other, as time chunks do in `"layer"`).

All return the same loss and gradients as the single-device `gradient_function` (up to
rounding: the sums are associated differently).
"""

from __future__ import annotations

import abc
import functools as ft
import math
from collections.abc import Callable
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from jaxtyping import Array, Float, Int

from ..core import adjoint_states, affine_scan
from .adjoint import (
    AbstractLayerVJP,
    Stored,
    embedding_gradient,
    exact_chunk_backward,
    exact_layer_backward,
    highway_layers_backward,
)
from .config import SSMConfig
from .loss import _chunk_loss, _chunks, chunked_loss_and_cotangent
from .model import (
    LAYER_AXIS,
    LayerWeights,
    Weights,
    a_map,
    b_map,
    c_map,
    embed,
    emit,
    layer_forward,
    layer_forward_chunked,
    rms_norm,
)
from .tokens import prepare_tokens

__all__ = [
    "DATA_AXIS",
    "LAYOUTS",
    "SEQUENCE_AXIS",
    "AbstractLayout",
    "LayerLayout",
    "LayerSequenceLayout",
    "SequenceLayout",
    "layer_exact_function",
    "layer_highway_function",
    "layer_sequence_exact_function",
    "layer_shardings",
    "layout_of",
    "sequence_backprop_function",
    "sequence_exact_function",
]

SEQUENCE_AXIS = "sequence"
DATA_AXIS = "data"

GradientFn = Callable[..., tuple[Float[Array, ""], Weights]]


class AbstractLayout(eqx.Module):
    """How the gradient computation is placed on the devices of a mesh.

    A layout checks the mesh and hands the method to the hook of the method that implements
    it (`method.layer_function` or `method.sequence_function`): a method supports a layout
    when it implements its hook.
    """

    name: ClassVar[str]
    axis: ClassVar[str]

    def check(self, config: SSMConfig, mesh: Mesh | None) -> Mesh:
        """The mesh with Auto axes, after checking it has this layout's axis."""
        if mesh is None:
            raise ValueError(f"layout={self.name!r} needs a mesh= with a {self.axis!r} axis.")
        if self.axis not in mesh.axis_names:
            raise ValueError(
                f"layout={self.name!r} needs a mesh axis named {self.axis!r}; the mesh's axes "
                f"are {tuple(mesh.axis_names)} (e.g. jax.make_mesh((4,), ({self.axis!r},), "
                f"axis_types=(jax.sharding.AxisType.Auto,)))."
            )
        if any(t != AxisType.Auto for t in mesh.axis_types):
            # The manual schedule needs no sharding types; with Explicit axes (jax.make_mesh's
            # default) shard_map would insist that the inputs already carry its in_specs.
            axis_types = (AxisType.Auto,) * mesh.devices.ndim
            mesh = Mesh(mesh.devices, mesh.axis_names, axis_types=axis_types)
        return mesh

    @abc.abstractmethod
    def gradient_function(
        self, method: Any, config: SSMConfig, context: int, mesh: Mesh
    ) -> GradientFn:
        """The jitted `(weights, tokens, target_weights=None) -> (loss, grads)` on `mesh`."""
        raise NotImplementedError


def _check_layers(layout: str, config: SSMConfig, mesh: Mesh) -> Mesh:
    stages = mesh.shape[LAYER_AXIS]
    if config.num_layers % stages:
        raise ValueError(
            f"layout={layout!r} splits the {config.num_layers} layers over the mesh's "
            f"{LAYER_AXIS!r} axis of {stages} devices: num_layers must be a multiple of it."
        )
    return mesh


class LayerLayout(AbstractLayout):
    """The `K` layers split over the mesh axis `"layer"` (the paper's distributed adjoint
    sharding); the layer gradients come back sharded `P("layer")`."""

    name: ClassVar[str] = "layer"
    axis: ClassVar[str] = LAYER_AXIS

    def check(self, config: SSMConfig, mesh: Mesh | None) -> Mesh:
        return _check_layers(self.name, config, super().check(config, mesh))

    def gradient_function(self, method, config, context, mesh):
        method.check_layout(self.name)  # before the mesh: which methods run here, first
        return method.layer_function(config, context, self.check(config, mesh))


class SequenceLayout(AbstractLayout):
    """Time split over the mesh axis `"sequence"` (and the batch over `"data"`, if the mesh
    has it); every gradient comes back replicated."""

    name: ClassVar[str] = "sequence"
    axis: ClassVar[str] = SEQUENCE_AXIS

    def gradient_function(self, method, config, context, mesh):
        method.check_layout(self.name)
        return method.sequence_function(config, context, self.check(config, mesh))


class LayerSequenceLayout(AbstractLayout):
    """The layers split over the mesh axis `"layer"` and time over `"sequence"` (a 2-D
    mesh, e.g. 2 × 4): the exact adjoint's wavefront runs on through the parts of time, so
    each device stores its layers' states for its part of time only. The layer gradients
    come back sharded `P("layer")`, the rest replicated."""

    name: ClassVar[str] = "layer_sequence"
    axis: ClassVar[str] = LAYER_AXIS

    def check(self, config: SSMConfig, mesh: Mesh | None) -> Mesh:
        mesh = _check_layers(self.name, config, super().check(config, mesh))
        if SEQUENCE_AXIS not in mesh.axis_names:
            raise ValueError(
                f"layout={self.name!r} needs mesh axes {LAYER_AXIS!r} and {SEQUENCE_AXIS!r}; "
                f"the mesh's axes are {tuple(mesh.axis_names)} (e.g. jax.make_mesh((2, 4), "
                f"({LAYER_AXIS!r}, {SEQUENCE_AXIS!r}), axis_types=(AxisType.Auto,) * 2))."
            )
        return mesh

    def gradient_function(self, method, config, context, mesh):
        method.check_layout(self.name)
        return method.layer_sequence_function(config, context, self.check(config, mesh))


LAYOUTS: dict[str, type[AbstractLayout]] = {
    "layer": LayerLayout,
    "sequence": SequenceLayout,
    "layer_sequence": LayerSequenceLayout,
}


def layout_of(value: str | AbstractLayout) -> AbstractLayout:
    """A layout object from itself or its name (`"layer"`, `"sequence"`,
    `"layer_sequence"`)."""
    if isinstance(value, AbstractLayout):
        return value
    if value not in LAYOUTS:
        raise ValueError(
            f"layout={value!r}; choose one of {tuple(LAYOUTS)} (or None for one device)."
        )
    return LAYOUTS[value]()


def _data_axes(mesh: Mesh) -> tuple[str, ...]:
    return (DATA_AXIS,) if DATA_AXIS in mesh.axis_names else ()


def _check_batch(batch: int, mesh: Mesh) -> None:
    if DATA_AXIS in mesh.axis_names and batch % mesh.shape[DATA_AXIS]:
        raise ValueError(
            f"the batch {batch} is not divisible by the mesh's {DATA_AXIS!r} axis "
            f"({mesh.shape[DATA_AXIS]} devices)."
        )


def _psum(tree: Any, axes: tuple[str, ...]) -> Any:
    return jax.tree.map(lambda x: lax.psum(x, axes), tree) if axes else tree


def _zeros_like_shape(fn: Callable[..., Any], *args: Any) -> Any:
    """Zeros of the shapes and dtypes `fn(*args)` would return (the idle branch of a cond)."""
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(fn, *args))


# --------------------------------------------------------------------------------------
# layout="layer": layers over devices, a pipelined forward, the paper's parallel backward.
# --------------------------------------------------------------------------------------


def _store(layers: LayerWeights, r: Array, eps: float, keep_inputs: bool, chunk: int) -> Stored:
    """`forward_store` of a device's own layers, from the stream it received."""

    def step(r: Array, w: LayerWeights):
        r_next, states = layer_forward_chunked(w, r, None, eps, chunk)
        return r_next, (r if keep_inputs else None, *states)

    r_out, (r_in, a, c, h) = lax.scan(step, r, layers)
    return Stored(r_in, a, c, h, r_out)


def _layer_body(
    weights: Weights,
    inputs: Int[Array, "T B"],
    targets: Int[Array, "T B"],
    mask: Float[Array, "T B"],
    scale: Float[Array, ""],
    *,
    stages: int,
    eps: float,
    chunk: int,
    layer_vjp: AbstractLayerVJP,
    data_axes: tuple[str, ...],
) -> tuple[Float[Array, ""], Weights]:
    """One device's part of the paper's layer layout (inside `shard_map`: `weights["layers"]`
    holds this device's `K / stages` layers): a pipelined forward, one broadcast of `g`, the
    highway estimator's VJPs in parallel."""
    stage = lax.axis_index(LAYER_AXIS)
    layers = weights["layers"]

    # Forward pipeline: at step j only stage j computes (a cond on the stage index), then
    # every stage passes its output stream one stage on (a ring shift, so that the step is one
    # compiled loop body; only stage j's message is used, by stage j + 1). A `fori_loop`
    # rather than an unrolled loop: its carries are updated in place (measured: less memory).
    ring = [(i, (i + 1) % stages) for i in range(stages)]

    def forward_step(j: Array, carry: tuple[Array, Stored]) -> tuple[Array, Stored]:
        stream, stored = carry

        def compute(_):
            return _store(layers, stream, eps, True, chunk)

        stored = lax.cond(stage == j, compute, lambda st: st, stored)
        return lax.ppermute(stored.r_out, LAYER_AXIS, ring), stored

    stream = embed(weights["embed"], inputs)
    stored = _zeros_like_shape(lambda r: _store(layers, r, eps, True, chunk), stream)
    _, stored = lax.fori_loop(0, stages, forward_step, (stream, stored))

    # The loss and g: computed once, by the stage that holds the last layer.
    def head(r: Array):
        return chunked_loss_and_cotangent(
            weights["final_norm"], weights["head"], r, targets, mask, eps, chunk, scale
        )

    loss, g, d_norm, d_head = lax.cond(
        stage == stages - 1, head, lambda r: _zeros_like_shape(head, r), stored.r_out
    )
    # A psum of values that are zero on all but one stage: a broadcast from that stage.
    loss, d_norm, d_head, g = lax.psum((loss, d_norm, d_head, g), LAYER_AXIS)
    d_layers, acc = highway_layers_backward(layers, stored, g, layer_vjp, eps, jnp.zeros_like(g))
    G0 = g + lax.psum(acc, LAYER_AXIS)
    grads = {
        "embed": embedding_gradient(weights, inputs, G0),
        "layers": d_layers,
        "final_norm": d_norm,
        "head": d_head,
    }
    # Over the data axis every device saw other sequences: sum (the layer gradients
    # stay sharded over "layer").
    return _psum((loss, grads), data_axes)


def _layer_at(layers: LayerWeights, i: int | Array) -> LayerWeights:
    return jax.tree.map(lambda x: lax.dynamic_index_in_dim(x, i, keepdims=False), layers)


def _state_before(
    h: Float[Array, "L T B N"], i: Array, start: Array, entering: Float[Array, "L B N"]
) -> Float[Array, "B N"]:
    """Layer `i`'s stored state at time `start - 1`; at `start = 0`, the state `entering`
    this device's part of time (zero before the first token)."""
    last = lax.dynamic_index_in_dim(h[i], jnp.maximum(start - 1, 0), keepdims=False)
    return jnp.where(start == 0, entering[i], last)


def _shift(x: Any, axis: str | None, segments: int, step: int) -> Any:
    """`x` from the device `step` places before along `axis` (zeros where there is none)."""
    if axis is None:
        return jax.tree.map(jnp.zeros_like, x)
    pairs = [(i, i + step) for i in range(segments) if 0 <= i + step < segments]
    return lax.ppermute(x, axis, pairs)


def _layer_exact_body(
    weights: Weights,
    inputs: Int[Array, "T B"],
    targets: Int[Array, "T B"],
    mask: Float[Array, "T B"],
    scale: Float[Array, ""],
    *,
    stages: int,
    eps: float,
    chunk: int,
    data_axes: tuple[str, ...],
    segments: int = 1,
) -> tuple[Float[Array, ""], Weights]:
    """One device's part of the exact adjoint on the layer layout (and on the layer ×
    sequence layout): a wavefront over time chunks (see the module docstring). Inside
    `shard_map`: `weights["layers"]` holds this device's `L = K / stages` layers, and the
    tokens its part of time, the `q`-th of `segments` (1: the whole context).

    Over a `"sequence"` axis the wavefront runs on through the parts of time in order:
    global chunk `q · m + j` is this device's local chunk `j`, stage `s` runs it at forward
    tick `s + q · m + j`, and the layers' states cross from one part to the next with it
    (the last states of part `q - 1` are sent along `"sequence"` the tick before part `q`
    needs them; backwards, the carries `a ⊙ μ` go the other way). Each device then stores
    its layers' states for its own part of time only."""
    stage = lax.axis_index(LAYER_AXIS)
    seq_axis = SEQUENCE_AXIS if segments > 1 else None
    part = lax.axis_index(SEQUENCE_AXIS) if seq_axis else 0
    layers, table = weights["layers"], weights["embed"]
    n_local = jax.tree.leaves(layers)[0].shape[0]
    m = inputs.shape[0] // chunk  # local chunks
    n_chunks = m * segments  # global chunks
    ticks = n_chunks + stages - 1
    take = ft.partial(lax.dynamic_slice_in_dim, slice_size=chunk, axis=0)

    # ---- forward: at tick τ stage s runs its layers on global chunk τ - s, keeps their
    # (a, c, h) and hands the chunk's output stream to stage s + 1.
    stream_shape = jax.eval_shape(lambda t: embed(table, take(t, 0)), inputs)
    stream_zeros = jnp.zeros(stream_shape.shape, stream_shape.dtype)
    state_spec = jax.eval_shape(lambda r: a_map(_layer_at(layers, 0), r), stream_zeros)
    states_zeros = jnp.zeros((n_local, inputs.shape[0], *state_spec.shape[1:]), state_spec.dtype)
    ends_zeros = jnp.zeros((n_local, *state_spec.shape[1:]), state_spec.dtype)
    ring = [(i, (i + 1) % stages) for i in range(stages)]

    def forward_tick(tau: Array, carry):
        received, h_received, entering, states = carry
        j = tau - stage - part * m
        start = (jnp.clip(j, 0, m - 1) * chunk).astype(tau.dtype)
        # At the first local chunk the states enter from the part of time before.
        first = j == 0
        entering = jnp.where(first, h_received, entering)

        def compute(states):
            r = jnp.where(stage == 0, embed(table, take(inputs, start)), received)

            def one_layer(i: Array, carry):
                r, (a_all, c_all, h_all) = carry
                before = _state_before(h_all, i, start, entering)
                r, (a, c, h) = layer_forward(_layer_at(layers, i), r, before, eps)
                at = (i, start, *(jnp.zeros_like(start),) * 2)
                a_all, c_all, h_all = (
                    lax.dynamic_update_slice(x, y[None], at)
                    for x, y in ((a_all, a), (c_all, c), (h_all, h))
                )
                return r, (a_all, c_all, h_all)

            r, states = lax.fori_loop(0, n_local, one_layer, (r, states))
            ends = lax.dynamic_index_in_dim(states[2], start + chunk - 1, 1, keepdims=False)
            return r, ends, states

        valid = (j >= 0) & (j < m)
        idle = lambda st: (stream_zeros, ends_zeros, st)  # noqa: E731
        out, ends, states = lax.cond(valid, compute, idle, states)
        received = lax.ppermute(out, LAYER_AXIS, ring)
        return received, _shift(ends, seq_axis, segments, 1), entering, states

    initial = (stream_zeros, ends_zeros, ends_zeros, (states_zeros,) * 3)
    _, _, entering, (a_all, c_all, h_all) = lax.fori_loop(0, ticks, forward_tick, initial)

    # ---- backward: at tick τ stage s runs its layers' exact adjoint on global chunk
    # n - 1 - (τ - (S - 1 - s)), last layer first, and hands (r, G) of the chunk's input to
    # stage s - 1. The last stage's input is the final stream of chunk n - 1 - τ, rebuilt as
    # embedding + Σ_k z_k (each stage adds its layers' z from the stored c, h: one all-reduce
    # of a chunk over "layer") and its cotangent g from the head: no T × P stream is stored.
    back_ring = [(i, (i - 1) % stages) for i in range(stages)]
    head_grad = jax.value_and_grad(_chunk_loss, argnums=(0, 1, 2))

    def backward_tick(tau: Array, carry):
        r_recv, G_recv, after, after_received, d_layers, d_embed, totals = carry
        j_last = n_chunks - 1 - tau - part * m
        last_start = jnp.clip(j_last, 0, m - 1) * chunk

        def add_output(i: Array, z: Array) -> Array:
            c = lax.dynamic_slice_in_dim(c_all[i], last_start, chunk)
            h = lax.dynamic_slice_in_dim(h_all[i], last_start, chunk)
            return z + emit(_layer_at(layers, i), c, h)

        z = lax.fori_loop(0, n_local, add_output, stream_zeros)
        r_final = embed(table, take(inputs, last_start)) + lax.psum(z, LAYER_AXIS)

        def head(_):
            value, (dn, dh, g) = head_grad(
                weights["final_norm"],
                weights["head"],
                r_final,
                take(targets, last_start),
                take(mask, last_start),
                eps,
            )
            return jax.tree.map(lambda x: x * scale.astype(x.dtype), (value, dn, dh, g))

        head_shapes = jax.eval_shape(head, None)
        value, dn, dh, g = lax.cond(
            (stage == stages - 1) & (j_last >= 0) & (j_last < m),
            head,
            lambda _: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), head_shapes),
            None,
        )
        totals = jax.tree.map(jnp.add, totals, (value, dn, dh))

        j = n_chunks - 1 - (tau - (stages - 1 - stage)) - part * m
        start = jnp.clip(j, 0, m - 1) * chunk
        is_last = stage == stages - 1
        r, G = jnp.where(is_last, r_final, r_recv), jnp.where(is_last, g, G_recv)
        # At the last local chunk the carries come from the part of time after.
        after = jnp.where(j == m - 1, after_received, after)

        def compute(args):
            r, G, after, d_layers, d_embed = args

            def one_layer(k: Array, carry):
                i = n_local - 1 - k
                r, G, after, d_layers = carry
                chunk_of = ft.partial(lax.dynamic_slice_in_dim, start_index=start, slice_size=chunk)
                dw, r, G, after_i = exact_chunk_backward(
                    _layer_at(layers, i),
                    chunk_of(a_all[i]),
                    chunk_of(c_all[i]),
                    chunk_of(h_all[i]),
                    _state_before(h_all, i, start, entering),
                    r,
                    G,
                    after[i],
                    eps=eps,
                )
                d_layers = jax.tree.map(lambda d, x: d.at[i].add(x), d_layers, dw)
                return r, G, after.at[i].set(after_i), d_layers

            r, G, after, d_layers = lax.fori_loop(0, n_local, one_layer, (r, G, after, d_layers))
            # The first stage's G is the embedding's cotangent for this chunk.
            tokens = take(inputs, start).reshape(-1)
            d_embed = jnp.where(
                stage == 0, d_embed.at[tokens].add(G.reshape(-1, G.shape[-1])), d_embed
            )
            return r, G, after, d_layers, d_embed

        valid = (j >= 0) & (j < m)
        args = (r, G, after, d_layers, d_embed)
        r, G, after, d_layers, d_embed = lax.cond(valid, compute, lambda x: x, args)
        r, G = lax.ppermute((r, G), LAYER_AXIS, back_ring)
        after_received = _shift(after, seq_axis, segments, -1)
        return r, G, after, after_received, d_layers, d_embed, totals

    totals = (
        jnp.zeros((), jnp.promote_types(table.dtype, jnp.float32)),
        jnp.zeros_like(weights["final_norm"]),
        jnp.zeros_like(weights["head"]),
    )
    carry = (
        stream_zeros,
        stream_zeros,
        ends_zeros,
        ends_zeros,
        jax.tree.map(jnp.zeros_like, layers),
        jnp.zeros_like(table),
        totals,
    )
    _, _, _, _, d_layers, d_embed, (loss, d_norm, d_head) = lax.fori_loop(
        0, ticks, backward_tick, carry
    )
    # Each of these is nonzero on one stage only (per part of time): the psum over "layer"
    # is a broadcast from it, the one over "sequence" adds the parts of time.
    time_axes = (SEQUENCE_AXIS,) if seq_axis else ()
    loss, d_norm, d_head, d_embed = lax.psum(
        (loss, d_norm, d_head, d_embed), (LAYER_AXIS, *time_axes)
    )
    d_layers = _psum(d_layers, time_axes)
    grads = {"embed": d_embed, "layers": d_layers, "final_norm": d_norm, "head": d_head}
    return _psum((loss, grads), data_axes)


def _layer_function(
    config: SSMConfig, mesh: Mesh, chunk: int, body: Callable, segments: int = 1
) -> GradientFn:
    data_axes = _data_axes(mesh)
    time_spec = SEQUENCE_AXIS if segments > 1 else None
    tokens_spec = P(time_spec, *data_axes)
    weights_spec = {"embed": P(), "layers": P(LAYER_AXIS), "final_norm": P(), "head": P()}
    kwargs = {
        "stages": mesh.shape[LAYER_AXIS],
        "eps": config.norm_eps,
        "chunk": chunk,
        "data_axes": data_axes,
    }
    if segments > 1:
        kwargs["segments"] = segments
    sharded = jax.shard_map(
        ft.partial(body, **kwargs),
        mesh=mesh,
        in_specs=(weights_spec, tokens_spec, tokens_spec, tokens_spec, P()),
        out_specs=(P(), weights_spec),
        check_vma=False,  # a manual schedule: conds on the stage index, masked broadcasts
    )

    @jax.jit
    def fn(weights: Weights, tokens: Array, target_weights: Array | None = None):
        _check_batch(tokens.shape[0], mesh)
        dtype = weights["head"].dtype
        return sharded(weights, *prepare_tokens(tokens, chunk * segments, dtype, target_weights))

    return fn


def layer_highway_function(
    config: SSMConfig, mesh: Mesh, chunk: int, layer_vjp: AbstractLayerVJP
) -> GradientFn:
    """The paper's estimator on the layer layout (a checked `LayerLayout` mesh): a pipelined
    forward, one broadcast of `g`, every device's VJPs in parallel; `chunk` is the loss
    chunk."""
    return _layer_function(config, mesh, chunk, ft.partial(_layer_body, layer_vjp=layer_vjp))


def layer_exact_function(config: SSMConfig, mesh: Mesh, chunk: int) -> GradientFn:
    """The exact adjoint on the layer layout: a wavefront over time chunks of `chunk`."""
    return _layer_function(config, mesh, chunk, _layer_exact_body)


def layer_sequence_exact_function(
    config: SSMConfig, context: int, mesh: Mesh, time_chunk: Callable[[int], int]
) -> GradientFn:
    """The exact adjoint on the layer × sequence layout (a checked `LayerSequenceLayout`
    mesh): the layer layout's wavefront, run on through the parts of time of the
    `"sequence"` axis; `time_chunk(local_context)` gives the time chunk."""
    segments = mesh.shape[SEQUENCE_AXIS]
    chunk = time_chunk(math.ceil(context / segments))
    return _layer_function(config, mesh, chunk, _layer_exact_body, segments)


# --------------------------------------------------------------------------------------
# layout="sequence": time over devices, boundary states combined across devices.
# --------------------------------------------------------------------------------------


def _exclusive_combine(
    a_total: Float[Array, "B N"], carry: Float[Array, "B N"], *, reverse: bool
) -> Float[Array, "B N"]:
    """The state entering this device from the others along `"sequence"`.

    Forward (`reverse=False`): `h_in[s] = a_total[s-1] ⊙ h_in[s-1] + h_end[s-1]`, `h_in[0] = 0`,
    from every device's product of transitions and end state (zero-started scan). Reverse: the
    adjoint carry `m[s] = a_total[s+1] ⊙ m[s+1] + (a_1 ⊙ μ_1)[s+1]`, `m[S-1] = 0`. Only
    `2 × B × N` numbers per device are gathered.
    """
    a_all = lax.all_gather(a_total, SEQUENCE_AXIS)
    c_all = lax.all_gather(carry, SEQUENCE_AXIS)

    def step(h: Array, xs: tuple[Array, Array]) -> tuple[Array, Array]:
        a, c = xs
        return a * h + c, h  # emit the state before this device's contribution

    _, entering = lax.scan(step, jnp.zeros_like(carry), (a_all, c_all), reverse=reverse)
    return entering[lax.axis_index(SEQUENCE_AXIS)]


def _sequence_layer_forward(
    w: LayerWeights, r: Float[Array, "T B P"], eps: float
) -> tuple[Float[Array, "T B P"], tuple[Array, ...]]:
    """One layer on this device's chunk of time: `(r + z, (a, c, h, h_in, Π a))`."""
    x = rms_norm(r, w["norm"], eps)
    a = a_map(w, x)
    # One scan gives the local states from zero and the cumulative transitions Π_{τ≤t} a_τ.
    a_cum, h_local = affine_scan(a, b_map(w, x))
    h_in = _exclusive_combine(a_cum[-1], h_local[-1], reverse=False)
    h = h_local + a_cum * h_in[None]
    c = c_map(w, x)
    return r + emit(w, c, h), (a, c, h, h_in, a_cum[-1])


def _sequence_adjoint_body(
    weights: Weights,
    inputs: Int[Array, "T B"],
    targets: Int[Array, "T B"],
    mask: Float[Array, "T B"],
    scale: Float[Array, ""],
    *,
    eps: float,
    chunk: int,
    reduce_axes: tuple[str, ...],
) -> tuple[Float[Array, ""], Weights]:
    """The exact adjoint on one device's chunk of time (inside `shard_map`)."""
    layers = weights["layers"]

    def forward(r: Array, w: LayerWeights):
        return _sequence_layer_forward(w, r, eps)

    r_out, (a, c, h, h_in, a_total) = lax.scan(forward, embed(weights["embed"], inputs), layers)
    loss, g, d_norm, d_head = chunked_loss_and_cotangent(
        weights["final_norm"], weights["head"], r_out, targets, mask, eps, chunk, scale
    )

    def backward(carry: tuple[Array, Array], xs):
        r, G = carry
        w, a, c, h, h_in, a_total = xs
        # The adjoint carry from later devices: the local a_1 ⊙ μ_1 (μ from a zero end),
        # combined in reverse over devices. exact_layer_backward then redoes μ with it.
        mu_local = adjoint_states(a, (G @ w["out_kernel"].T) * c)
        mu_end = _exclusive_combine(a_total, a[0] * mu_local[0], reverse=True)
        dw, r, G, _ = exact_layer_backward(
            w, a, c, h, r, G, eps=eps, chunk=chunk, h0=h_in, mu_end=mu_end
        )
        return (r, G), dw

    xs = (layers, a, c, h, h_in, a_total)
    (_, G0), d_layers = lax.scan(backward, (r_out, g), xs, reverse=True)
    grads = {
        "embed": embedding_gradient(weights, inputs, G0),
        "layers": d_layers,
        "final_norm": d_norm,
        "head": d_head,
    }
    return _psum((loss, grads), reduce_axes)


def _sequence_loss(
    weights: Weights,
    inputs: Int[Array, "T B"],
    targets: Int[Array, "T B"],
    mask: Float[Array, "T B"],
    scale: Float[Array, ""],
    *,
    eps: float,
    chunk: int,
    reduce_axes: tuple[str, ...],
) -> Float[Array, ""]:
    """The mean loss from this device's chunk of time, summed over devices (for `jax.grad`)."""

    def forward(r: Array, w: LayerWeights):
        return _sequence_layer_forward(w, r, eps)[0], None

    r = lax.scan(forward, embed(weights["embed"], inputs), weights["layers"])[0]

    # As `loss.chunked_loss`, by a carry-free map: a zero carry would not vary over devices.
    @jax.checkpoint
    def one_chunk(xs: tuple[Array, Array, Array]) -> Array:
        return _chunk_loss(weights["final_norm"], weights["head"], *xs, eps)

    losses = lax.map(one_chunk, (_chunks(r, chunk), _chunks(targets, chunk), _chunks(mask, chunk)))
    return lax.psum(scale * jnp.sum(losses), reduce_axes)


def _sequence_setup(config: SSMConfig, context: int, mesh: Mesh, time_chunk: Callable):
    """The loss chunk of each device's part of time, the shard_map's input specs and the
    body's keyword arguments."""
    data_axes = _data_axes(mesh)
    # Each device gets T / devices tokens, a multiple of the loss chunk: pad the end (masked).
    chunk = time_chunk(math.ceil(context / mesh.shape[SEQUENCE_AXIS]))
    tokens_spec = P(SEQUENCE_AXIS, *data_axes)
    in_specs = (P(), tokens_spec, tokens_spec, tokens_spec, P())
    kwargs = {"eps": config.norm_eps, "chunk": chunk, "reduce_axes": (SEQUENCE_AXIS, *data_axes)}
    return chunk, in_specs, kwargs


def _sequence_jit(sharded: Callable, mesh: Mesh, chunk: int) -> GradientFn:
    multiple = mesh.shape[SEQUENCE_AXIS] * chunk

    @jax.jit
    def fn(weights: Weights, tokens: Array, target_weights: Array | None = None):
        _check_batch(tokens.shape[0], mesh)
        dtype = weights["head"].dtype
        return sharded(weights, *prepare_tokens(tokens, multiple, dtype, target_weights))

    return fn


def sequence_exact_function(
    config: SSMConfig, context: int, mesh: Mesh, time_chunk: Callable[[int], int]
) -> GradientFn:
    """The exact adjoint on the sequence layout (a checked `SequenceLayout` mesh);
    `time_chunk(local_context)` gives the loss chunk of each device's part of time."""
    chunk, in_specs, kwargs = _sequence_setup(config, context, mesh, time_chunk)
    sharded = jax.shard_map(
        ft.partial(_sequence_adjoint_body, **kwargs),
        mesh=mesh,
        in_specs=in_specs,
        out_specs=(P(), P()),
        check_vma=False,  # psum'd outputs; no autodiff through this shard_map
    )
    return _sequence_jit(sharded, mesh, chunk)


def sequence_backprop_function(
    config: SSMConfig, context: int, mesh: Mesh, time_chunk: Callable[[int], int]
) -> GradientFn:
    """`jax.grad` through the sequence layout's forward pass (with its collectives)."""
    chunk, in_specs, kwargs = _sequence_setup(config, context, mesh, time_chunk)
    # Autodiff through shard_map: the varying-axes check makes the transposes of the
    # collectives (all_gather -> psum_scatter, replicated weights -> psum) correct.
    sharded = jax.value_and_grad(
        jax.shard_map(
            ft.partial(_sequence_loss, **kwargs),
            mesh=mesh,
            in_specs=in_specs,
            out_specs=P(),
            check_vma=True,
        )
    )
    return _sequence_jit(sharded, mesh, chunk)


def layer_shardings(mesh: Mesh, weights: Weights) -> Weights:
    """`NamedSharding`s that place `weights` as `layout="layer"` holds them: the stacked layer
    parameters split over `"layer"`, the rest replicated (for `jax.device_put`)."""
    split, whole = NamedSharding(mesh, P(LAYER_AXIS)), NamedSharding(mesh, P())
    return {
        name: jax.tree.map(lambda _, s=split if name == "layers" else whole: s, value)
        for name, value in weights.items()
    }
