"""Placing a training state on a mesh from its parameters' shardings."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

from adjoint_lab.train.mesh import state_shardings
from adjoint_lab.train.state import TrainState


def test_state_shardings_follow_the_parameters_into_the_optimizer_state():
    mesh = jax.make_mesh((4,), ("layer",), axis_types=(jax.sharding.AxisType.Auto,))
    params = {"layers": {"w": jnp.ones((4, 3))}, "head": jnp.ones((3, 4))}
    state = TrainState.create(params, optax.adam(1e-3))
    split = NamedSharding(mesh, PartitionSpec("layer"))
    shardings = state_shardings(
        state, mesh, {"layers": {"w": split}, "head": NamedSharding(mesh, PartitionSpec())}
    )
    placed = jax.device_put(state, shardings)
    adam = placed.opt_state[0]
    for leaf in (placed.params["layers"]["w"], adam.mu["layers"]["w"], adam.nu["layers"]["w"]):
        assert leaf.sharding.spec == PartitionSpec("layer")
        assert leaf.addressable_shards[0].data.shape == (1, 3)  # one layer per device
    # The head has the same shape transposed: it must not pick up the layer sharding.
    assert adam.mu["head"].sharding.spec == PartitionSpec()
    assert (
        placed.step.sharding.spec == PartitionSpec() and adam.count.sharding.spec == PartitionSpec()
    )
