"""The public API's contract: presets, bad input, and the memory ordering of the methods."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from adjoint_lab import ssm
from adjoint_lab.core import compiled_memory


@pytest.fixture(scope="module")
def tiny():
    return ssm.SSMLM(ssm.preset("ssm-tiny"), rngs=nnx.Rngs(0))


def test_presets_have_the_documented_sizes():
    ref = ssm.preset("ssm-ref")
    assert (ref.vocab_size, ref.width, ref.state_size, ref.num_layers) == (256, 256, 16, 4)
    expected = {
        "ssm-32m": 32e6,
        "ssm-63m": 63e6,
        "ssm-127m": 127e6,
        "ssm-225m": 225e6,
        "ssm-1.27b": 1.27e9,
    }
    for name, size in expected.items():
        assert abs(ssm.count_parameters(ssm.preset(name)) / size - 1) < 0.02, name
    # The count from the shapes equals the model's own parameters.
    config = ssm.preset("ssm-tiny")
    model = ssm.SSMLM(config, rngs=nnx.Rngs(0))
    leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
    assert sum(x.size for x in leaves) == ssm.count_parameters(config)


def test_layer_parameters_carry_the_layer_mesh_axis(tiny):
    specs = nnx.get_partition_spec(nnx.state(tiny, nnx.Param))
    assert specs["layers"]["a_kernel"].get_value() == jax.P("layer", None, None)
    assert specs["embed"].get_value() == jax.P(None, None)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"method": "bptt"}, "choose one of"),
        ({"method": "truncated"}, "needs window="),
        ({"method": "adjoint", "window": 4}, "window= applies only"),
        ({"method": "backprop", "chunk": 4}, "chunk= applies only"),
        ({"method": "adjoint", "form": "literal"}, "form='literal'"),
        ({"method": "checkpointed", "chunk": 0}, "chunk= must be a positive int"),
        ({"method": "adjoint", "layout": "layer"}, "go together"),
        ({"method": "adjoint", "layout": "pipeline", "mesh": object()}, "layout='pipeline'"),
    ],
)
@pytest.mark.untyped("ill-typed arguments on purpose: the hook refuses them first")
def test_bad_options_name_the_argument(tiny, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ssm.value_and_grad(tiny, jnp.zeros((1, 5), jnp.int32), **kwargs)


@pytest.mark.untyped("ill-typed arguments on purpose: the hook refuses them first")
def test_bad_tokens_are_refused_with_their_position(tiny):
    tokens = jnp.zeros((2, 6), jnp.int32).at[1, 4].set(32)
    with pytest.raises(ValueError, match=r"token id 32 at \[batch 1, position 4\]"):
        ssm.value_and_grad(tiny, tokens)
    with pytest.raises(ValueError, match="shape"):
        ssm.value_and_grad(tiny, jnp.zeros((6,), jnp.int32))
    with pytest.raises(ValueError, match="integer"):
        ssm.value_and_grad(tiny, jnp.zeros((1, 6), jnp.float32))


def test_memory_of_the_lean_methods_from_compile_time_analysis():
    config = ssm.SSMConfig(vocab_size=32, width=32, state_size=4, num_layers=2)
    model = nnx.eval_shape(lambda: ssm.SSMLM(config, rngs=nnx.Rngs(0)))
    weights = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    context = 2048
    tokens = jax.ShapeDtypeStruct((1, context + 1), jnp.int32)

    def memory(method):
        fn = ssm.gradient_function(config, ssm.gradient_method(method), context)
        return compiled_memory(fn, weights, tokens).total

    backprop, adjoint = memory("backprop"), memory("adjoint")
    remat, checkpointed = memory("remat"), memory("checkpointed")
    scan_backprop, stored = memory("scan_backprop"), memory(ssm.Adjoint(ssm.StoredStreams()))
    assert adjoint < backprop / 3
    assert checkpointed <= remat < backprop / 10
    # Autodiff through lax.scan keeps a smaller tape than through the associative scan, and
    # the chunkwise adjoint stores no T × P stream.
    assert scan_backprop < backprop
    assert adjoint < stored / 3 < scan_backprop / 3


def test_methods_are_hashable_objects_built_from_names():
    assert ssm.gradient_method("truncated", window=8) == ssm.Truncated(8)
    assert hash(ssm.gradient_method("remat", chunk=4)) == hash(ssm.Remat(chunk=4))
    assert ssm.gradient_method("adjoint_paper", form="literal") == ssm.AdjointPaper("literal")
    assert ssm.gradient_method(ssm.Adjoint()) == ssm.Adjoint(loss_chunk=None)
    assert ssm.gradient_method("adjoint", chunk=4) == ssm.Adjoint(ssm.Chunkwise(4))
    assert ssm.gradient_method("adjoint", schedule="stored_streams") == ssm.Adjoint(
        ssm.StoredStreams()
    )
    assert ssm.Adjoint() == ssm.Adjoint(ssm.Chunkwise())
    assert ssm.METHODS == ("backprop", "remat", "adjoint_paper", "adjoint", "truncated",
                           "checkpointed", "scan_backprop")  # fmt: skip
    assert ssm.Adjoint.supported_layouts() == ("layer", "sequence", "layer_sequence")
    assert ssm.Backprop.supported_layouts() == ("sequence",)
    assert ssm.Checkpointed.supported_layouts() == ()


ILL_TYPED = pytest.mark.untyped("ill-typed arguments on purpose: the hook refuses them first")


@pytest.mark.parametrize(
    "build,message",
    [
        (lambda: ssm.Truncated(0), "Truncated: window= must be a positive int"),
        (lambda: ssm.Remat(chunk=-1), "Remat: chunk= must be a positive int"),
        (lambda: ssm.Backprop(loss_chunk=0), "Backprop: loss_chunk= must be a positive int"),
        (lambda: ssm.AdjointPaper(form="double"), r"form='double'; choose one of"),
        (lambda: ssm.gradient_method("backprop", chunk=4), r"takes loss_chunk=\."),
        (
            lambda: ssm.gradient_method("adjoint", schedule="stored_streams", chunk=4),
            "chunk=4 applies only to schedule='chunkwise'",
        ),
        (lambda: ssm.gradient_method("adjoint", schedule="wavefront"), "choose one of"),
        pytest.param(
            lambda: ssm.Adjoint(schedule="chunkwise"),
            "pass ssm.Chunkwise",
            marks=ILL_TYPED,
        ),
        (lambda: ssm.Chunkwise(chunk=0), "Chunkwise: chunk= must be a positive int"),
        (lambda: ssm.gradient_method("remat", window=4), "method='truncated', not 'remat'"),
        (lambda: ssm.gradient_method(ssm.Adjoint(), loss_chunk=4), "already a method object"),
    ],
)
def test_methods_refuse_bad_options_at_construction(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_a_method_object_takes_no_option_keywords_and_refuses_unsupported_layouts(tiny):
    tokens = jnp.zeros((1, 5), jnp.int32)
    with pytest.raises(ValueError, match=r"set chunk= on it"):
        ssm.value_and_grad(tiny, tokens, ssm.Remat(), chunk=4)
    the_mesh = jax.make_mesh((1,), ("sequence",), axis_types=(jax.sharding.AxisType.Auto,))
    with pytest.raises(ValueError, match="method='remat' has no layout='sequence'.*one device"):
        ssm.value_and_grad(tiny, tokens, ssm.Remat(), mesh=the_mesh, layout="sequence")
    with pytest.raises(ValueError, match="it supports layout='sequence'"):
        ssm.value_and_grad(tiny, tokens, ssm.Backprop(), mesh=the_mesh, layout=ssm.LayerLayout())
