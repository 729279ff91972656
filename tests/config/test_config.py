"""Config composition (Hydra Compose API), structured-config typing and value validation."""

from __future__ import annotations

import dataclasses

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf.errors import ValidationError

from adjoint_lab.app import CONFIG_DIR, compose_config
from adjoint_lab.config import ConfigError, ExperimentConfig, MeshConfig
from adjoint_lab.train import make_mesh

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))


def load(*overrides: str) -> ExperimentConfig:
    return compose_config("run_dir=unused", *overrides)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_validates(experiment):
    config = load(f"experiment={experiment}")
    assert isinstance(config, ExperimentConfig)
    hash(config)  # frozen all the way down: safe as a static argument to jit


def test_default_is_the_embedded_experiment():
    config = load()
    assert config.task == "node_spiral"
    assert config.gradient.name == "checkpointed"
    assert config.optim.schedule == "warmup_cosine"  # set by experiment/node_spiral.yaml
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 1  # type: ignore[misc]


def test_group_options_and_overrides_compose():
    config = load(
        "gradient=backsolve",
        "gradient.seminorm=true",
        "solver=dopri5",
        "solver.adaptive=true",
        "optim=sgd",
        "mesh.shape=[2]",
    )
    assert (config.gradient.name, config.gradient.seminorm) == ("backsolve", True)
    assert (config.solver.name, config.solver.adaptive) == ("dopri5", True)
    assert config.optim.name == "sgd"
    assert config.mesh.shape == (2,)


@pytest.mark.parametrize(
    ("override", "field", "hint"),
    [
        ("optim.lr=-0.1", "optim.lr", "> 0"),
        ("optim.name=lion", "optim.name", "adam, adamw, sgd"),
        ("optim.schedule=linear", "optim.schedule", "constant, warmup_cosine, step"),
        ("solver.name=rk45", "solver.name", "tsit5"),
        ("gradient.name=magic", "gradient.name", "checkpointed, backsolve, direct"),
        ("gradient.checkpoints=0", "gradient.checkpoints", "> 0"),
        ("train.steps=0", "train.steps", "> 0"),
        ("mesh.shape=[2,2]", "mesh.shape", "one size per axis"),
        ("data.window=1", "data.window", "[2, n_times"),
        ("model.activation=gelu", "model.activation", "tanh"),
        ("task=nonsense", "task", "node_spiral"),
        ("gradient.seminorm=true", "gradient.seminorm", "option of gradient=backsolve"),
        ("optim.lrr=0.1", "optim.lrr", "optim takes name, lr, weight_decay"),
    ],
)
def test_invalid_values_name_the_field_and_the_allowed_values(override, field, hint):
    with pytest.raises(ConfigError) as info:
        load(override)
    assert info.value.field == field
    assert hint in str(info.value)
    assert "\n" not in str(info.value)


def test_backward_step_control_needs_an_adaptive_solver():
    with pytest.raises(ConfigError, match="solver.adaptive=true") as info:
        load("gradient=backsolve", "gradient.seminorm=true")
    assert info.value.field == "gradient.seminorm"
    config = load("gradient=backsolve", "gradient.seminorm=true", "solver.adaptive=true")
    assert config.gradient.seminorm


def test_type_errors_come_from_the_schema():
    with pytest.raises(ConfigCompositionException) as info:
        load("optim.lr=fast")
    assert isinstance(info.value.__cause__, ValidationError)


def test_unknown_option_gets_hydras_error():
    with pytest.raises(MissingConfigException, match="solver"):
        load("solver=rk45")


def test_mesh_larger_than_devices_is_a_config_error():
    with pytest.raises(ConfigError, match=r"needs 8 devices but only 4") as info:
        make_mesh(MeshConfig(axes=("data",), shape=(8,)))
    assert info.value.field == "mesh.shape"
    mesh = make_mesh(MeshConfig(axes=("data", "model"), shape=(-1, 2)))
    assert dict(mesh.shape) == {"data": 2, "model": 2}
