"""The run's objects from its validated config: the one place a task gets what it is built with.

Solver and gradient sections become a `core.Integrator` (through `config.build`, the ODE
config boundary, which the task builders also fall back to), and the SSM section becomes an
`ssm` gradient method; the task's builder then takes the object its `TASKS` entry `needs`.
"""

from __future__ import annotations

from .. import ssm
from ..config.build import build_integrator
from ..config.errors import ConfigError
from ..config.schema import ExperimentConfig, GradientConfig, LoggerConfig
from ..tasks import TASKS
from ..train.task import Task
from ..train.trackers import AbstractTracker, MLflowTracker, TensorBoardTracker


def build_task(config: ExperimentConfig) -> Task:
    """The configured task, built with the object its `TASKS` entry needs.

    **Arguments:**

    - `config`: a validated experiment (`to_experiment_config`, `compose_config`).

    **Returns:**

    The `train.Task` of `config.task`.
    """
    entry = TASKS[config.task]
    if entry.needs == "integrator":
        return entry.build(config, integrator=build_integrator(config.solver, config.gradient))
    if entry.needs == "method":
        return entry.build(config, method=build_ssm_method(config.gradient))
    return entry.build(config)


def build_ssm_method(config: GradientConfig) -> ssm.AbstractSSMGradient:
    """The SSM gradient method of the `ssm_lm` task's `gradient` section (its schema holds
    exactly the options that method takes).

    **Arguments:**

    - `config`: one of `config.schema.SSM_GRADIENT_SCHEMAS`'s schemas.

    **Returns:**

    The `ssm.AbstractSSMGradient`, e.g. `ssm.Truncated(window=64)`. Raises `ConfigError`
    naming `gradient.name` for an invalid combination.
    """
    options = {name: getattr(config, name) for name in config.options()}
    try:
        return ssm.gradient_method(config.name, **options)
    except ValueError as error:
        raise ConfigError("gradient.name", config.name, str(error)) from error


def build_trackers(config: LoggerConfig) -> tuple[AbstractTracker, ...]:
    """The trackers of the `logger` section, one per section that is set.

    **Arguments:**

    - `config`: the `logger` section.

    **Returns:**

    The trackers for `train.fit(..., trackers=...)`; built before training starts, so a missing
    library (`train.MissingExtraError`, naming the extra to install) stops the run at once.
    """
    trackers: list[AbstractTracker] = []
    if config.tensorboard is not None:
        tb = config.tensorboard
        trackers.append(TensorBoardTracker(logdir=tb.logdir, flush_secs=tb.flush_secs))
    if config.mlflow is not None:
        ml = config.mlflow
        trackers.append(
            MLflowTracker(
                tracking_uri=ml.tracking_uri, experiment=ml.experiment, run_name=ml.run_name
            )
        )
    return tuple(trackers)
