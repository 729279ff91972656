"""The run's objects from its validated config: the one place a task gets what it is built with.

Solver and gradient sections become a `core.Integrator` (through `config.build`, the ODE
config boundary, which the task builders also fall back to); the task's builder then takes the
object its `TASKS` entry `needs`.
"""

from __future__ import annotations

from ..config.build import build_integrator
from ..config.schema import ExperimentConfig
from ..tasks import TASKS
from ..train.task import Task


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
    return entry.build(config)
