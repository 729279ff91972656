"""Hydra's ConfigStore registrations and the DictConfig → frozen dataclass conversion."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError
from .schema import (
    DistributedConfig,
    ExperimentConfig,
    GradientConfig,
    MeshConfig,
    OptimConfig,
    SolverConfig,
    TrainConfig,
    freeze,
    validate,
)

GROUP_SCHEMAS: dict[str, type] = {
    "optim": OptimConfig,
    "solver": SolverConfig,
    "gradient": GradientConfig,
    "mesh": MeshConfig,
    "distributed": DistributedConfig,
    "train": TrainConfig,
}


def _thawed(schema: type) -> DictConfig:
    """A schema node Hydra can merge into: frozen dataclasses give read-only nodes."""
    node = OmegaConf.structured(schema)

    def thaw(config: DictConfig) -> None:
        OmegaConf.set_readonly(config, False)
        for key in config:
            child = config._get_node(key)
            if isinstance(child, DictConfig):
                thaw(child)

    thaw(node)
    return node


def register_configs() -> None:
    """Register the root schema and every group's schema (`<group>/<name>_schema`)."""
    from ..tasks import TASKS

    store = ConfigStore.instance()
    store.store(name="experiment_schema", node=_thawed(ExperimentConfig))
    for group, schema in GROUP_SCHEMAS.items():
        store.store(group=group, name=f"{group}_schema", node=_thawed(schema))
    for entry in TASKS.values():
        for (group, name), schema in entry.schemas.items():
            store.store(group=group, name=f"{name}_schema", node=_thawed(schema))


def to_experiment_config(config: DictConfig) -> ExperimentConfig:
    """Resolve, convert and validate a composed config; raises `ConfigError` on bad values."""
    from ..tasks import TASKS

    experiment: Any = freeze(OmegaConf.to_object(config))
    if not isinstance(experiment, ExperimentConfig):
        raise ConfigError(
            "config", type(experiment).__name__, "the root config must use experiment_schema"
        )
    if experiment.task not in TASKS:
        raise ConfigError("task", experiment.task, f"choose one of {', '.join(TASKS)}")
    validate(experiment)
    _check_combinations(experiment)
    return experiment


def _check_combinations(config: ExperimentConfig) -> None:
    """Checks that span two sections."""
    gradient, solver = config.gradient, config.solver
    backward_control = gradient.seminorm or gradient.adjoint_rtol or gradient.adjoint_atol
    if gradient.name == "backsolve" and backward_control and not solver.adaptive:
        raise ConfigError(
            "gradient.seminorm",
            gradient.seminorm,
            "the seminorm and adjoint tolerances control adaptive backward steps; "
            "set solver.adaptive=true, or drop them for constant steps",
        )


CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def compose_config(*overrides: str) -> ExperimentConfig:
    """The experiment config that `python -m adjoint_lab <overrides>` would run, for scripts
    and notebooks (Hydra's Compose API over `configs/`; `run_dir` defaults to `outputs/`)."""
    from hydra import compose, initialize_config_dir

    register_configs()
    if not any(o.startswith("run_dir=") for o in overrides):
        overrides = (*overrides, f"run_dir={Path('outputs') / 'composed'}")
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        return to_experiment_config(compose("config", overrides=list(overrides)))
