"""The `cnode_cnf` experiment: config errors and a short maximum-likelihood run through `fit`."""

from __future__ import annotations

import jax
import pytest

from adjoint_lab.app import compose_config
from adjoint_lab.config import ConfigError
from adjoint_lab.config.schema import TrainConfig
from adjoint_lab.tasks import TASKS
from adjoint_lab.train import fit, make_optimizer


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("model.velocity=resnet", "model.velocity"),
        ("model.horizon=0", "model.horizon"),
        ("data.factor=1.5", "data.factor"),
        ("gradient=adjoint", "gradient.name"),
    ],
)
def test_invalid_values_name_the_field(override, field):
    with pytest.raises(ConfigError) as info:
        config = compose_config("experiment=cnode_cnf", override)
        TASKS[config.task].build(config)
    assert info.value.field == field


@pytest.mark.parametrize("velocity", ["cnode", pytest.param("node", marks=pytest.mark.slow)])
def test_maximum_likelihood_lowers_the_held_out_nll(tmp_path, velocity):
    config = compose_config(
        "experiment=cnode_cnf", f"model.velocity={velocity}", "data.test_size=256", "data.grid=8",
        "optim.lr=1e-2",
    )  # fmt: skip
    task = TASKS[config.task].build(config)
    untrained = task.evaluate(task.init(jax.random.PRNGKey(0)))
    train = TrainConfig(steps=30, batch_size=128, log_every=10, eval_every=30, progress=False)
    result = fit(task, make_optimizer(config.optim, train.steps), train, tmp_path, seed=0)
    assert result.evaluation["test_nll"] < untrained["test_nll"] - 0.1
    assert result.evaluation["nfe"] > 0 and (tmp_path / "density.png").exists()
