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
        ({"method": "adjoint", "chunk": 4}, "chunk= applies only"),
        ({"method": "adjoint", "form": "literal"}, "form='literal'"),
        ({"method": "checkpointed", "chunk": 0}, "chunk= must be a positive int"),
        ({"method": "adjoint", "layout": "layer"}, "go together"),
        ({"method": "adjoint", "layout": "pipeline", "mesh": object()}, "layout='pipeline'"),
    ],
)
def test_bad_options_name_the_argument(tiny, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ssm.value_and_grad(tiny, jnp.zeros((1, 5), jnp.int32), **kwargs)


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
        fn = ssm.gradient_function(config, ssm.GradientOptions(method), context)
        return compiled_memory(fn, weights, tokens).total

    backprop, adjoint = memory("backprop"), memory("adjoint")
    remat, checkpointed = memory("remat"), memory("checkpointed")
    assert adjoint < backprop / 3
    assert checkpointed <= remat < backprop / 10
