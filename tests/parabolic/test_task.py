"""The `parabolic_ngo` experiment: config errors, deterministic batches, training through `fit`."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from adjoint_lab.app import compose_config
from adjoint_lab.config import ConfigError
from adjoint_lab.config.schema import TrainConfig
from adjoint_lab.tasks import TASKS
from adjoint_lab.train import fit, make_optimizer

SMALL = (
    "experiment=parabolic_ngo",
    "data.n_paths=64",
    "data.n_target_paths=256",
    "data.n_steps=20",
    "data.eval_drifts=8",
    "data.eval_paths=1000",
    "model.width=16",
)


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("data.x_high=0.0", "data.x_high"),
        ("data.n_paths=1", "data.n_paths"),
        ("data.c_low=[0.0,0.0]", "data.c_low"),
        ("model.kernel=0", "model.kernel"),
        ("model.init=ones", "model.init"),
    ],
)
def test_invalid_values_name_the_field(override, field):
    with pytest.raises(ConfigError) as info:
        compose_config("experiment=parabolic_ngo", override)
    assert info.value.field == field


def test_batches_depend_only_on_the_step():
    task = TASKS["parabolic_ngo"].build(compose_config(*SMALL))
    first, again, other = task.batch(3), task.batch(3), task.batch(4)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])
    c, phase, x = first
    assert c.shape == (4, 3) and phase.shape == (4,) and x.shape == (4, 4, 2)
    assert np.all((x >= 0.1) & (x <= 0.6))


@pytest.mark.optimized  # execution-bound: tests/conftest.py
def test_training_improves_the_ngo_and_the_baselines_match_the_exact_solution(tmp_path):
    config = compose_config(*SMALL, "optim.warmup_steps=5")
    task = TASKS[config.task].build(config)
    untrained = task.evaluate(task.init(jax.random.PRNGKey(0)))
    train = TrainConfig(steps=40, batch_size=4, log_every=10, eval_every=40, progress=False)
    result = fit(task, make_optimizer(config.optim, train.steps), train, tmp_path, seed=0)
    trained = result.evaluation
    # Girsanov and Euler-Maruyama against the closed form: Monte-Carlo error only.
    assert trained["girsanov_rel_l2"] < 0.05 and trained["euler_maruyama_rel_l2"] < 0.05
    # An untrained operator ignores the drift (weight 1); training must close most of the gap.
    assert trained["ngo_rel_l2"] < 0.5 * untrained["ngo_rel_l2"]
    assert (tmp_path / "ngo_evaluation.md").exists()
