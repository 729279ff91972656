"""Composing configs: Hydra's ConfigStore registrations, the DictConfig → frozen dataclass
conversion (checked against the chosen task), and the Compose API for scripts and notebooks."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from ..config.errors import ConfigError
from ..config.schema import (
    GRADIENT_OPTIONS,
    ODE_GRADIENT_SCHEMAS,
    SSM_GRADIENT_SCHEMAS,
    DistributedConfig,
    ExperimentConfig,
    GradientConfig,
    MeshConfig,
    OptimConfig,
    SolverConfig,
    TrainConfig,
    describe_options,
    gradient_for,
    validate,
)
from ..tasks import TASKS

# The yaml tree ships inside the package, so an installed wheel finds it from any directory.
CONFIG_MODULE = "adjoint_lab.configs"
CONFIG_DIR = Path(str(files(CONFIG_MODULE)))

GROUP_SCHEMAS: dict[str, type] = {
    "optim": OptimConfig,
    "solver": SolverConfig,
    "mesh": MeshConfig,
    "distributed": DistributedConfig,
    "train": TrainConfig,
}
# The gradient methods a task takes, by the object it is built with.
_METHODS_OF_NEEDS: dict[str, dict[str, type[GradientConfig]]] = {
    "integrator": ODE_GRADIENT_SCHEMAS,
    "method": SSM_GRADIENT_SCHEMAS,
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
    """Register the root schema and every group option's schema (`<group>/<name>_schema`)."""
    store = ConfigStore.instance()
    store.store(name="experiment_schema", node=_thawed(ExperimentConfig))
    for group, schema in GROUP_SCHEMAS.items():
        store.store(group=group, name=f"{group}_schema", node=_thawed(schema))
    for name, schema in GRADIENT_OPTIONS.items():
        store.store(group="gradient", name=f"{name}_schema", node=_thawed(schema))
    for entry in TASKS.values():
        for (group, name), schema in entry.schemas.items():
            store.store(group=group, name=f"{name}_schema", node=_thawed(schema))


def to_experiment_config(config: DictConfig) -> ExperimentConfig:
    """Resolve, convert and validate a composed config; raises `ConfigError` on bad values.

    The `gradient` section becomes the schema of the task's version of the method (ODE or
    SSM); an option that version does not take is refused.
    """
    _refuse_added_keys(config)
    experiment: Any = _instantiate(config)
    if not isinstance(experiment, ExperimentConfig):
        raise ConfigError(
            "config", type(experiment).__name__, "the root config must use experiment_schema"
        )
    if experiment.task not in TASKS:
        raise ConfigError("task", experiment.task, f"choose one of {', '.join(TASKS)}")
    needs = TASKS[experiment.task].needs
    methods = _METHODS_OF_NEEDS.get(needs) if needs is not None else None
    if methods is not None and isinstance(experiment.gradient, GradientConfig):
        try:
            gradient = gradient_for(experiment.gradient, methods, f"the {experiment.task} task")
        except ConfigError as error:
            raise error.under("gradient") from None
        experiment = dataclasses.replace(experiment, gradient=gradient)
    validate(experiment)
    return experiment


def _instantiate(value: Any) -> Any:
    """A composed node as the frozen dataclasses of its schemas, sequences as tuples.

    Built here rather than by `OmegaConf.to_object`, which passes lists to fields declared
    as tuples: the dataclasses hold what their annotations say from construction on, which
    the type-check hook (`ADJOINT_LAB_TYPECHECK=1`) checks.
    """
    if isinstance(value, DictConfig):
        schema = OmegaConf.get_type(value)
        items = {str(key): _instantiate(value[key]) for key in value}
        if isinstance(schema, type) and dataclasses.is_dataclass(schema):
            return schema(**items)
        return items
    if isinstance(value, ListConfig):
        return tuple(_instantiate(item) for item in value)
    return value


def composition_error(
    error: ConfigCompositionException, overrides: Sequence[str]
) -> ConfigError | None:
    """Hydra's error for an override of a key that a section's schema lacks, as a one-line
    `ConfigError` naming the options the section takes; `None` for any other error."""
    cause = error.__cause__ or error.__context__
    if not isinstance(cause, ConfigKeyError | ConfigAttributeError) or not cause.full_key:
        return None
    schema = cause.object_type
    if not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):
        return None
    field = str(cause.full_key)
    given = {
        override.key_or_group: override.value()
        for override in OverridesParser.create().parse_overrides(list(overrides))
    }
    if field not in given and issubclass(schema, GradientConfig):
        # The key comes from the config files (an experiment's `gradient:` block): what the
        # user chose is the method.
        option = _option_of(schema)
        key = field.rpartition(".")[2]
        return ConfigError(
            "gradient.name",
            option,
            f"gradient={option} {describe_options(schema)}, but the experiment sets {field}; "
            f"choose gradient={', '.join(_takers(key))}",
        )
    return _unknown_option(field, given.get(field), schema)


