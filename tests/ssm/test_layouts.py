"""The distributed layouts (`layout="layer"`, `"sequence"`) on 4 simulated devices give the
single-device loss and gradients; the layer gradients stay on their devices; errors name the
supported combinations and the mesh's axes."""

from __future__ import annotations

import functools as ft
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

from adjoint_lab import ssm
from adjoint_lab.core import compiled_memory, relative_error

REPO = Path(__file__).resolve().parents[2]
T = 13  # not a multiple of the device count: exercises padding and masking
CONFIG = ssm.SSMConfig(vocab_size=11, width=6, state_size=3, num_layers=4, param_dtype="float64")


def mesh(shape: tuple[int, ...], names: tuple[str, ...]) -> jax.sharding.Mesh:
    devices = jax.devices()[: int(np.prod(shape))]
    return jax.make_mesh(shape, names, axis_types=(AxisType.Auto,) * len(shape), devices=devices)


def tokens_for(config: ssm.SSMConfig) -> jax.Array:
    return jax.random.randint(jax.random.PRNGKey(1), (2, T + 1), 0, config.vocab_size)


@ft.cache
def weights_and_tokens():
    model = ssm.SSMLM(CONFIG, rngs=nnx.Rngs(0))
    return model, nnx.to_pure_dict(nnx.state(model, nnx.Param)), tokens_for(CONFIG)


@ft.cache
def single_device(method: str, window: int | None):
    model, _, tokens = weights_and_tokens()
    loss, grads = ssm.value_and_grad(model, tokens, method, window=window)
    return loss, nnx.to_pure_dict(grads)


# (layout, mesh shape, axis names, method, window, loss chunk): a loss chunk below T gives
# the layer layout's exact wavefront several time chunks to pipeline.
CASES = [
    ("layer", (4,), ("layer",), "adjoint", None, 4),
    ("layer", (2, 2), ("data", "layer"), "adjoint", None, 3),
    ("layer", (2, 2), ("data", "layer"), "adjoint_paper", None, None),
    ("layer", (4,), ("layer",), "truncated", 3, None),
    ("sequence", (4,), ("sequence",), "adjoint", None, None),
    ("sequence", (2, 2), ("data", "sequence"), "adjoint", None, None),
    ("sequence", (4,), ("sequence",), "backprop", None, None),
    # One time chunk per part of time, and three (the wavefront runs on across the parts).
    ("layer_sequence", (2, 2), ("layer", "sequence"), "adjoint", None, None),
    ("layer_sequence", (2, 2), ("sequence", "layer"), "adjoint", None, 2),
    ("layer_sequence", (1, 4), ("layer", "sequence"), "adjoint", None, 2),
]

IDS = [f"{c[0]}-{'x'.join(c[2])}-{c[3]}" for c in CASES]


