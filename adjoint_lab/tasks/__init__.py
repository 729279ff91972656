"""Experiment tasks by config name: the one place where `task=` strings become builders.

Each entry names the task's builder, the schemas of its `model` and `data` group options
(registered with Hydra's ConfigStore as `<group>/<name>_schema`), and the object the builder
takes besides the config (`needs`):

- `"integrator"`: a `core.Integrator` built from the `solver` and `gradient` sections; the
  task takes the ODE gradient methods (`config.schema.ODE_GRADIENT_SCHEMAS`).
- `"method"`: an SSM gradient method built from the `gradient` section; the task takes the
  SSM methods (`config.schema.SSM_GRADIENT_SCHEMAS`).
- `None`: the task solves no ODE and takes no gradient method.

`build(config, **{needs: object})` uses the object; `build(config)` builds it from the config.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from ..cnode import cnf_task
from ..cnode import tasks as cnode_tasks
from ..parabolic import generative_task
from ..parabolic import task as parabolic_task
from ..ssm import task as ssm_task
from ..train.task import Task
from . import node_spiral

Needs = Literal["integrator", "method"] | None


@dataclass(frozen=True)
class TaskEntry:
    build: Callable[..., Task]
    schemas: dict[tuple[str, str], type]
    needs: Needs = None


TASKS: dict[str, TaskEntry] = {
    "node_spiral": TaskEntry(
        build=node_spiral.build,
        schemas={
            ("model", "vector_field"): node_spiral.VectorFieldConfig,
            ("data", "spiral"): node_spiral.SpiralDataConfig,
        },
        needs="integrator",
    ),
    "cnode_classification": TaskEntry(
        build=cnode_tasks.build_classification,
        schemas=cnode_tasks.CLASSIFICATION_SCHEMAS,
        needs="integrator",
    ),
    "cnode_crossing": TaskEntry(
        build=cnode_tasks.build_crossing, schemas=cnode_tasks.CROSSING_SCHEMAS, needs="integrator"
    ),
    "cnode_cnf": TaskEntry(
        build=cnf_task.build_cnf, schemas=cnf_task.CNF_SCHEMAS, needs="integrator"
    ),
    "ssm_lm": TaskEntry(build=ssm_task.build, schemas=ssm_task.SCHEMAS, needs="method"),
    "parabolic_generative": TaskEntry(
        build=generative_task.build, schemas=generative_task.GENERATIVE_SCHEMAS
    ),
    "parabolic_ngo": TaskEntry(build=parabolic_task.build, schemas=parabolic_task.SCHEMAS),
}
