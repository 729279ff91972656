"""Experiment tasks by config name: the one place where `task=` strings become builders.

Each entry names the task's builder and the schemas of its `model` and `data` group options
(registered with Hydra's ConfigStore as `<group>/<name>_schema`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..config.schema import ExperimentConfig
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
}