@pytest.mark.parametrize("layout,shape,names,method,window,loss_chunk", CASES, ids=IDS)
def test_layout_equals_single_device(layout, shape, names, method, window, loss_chunk):
    model, _, tokens = weights_and_tokens()
    # backprop is exact, as is the adjoint (tests/ssm/test_gradients.py): one reference compile.
    ref_loss, ref = single_device("adjoint" if method == "backprop" else method, window)
    the_mesh = mesh(shape, names)
    loss, state = ssm.value_and_grad(
        model, tokens, method, window=window, loss_chunk=loss_chunk, mesh=the_mesh, layout=layout
    )
    grads = nnx.to_pure_dict(state)
    assert jnp.allclose(loss, ref_loss, rtol=1e-13)
    assert jax.tree.structure(grads) == jax.tree.structure(ref)
    assert relative_error(grads, ref) < 1e-10
    stages = the_mesh.shape.get("layer", 1)
    for leaf in jax.tree.leaves(grads["layers"]):
        # layer layout: each device returns only its own layers' gradients (no all-reduce).
        # (A 1-device layer axis shards nothing: its spec may come back as P().)
        split = layout in ("layer", "layer_sequence") and stages > 1
        assert leaf.sharding.spec == (P("layer") if split else P())
        shard_shapes = {s.data.shape[0] for s in leaf.addressable_shards}
        assert shard_shapes == {CONFIG.num_layers // stages}
    for leaf in jax.tree.leaves({k: v for k, v in grads.items() if k != "layers"}):
        assert leaf.sharding.is_fully_replicated


def test_errors_name_the_supported_combinations_and_the_mesh_axes():
    _, weights, tokens = weights_and_tokens()
    layer_mesh = mesh((4,), ("layer",))
    with pytest.raises(ValueError, match="layout='layer': adjoint, adjoint_paper, truncated"):
        ssm.gradient_function(CONFIG, ssm.Checkpointed(), T, layer_mesh, "layer")
    with pytest.raises(ValueError, match=r"mesh's axes are \('layer',\)"):
        ssm.gradient_function(CONFIG, ssm.Adjoint(), T, layer_mesh, "sequence")
    with pytest.raises(ValueError, match="multiple of it"):
        ssm.gradient_function(CONFIG, ssm.Adjoint(), T, mesh((3,), ("layer",)), "layer")
    with pytest.raises(ValueError, match="needs mesh axes 'layer' and 'sequence'"):
        ssm.gradient_function(CONFIG, ssm.Adjoint(), T, layer_mesh, "layer_sequence")
    with pytest.raises(ValueError, match="layout='layer_sequence': adjoint"):
        ssm.gradient_function(
            CONFIG, ssm.Checkpointed(), T, mesh((2, 2), ("layer", "sequence")), "layer_sequence"
        )
    data_mesh = mesh((4, 1), ("data", "sequence"))
    fn = ssm.gradient_function(CONFIG, ssm.Adjoint(), T, data_mesh, "sequence")
    with pytest.raises(ValueError, match="batch 2 is not divisible"):
        fn(weights, tokens)


@pytest.mark.parametrize("num_layers", [1, 2, 3, 4])
def test_layer_sequence_layout_equals_jax_grad_at_every_depth(num_layers):
    """The 2-D layout against jax.grad of the full-logits loss (float64), K = 1..4: two
    stages where K is even, one otherwise; two parts of time, three time chunks each."""
    config = CONFIG.replace(num_layers=num_layers)
    model = ssm.SSMLM(config, rngs=nnx.Rngs(num_layers))
    tokens = tokens_for(config)

    def full_logits_loss(model, tokens):
        logits = model(tokens[:, :-1])
        picked = jnp.take_along_axis(logits, tokens[:, 1:, None], axis=-1)[..., 0]
        return jnp.mean(jax.nn.logsumexp(logits, axis=-1) - picked)

    ref_loss, ref = nnx.value_and_grad(full_logits_loss)(model, tokens)
    stages = 2 if num_layers % 2 == 0 else 1
    the_mesh = mesh((stages, 2), ("layer", "sequence"))
    loss, grads = ssm.value_and_grad(
        model, tokens, ssm.Adjoint(loss_chunk=2), mesh=the_mesh, layout="layer_sequence"
    )
    assert jnp.allclose(loss, ref_loss, rtol=1e-13)
    assert relative_error(nnx.to_pure_dict(grads), nnx.to_pure_dict(ref)) < 1e-10


@pytest.mark.parametrize(
    "layout,shape,loss_chunk",
    [("sequence", (4,), None), ("layer", (4,), 32), ("layer_sequence", (2, 2), 32)],
)
def test_per_device_memory_of_the_layouts(layout, shape, loss_chunk):
    """Compile-time memory only (nothing runs), against the stored-stream adjoint on one
    device (the layouts' own schedules store streams or states the same way). `sequence`:
    each of 4 devices holds a quarter of the stored states and streams. `layer` (exact
    wavefront): each device holds its layer's states and a few chunk buffers, no `T × P`
    stream (8 time chunks here). `layer_sequence`: the same, for half the layers and half
    of time."""
    config = CONFIG.replace(width=32, state_size=8, param_dtype="float32")
    context = 256
    weights = jax.eval_shape(
        lambda: nnx.to_pure_dict(nnx.state(ssm.SSMLM(config, rngs=nnx.Rngs(0)), nnx.Param))
    )
    tokens = jax.ShapeDtypeStruct((1, context + 1), jnp.int32)
    method = ssm.Adjoint(ssm.StoredStreams(), loss_chunk=loss_chunk)
    single = compiled_memory(ssm.gradient_function(config, method, context), weights, tokens)
    names = ("layer", "sequence") if layout == "layer_sequence" else (layout,)
    the_mesh = mesh(shape, names)
    sharded = ssm.gradient_function(config, method, context, the_mesh, layout)
    per_device = compiled_memory(sharded, weights, tokens)
    print(f"single device: {single}\n{layout} layout, per device: {per_device}")
    assert per_device.total < 0.4 * single.total


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    """2 processes × 2 CPU devices (jax.distributed on localhost, gloo collectives) give the
    single-process gradients, for the layer layout (ppermute across processes) and the
    sequence layout on a data × sequence mesh."""
    port = _free_port()
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    env.pop("JAX_NUM_CPU_DEVICES", None)
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.ssm.layouts_worker", str(i), "2", str(port), tmp_path],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [w.communicate(timeout=600) for w in workers]
    for worker, (_out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err[-3000:]
    assert_layouts_match_one_device(tmp_path, ("layer", "sequence"))


def assert_layouts_match_one_device(out_dir: Path, layouts: tuple[str, ...]) -> None:
    """The two processes' `<layout><process>.npz` (tests/ssm/layouts_worker.py) agree with
    each other exactly, and with one process's single-device gradients to 1e-10."""
    _, weights, tokens = weights_and_tokens()
    ref_loss, ref = ssm.gradient_function(CONFIG, ssm.Adjoint(), T)(weights, tokens)
    flat_ref = {
        "/".join(str(getattr(k, "key", k)) for k in path): np.asarray(leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path({"loss": ref_loss, **ref})
    }
    for layout in layouts:
        first, second = (dict(np.load(out_dir / f"{layout}{i}.npz")) for i in range(2))
        assert first.keys() == flat_ref.keys()
        for name in first:
            np.testing.assert_array_equal(first[name], second[name])
        assert relative_error(first, flat_ref) < 1e-10
