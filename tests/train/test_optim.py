"""Optimisers and schedules built from config."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from adjoint_lab.config.schema import OptimConfig
from adjoint_lab.train import make_optimizer, make_schedule


def test_warmup_cosine_shape():
    schedule = make_schedule(
        OptimConfig(lr=0.1, schedule="warmup_cosine", warmup_steps=10), total_steps=110
    )
    assert float(schedule(0)) == 0.0
    np.testing.assert_allclose(float(schedule(5)), 0.05)
    np.testing.assert_allclose(float(schedule(10)), 0.1)
    np.testing.assert_allclose(float(schedule(60)), 0.05, rtol=1e-6)  # half-way down the cosine
    assert float(schedule(110)) < 1e-8


def test_step_schedule_decays_at_boundaries():
    schedule = make_schedule(
        OptimConfig(lr=1.0, schedule="step", decay_boundaries=(5, 8), decay_factor=0.5), 10
    )
    assert [float(schedule(s)) for s in (0, 4, 5, 7, 8, 9)] == [1, 1, 0.5, 0.5, 0.25, 0.25]


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_optimizers_descend(name):
    optimizer = make_optimizer(OptimConfig(name=name, lr=0.1, momentum=0.5), total_steps=50)
    params = {"x": jnp.array([3.0, -2.0])}
    state = optimizer.init(params)
    for _ in range(50):
        grads = {"x": 2 * params["x"]}
        updates, state = optimizer.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    assert float(jnp.linalg.norm(params["x"])) < 0.5


def test_clipping_bounds_the_update():
    optimizer = make_optimizer(OptimConfig(name="sgd", lr=1.0, clip_norm=0.1), total_steps=1)
    params = {"x": jnp.zeros(2)}
    updates, _ = optimizer.update({"x": jnp.array([30.0, 40.0])}, optimizer.init(params), params)
    np.testing.assert_allclose(np.asarray(updates["x"]), [-0.06, -0.08], rtol=1e-6)
