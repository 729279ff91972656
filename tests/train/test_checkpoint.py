"""orbax round trips of equinox and Flax NNX training states."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from adjoint_lab.train import Checkpointer, TrainState


def _assert_same(a, b):
    leaves_a, tree_a = jax.tree_util.tree_flatten(a)
    leaves_b, tree_b = jax.tree_util.tree_flatten(b)
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b, strict=True):
        assert np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _stepped(state: TrainState, optimizer) -> TrainState:
    """One real optimiser step, so moments are non-zero and distinguishable."""
    grads = jax.tree_util.tree_map(lambda p: jnp.ones_like(p) * 0.3, state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    return TrainState(state.step + 1, optax.apply_updates(state.params, updates), opt_state)


def test_equinox_state_round_trips(tmp_path):
    model = eqx.nn.MLP(3, 2, 8, 2, key=jax.random.PRNGKey(0))
    params, static = eqx.partition(model, eqx.is_inexact_array)
    optimizer = optax.adamw(1e-2)
    state = _stepped(TrainState.create(params, optimizer), optimizer)
    checkpointer = Checkpointer(tmp_path, keep=2)
    checkpointer.save(1, state, {"note": "eqx"})
    checkpointer.close()

    blank = TrainState.create(
        eqx.partition(eqx.nn.MLP(3, 2, 8, 2, key=jax.random.PRNGKey(9)), eqx.is_inexact_array)[0],
        optimizer,
    )
    restored, meta = Checkpointer(tmp_path).restore_latest(blank)
    _assert_same(restored, state)
    assert meta == {"note": "eqx", "step": 1}
    # The restored parameters rebuild a working model.
    x = jnp.ones(3)
    np.testing.assert_array_equal(
        eqx.combine(restored.params, static)(x), eqx.combine(state.params, static)(x)
    )


class _Tiny(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.linear = nnx.Linear(4, 3, rngs=rngs)
        self.scale = nnx.Param(jnp.full((3,), 2.0))

    def __call__(self, x):
        return self.linear(x) * self.scale


def test_flax_nnx_state_round_trips(tmp_path):
    model = _Tiny(nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    optimizer = optax.adam(1e-2)
    state = _stepped(TrainState.create(params, optimizer), optimizer)
    checkpointer = Checkpointer(tmp_path)
    checkpointer.save(3, state)
    checkpointer.close()

    _, other = nnx.split(_Tiny(nnx.Rngs(5)), nnx.Param)
    restored, _ = Checkpointer(tmp_path).restore_latest(TrainState.create(other, optimizer))
    _assert_same(restored, state)
    x = jnp.arange(4.0)
    np.testing.assert_array_equal(
        nnx.merge(graphdef, restored.params)(x), nnx.merge(graphdef, state.params)(x)
    )


def test_keeps_only_the_newest(tmp_path):
    state = {"x": jnp.arange(3.0)}
    checkpointer = Checkpointer(tmp_path, keep=2)
    for step in (1, 2, 3, 4):
        checkpointer.save(step, {"x": state["x"] + step})
    checkpointer.close()
    again = Checkpointer(tmp_path)
    assert again.steps() == [3, 4]
    restored, _ = again.restore(3, state)
    np.testing.assert_array_equal(restored["x"], np.arange(3.0) + 3)
