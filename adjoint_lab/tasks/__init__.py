"""Experiment tasks by config name: the one place where `task=` strings become builders.

Each entry names the task's builder and the schemas of its `model` and `data` group options
(registered with Hydra's ConfigStore as `<group>/<name>_schema`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..cnode import cnf_task
from ..cnode import tasks as cnode_tasks
from ..config.schema import ExperimentConfig
from ..parabolic import generative_task
from ..parabolic import task as parabolic_task
from ..ssm import task as ssm_task
from ..train.task import Task
from . import node_spiral


@dataclass(frozen=True)
class TaskEntry:
    build: Callable[[ExperimentConfig], Task]
    schemas: dict[tuple[str, str], type]


TASKS: dict[str, TaskEntry] = {
    "node_spiral": TaskEntry(
        build=node_spiral.build,
        schemas={
            ("model", "vector_field"): node_spiral.VectorFieldConfig,
            ("data", "spiral"): node_spiral.SpiralDataConfig,
        },
    ),
    "cnode_classification": TaskEntry(
        build=cnode_tasks.build_classification, schemas=cnode_tasks.CLASSIFICATION_SCHEMAS
    ),
    "cnode_crossing": TaskEntry(
        build=cnode_tasks.build_crossing, schemas=cnode_tasks.CROSSING_SCHEMAS
    ),
    "cnode_cnf": TaskEntry(build=cnf_task.build_cnf, schemas=cnf_task.CNF_SCHEMAS),
    "ssm_lm": TaskEntry(build=ssm_task.build, schemas=ssm_task.SCHEMAS),
    "parabolic_generative": TaskEntry(
        build=generative_task.build, schemas=generative_task.GENERATIVE_SCHEMAS
    ),
    "parabolic_ngo": TaskEntry(build=parabolic_task.build, schemas=parabolic_task.SCHEMAS),
}