def _option_of(schema: type) -> str:
    return next((n for n, s in GRADIENT_OPTIONS.items() if s is schema), schema.__name__)


def _takers(key: str) -> list[str]:
    """The gradient options that take `key`."""
    return [n for n, s in GRADIENT_OPTIONS.items() if key in s.options()]


def _unknown_option(field: str, value: object, schema: type) -> ConfigError:
    section, _, key = field.rpartition(".")
    if issubclass(schema, GradientConfig):
        option = _option_of(schema)
        takers = _takers(key)
        elsewhere = f" ({key} is an option of gradient={', '.join(takers)})" if takers else ""
        return ConfigError(field, value, f"gradient={option} {describe_options(schema)}{elsewhere}")
    names = ", ".join(f.name for f in dataclasses.fields(schema))
    return ConfigError(field, value, f"{section or 'the root config'} takes {names}")


def _refuse_added_keys(node: DictConfig, prefix: str = "") -> None:
    """Keys added to a schema node (`+gradient.checkpoints=3`) that its dataclass lacks."""
    schema = OmegaConf.get_type(node)
    if not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):
        schema = None
    names = {f.name for f in dataclasses.fields(schema)} if schema is not None else set()
    for key in node:
        field = f"{prefix}{key}"
        child = node._get_node(key)
        if schema is not None and key not in names:
            raise _unknown_option(field, child._value() if child is not None else None, schema)
        if isinstance(child, DictConfig):
            _refuse_added_keys(child, f"{field}.")


def compose_config(*overrides: str) -> ExperimentConfig:
    """The experiment config that `python -m adjoint_lab <overrides>` would run, for scripts
    and notebooks (Hydra's Compose API over the packaged configs; `run_dir` defaults to
    `outputs/composed`). Raises `ConfigError` for a bad value or an option a section lacks.
    """
    from hydra import compose, initialize_config_module

    register_configs()
    if not any(o.startswith("run_dir=") for o in overrides):
        overrides = (*overrides, f"run_dir={Path('outputs') / 'composed'}")
    with initialize_config_module(version_base="1.3", config_module=CONFIG_MODULE):
        try:
            composed = compose("config", overrides=list(overrides))
        except ConfigCompositionException as error:
            explained = composition_error(error, overrides)
            if explained is None:
                raise
            raise explained from error
    return to_experiment_config(composed)


# The Hydra plugins of the `sweeps` extra, by the `hydra/<group>` option each provides.
_PLUGINS: dict[tuple[str, str], tuple[str, str]] = {
    ("sweeper", "optuna"): ("hydra_plugins.hydra_optuna_sweeper", "hydra-optuna-sweeper"),
    ("launcher", "joblib"): ("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher"),
    ("launcher", "submitit_slurm"): (
        "hydra_plugins.hydra_submitit_launcher",
        "hydra-submitit-launcher",
    ),
    ("launcher", "submitit_local"): (
        "hydra_plugins.hydra_submitit_launcher",
        "hydra-submitit-launcher",
    ),
}


def _hydra_choices(group: str, option: str) -> list[tuple[str, str]]:
    """The `hydra/<group>: <option>` overrides in the defaults list of our config file
    `<group>/<option>.yaml` (e.g. `hparams_search=node_spiral_optuna` picks the Optuna
    sweeper)."""
    path = CONFIG_DIR / group / f"{option}.yaml"
    if not path.is_file():
        return []
    loaded = OmegaConf.load(path)
    defaults = loaded.get("defaults") if isinstance(loaded, DictConfig) else None
    choices = []
    for entry in defaults or []:
        if not isinstance(entry, DictConfig):
            continue
        for key, value in entry.items():
            name = str(key).removeprefix("override ").strip().lstrip("/")
            if name.startswith("hydra/") and isinstance(value, str):
                choices.append((name.removeprefix("hydra/"), value))
    return choices


def missing_plugin(overrides: Sequence[str]) -> str | None:
    """What to install when the command line picks a Hydra launcher or sweeper (directly, as
    `hydra/launcher=joblib`, or through one of our groups, as `cluster=slurm`) whose plugin is
    not installed; `None` when every plugin it picks is there.

    Hydra itself would only say that it cannot find `hydra/sweeper/optuna`."""
    import importlib.util

    for override in OverridesParser.create().parse_overrides(list(overrides)):
        if override.is_sweep_override() or not isinstance(override.value(), str):
            continue
        group, option = override.key_or_group, str(override.value())
        if group.startswith("hydra/"):
            picks = [(group.removeprefix("hydra/"), option)]
        else:
            picks = _hydra_choices(group, option)
        for pick in picks:
            if pick not in _PLUGINS:
                continue
            module, package = _PLUGINS[pick]
            if importlib.util.find_spec(module) is None:
                return (
                    f"{group}={option} uses Hydra's {pick[1]} {pick[0]}, whose plugin "
                    f"{package} is not installed; install the sweeps extra: "
                    "pip install 'adjoint_lab[sweeps]' (or pip install -e \".[sweeps]\" in a "
                    "clone)."
                )
    return None
