"""The `gradient` group: one schema per method, and options a method does not take refused."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from adjoint_lab.app import CONFIG_DIR, compose_config
from adjoint_lab.config import (
    AdjointConfig,
    AdjointPaperConfig,
    BackpropConfig,
    BacksolveConfig,
    CheckpointedConfig,
    ConfigError,
    DirectConfig,
    ExperimentConfig,
    RematConfig,
    ScanBackpropConfig,
    SSMCheckpointedConfig,
    TruncatedConfig,
)
from adjoint_lab.config.schema import GRADIENT_OPTIONS

ODE = {"checkpointed": CheckpointedConfig, "backsolve": BacksolveConfig, "direct": DirectConfig}
SSM = {
    "backprop": BackpropConfig,
    "remat": RematConfig,
    "adjoint_paper": AdjointPaperConfig,
    "adjoint": AdjointConfig,
    "truncated": TruncatedConfig,
    "checkpointed": SSMCheckpointedConfig,
    "scan_backprop": ScanBackpropConfig,
}


def load(*overrides: str) -> ExperimentConfig:
    return compose_config("run_dir=unused", *overrides)


@pytest.mark.parametrize(("name", "schema"), ODE.items())
def test_an_ode_task_gets_the_ode_schema_of_the_method(name, schema):
    assert type(load(f"gradient={name}").gradient) is schema


@pytest.mark.parametrize(("name", "schema"), SSM.items())
def test_the_ssm_task_gets_the_ssm_schema_of_the_method(name, schema):
    assert type(load("experiment=ssm_lm", f"gradient={name}").gradient) is schema


def test_checkpointed_takes_each_familys_own_options():
    ode = load("gradient=checkpointed", "gradient.checkpoints=3", "gradient.max_steps=64")
    assert ode.gradient == CheckpointedConfig(checkpoints=3, max_steps=64)
    ssm = load("experiment=ssm_lm", "gradient=checkpointed", "gradient.chunk=8")
    assert ssm.gradient == SSMCheckpointedConfig(chunk=8)


@pytest.mark.parametrize(
    ("overrides", "field", "takes"),
    [
        (("gradient=checkpointed", "gradient.chunk=8"), "gradient.chunk", "checkpoints, max_steps"),
        (
            ("experiment=ssm_lm", "gradient=adjoint", "gradient.checkpoints=3"),
            "gradient.checkpoints",
            "gradient=adjoint takes loss_chunk",
        ),
        (
            ("experiment=ssm_lm", "gradient=adjoint", "+gradient.checkpoints=3"),
            "gradient.checkpoints",
            "gradient=adjoint takes loss_chunk",
        ),
        (
            ("experiment=ssm_lm", "gradient=checkpointed", "gradient.checkpoints=3"),
            "gradient.checkpoints",
            "gradient=checkpointed takes chunk, loss_chunk",
        ),
        (
            ("gradient=backsolve", "gradient.window=4"),
            "gradient.window",
            "takes seminorm, adjoint_rtol, adjoint_atol, max_steps",
        ),
        (
            ("experiment=ssm_lm", "gradient=remat", "gradient.form=literal"),
            "gradient.form",
            "gradient=remat takes chunk, loss_chunk",
        ),
    ],
)
def test_an_option_the_method_does_not_take_is_one_line_naming_what_it_takes(
    overrides, field, takes
):
    with pytest.raises(ConfigError) as info:
        load(*overrides)
    assert info.value.field == field
    assert takes in str(info.value)
    assert "\n" not in str(info.value)


def test_a_method_of_the_other_family_is_refused_with_the_tasks_methods():
    with pytest.raises(ConfigError, match="checkpointed, backsolve, direct") as info:
        load("gradient=adjoint")
    assert info.value.field == "gradient.name"
    with pytest.raises(ConfigError, match="backprop, remat, adjoint_paper") as info:
        load("experiment=ssm_lm", "gradient=direct")
    assert info.value.field == "gradient.name"


@pytest.mark.parametrize("name", sorted(GRADIENT_OPTIONS))
def test_each_option_file_lists_exactly_its_schemas_options(name):
    listed = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "gradient" / f"{name}.yaml"))
    assert listed.pop("defaults") == [f"{name}_schema", "_self_"]
    assert listed.pop("name") == name
    assert tuple(listed) == GRADIENT_OPTIONS[name].options()


def test_every_option_file_has_a_schema():
    files = {path.stem for path in (CONFIG_DIR / "gradient").glob("*.yaml")}
    assert files == set(GRADIENT_OPTIONS)


def test_a_method_lacking_an_option_the_experiment_sets_names_the_method():
    # experiment/cnode_cnf.yaml sets gradient.max_steps, which no SSM method takes.
    with pytest.raises(ConfigError, match="checkpointed, backsolve, direct") as info:
        load("experiment=cnode_cnf", "gradient=adjoint")
    assert info.value.field == "gradient.name"
    assert "gradient.max_steps" in str(info.value)


@pytest.mark.parametrize(
    ("overrides", "gradient", "solver"),
    [
        (("gradient=reversible", "gradient.coupling=0.5"), "ReversibleAdjoint", "Reversible"),
        (
            ("gradient=reversible", "solver=heun", "gradient.reversible_heun=true"),
            "ReversibleAdjoint",
            "ReversibleHeun",
        ),
        (("gradient=interpolating", "gradient.max_steps=128"), "InterpolatingAdjoint", "Tsit5"),
        (("gradient=interpolating", "gradient.checkpoints=4"), "InterpolatingAdjoint", "Tsit5"),
        (("gradient=quadrature", "gradient.nodes=5"), "QuadratureAdjoint", "Tsit5"),
        (("gradient=gauss", "gradient.nodes=2"), "GaussAdjoint", "Tsit5"),
        (("gradient=direct", "gradient.max_steps=96"), "DirectBackprop", "Tsit5"),
        (("gradient=checkpointed", "gradient.checkpoints=3"), "CheckpointedBackprop", "Tsit5"),
    ],
)
def test_the_ode_gradient_methods_are_chosen_from_config(overrides, gradient, solver):
    from adjoint_lab.config.build import build_integrator

    config = load(*overrides)
    integrator = build_integrator(config.solver, config.gradient)
    assert type(integrator.gradient).__name__ == gradient
    assert type(integrator.solver).__name__ == solver
    if solver == "Reversible":
        assert integrator.solver.coupling == 0.5
    for option in ("checkpoints", "nodes", "max_steps"):
        given = [o for o in overrides if o.startswith(f"gradient.{option}=")]
        if given:
            assert getattr(integrator.gradient, option) == int(given[0].split("=")[1])


@pytest.mark.parametrize(
    ("logger", "trackers"),
    [
        ((), ()),
        (("logger=tensorboard",), ("TensorBoardTracker",)),
        (
            ("logger=[tensorboard,mlflow]", "logger.mlflow.experiment=sweep"),
            ("TensorBoardTracker", "MLflowTracker"),
        ),
    ],
)
def test_the_logger_group_builds_its_trackers(logger, trackers):
    from adjoint_lab.app import build_trackers

    built = build_trackers(load(*logger).logger)
    assert tuple(type(t).__name__ for t in built) == trackers
    if "MLflowTracker" in trackers:
        assert built[-1].experiment == "sweep"
