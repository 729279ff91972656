"""The C-NODE tasks: configs, a short training run through the `Task`, the crossing map."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from adjoint_lab.app import CONFIG_DIR, register_configs, to_experiment_config
from adjoint_lab.cnode import MODELS
from adjoint_lab.config import ConfigError
from adjoint_lab.config.schema import TrainConfig
from adjoint_lab.tasks import TASKS
from adjoint_lab.train import fit, make_optimizer, read_metrics
from tests.cnode.test_data import write_mnist


@pytest.fixture(scope="module", autouse=True)
def _registered():
    register_configs()


def load(*overrides):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose("config", overrides=["run_dir=unused", *overrides])
    return to_experiment_config(cfg)


@pytest.mark.parametrize("model", list(MODELS))
def test_every_model_composes_on_digits_and_crossing(model):
    config = load("experiment=cnode_digits", f"model={model}")
    assert (config.task, config.model.name) == ("cnode_classification", model)
    assert config.model.param_budget == 10_000 and config.model.width is None
    config = load("experiment=cnode_crossing", f"model={model}")
    assert (config.model.name, config.model.width) == (model, 16)


@pytest.mark.parametrize(
    ("overrides", "field", "hint"),
    [
        (["model=anode", "model.augment=0"], "model.augment", "set model.augment > 0"),
        (["model=ilnode", "model.lift=null"], "model.lift", "set model.lift > 0"),
        (["model.width=null", "model.param_budget=null"], "model.width", "param_budget"),
        (["model.loss=hinge"], "model.loss", "cross_entropy, double_softmax"),
        (["data=mnist", "data.normalize=true"], "data.normalize", "3-channel"),
    ],
)
def test_invalid_model_and_data_values_name_the_field(overrides, field, hint):
    with pytest.raises(ConfigError) as info:
        load("experiment=cnode_digits", *overrides)
    assert info.value.field == field and hint in str(info.value)


def test_missing_image_files_fail_with_the_expected_names(tmp_path):
    config = load("experiment=cnode_digits", "data=svhn", f"data.root={tmp_path}")
    with pytest.raises(ConfigError, match=r"train_32x32\.mat") as info:
        TASKS[config.task].build(config)
    assert info.value.field == "data.root" and str(tmp_path) in str(info.value)


@pytest.mark.optimized  # execution-bound: tests/conftest.py
def test_digits_training_decreases_the_loss(tmp_path):
    config = load(
        "experiment=cnode_digits",
        "model.param_budget=2000",
        "optim.lr=1e-2",
        "optim.schedule=constant",
        "optim.warmup_steps=0",
    )
    task = TASKS[config.task].build(config)
    train = TrainConfig(steps=20, batch_size=32, log_every=1, eval_every=20, progress=False)
    result = fit(task, make_optimizer(config.optim, train.steps), train, tmp_path, seed=0)
    losses = [r["loss"] for r in read_metrics(tmp_path / "metrics.jsonl")]
    assert len(losses) == 20 and np.mean(losses[-4:]) < np.mean(losses[:4]) - 0.3
    evaluation = result.evaluation
    assert {"val_accuracy", "test_accuracy", "val_loss", "test_loss", "nfe"} <= set(evaluation)
    assert evaluation["val_accuracy"] > 0.2 and evaluation["nfe"] >= 6
    assert (tmp_path / "model.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize(("model", "fits"), [("cnode", True), ("node", False)])
def test_cnode_fits_the_crossing_map_and_node_cannot(tmp_path, model, fits):
    config = load("experiment=cnode_crossing", f"model={model}")
    task = TASKS[config.task].build(config)
    result = fit(
        task, make_optimizer(config.optim, config.train.steps), config.train, tmp_path, seed=0
    )
    mse = result.evaluation["mse"]
    if fits:
        assert mse < 1e-3
    else:
        assert mse > 0.99  # no ODE on the line does better than mapping both points to 0
    assert (tmp_path / "trajectories.png").exists()


@pytest.mark.slow
def test_paper_mnist_experiment_runs_on_mnist_files(tmp_path):
    """The paper-sized MNIST setup end to end, on a few images written as IDX files."""
    rng = np.random.default_rng(0)
    data = tmp_path / "mnist"
    data.mkdir()
    for split, count in (("train", 12), ("test", 4)):
        write_mnist(data, split, rng.integers(0, 256, (count, 28, 28)), np.arange(count) % 10)
    # One Euler step: the data pipeline and the paper-sized model are under test here.
    config = load(
        "experiment=cnode_mnist",
        f"data.root={data}",
        "data.val_size=2",
        "solver=euler",
        "solver.adaptive=false",
        "solver.dt0=1.0",
        "gradient=checkpointed",
    )
    task = TASKS[config.task].build(config)
    train = TrainConfig(steps=2, batch_size=4, log_every=1, eval_every=2, progress=False)
    result = fit(task, make_optimizer(config.optim, 2), train, tmp_path / "run", seed=0)
    assert np.isfinite(result.final_loss) and result.evaluation["nfe"] > 0
    assert (
        83_000 <= json.loads((tmp_path / "run" / "model.json").read_text())["parameters"] <= 89_600
    )


def test_without_a_validation_split_evaluation_reports_test_metrics_only(tmp_path):
    # data.val_size=0 (the authors' choice) leaves no validation images: the evaluation
    # must not report NaN val_* metrics or a NaN NFE.
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("test", 3)):
        write_mnist(tmp_path, split, rng.integers(0, 256, (count, 28, 28)), np.arange(count) % 10)
    config = load(
        "experiment=cnode_digits",
        "data=fashion_mnist",
        f"data.root={tmp_path}",
        "data.val_size=0",
        "model.param_budget=null",
        "model.width=4",
        "model.pool=7",
        "solver=euler",
        "solver.adaptive=false",
        "solver.dt0=1.0",
    )
    task = TASKS[config.task].build(config)
    evaluation = task.evaluate(task.init(jax.random.PRNGKey(0)))
    assert set(evaluation) == {"test_accuracy", "test_loss", "nfe"}
    assert evaluation["nfe"] == 1 and np.isfinite(evaluation["test_loss"])
