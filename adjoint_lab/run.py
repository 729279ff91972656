"""Run one experiment from a validated config: devices, task, optimiser, `fit`, summary."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from .config.errors import ConfigError
from .config.schema import ExperimentConfig


def config_fingerprint(config: ExperimentConfig) -> str:
    """A short hash of everything that shapes the model and data (not the run's length)."""
    shaping = {"task": config.task, "model": config.model, "data": config.data}
    text = json.dumps(shaping, default=lambda o: dataclasses.asdict(o), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def run(config: ExperimentConfig) -> dict[str, Any]:
    """Train the configured task and return its summary (also in `run_dir/results.json`).

    Devices are configured first: simulated CPU devices and `jax.distributed` must be set up
    before JAX runs any computation.
    """
    from .train import configure_host_devices, initialize_distributed

    # orbax logs every save step at INFO through absl; keep the run log readable.
    for noisy in ("absl", "jax._src.xla_bridge"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    configure_host_devices(config.mesh.cpu_devices)
    initialize_distributed(config.distributed)

    import jax

    from .app import build_task, build_trackers
    from .train import fit, flatten_params, make_mesh, make_optimizer

    trackers = build_trackers(config.logger)
    mesh = make_mesh(config.mesh)
    task = build_task(config)
    if config.objective != "final_loss" and task.evaluate is None:
        raise ConfigError(
            "objective",
            config.objective,
            f"the {config.task} task has no evaluation; use objective=final_loss",
        )
    optimizer = make_optimizer(config.optim, config.train.steps)
    run_dir = Path(config.run_dir)
    meta = {"fingerprint": config_fingerprint(config), "task": config.task}
    result = fit(
        task,
        optimizer,
        config.train,
        run_dir,
        seed=config.seed,
        mesh=mesh,
        meta=meta,
        params=flatten_params(config),
        trackers=trackers,
    )
    summary = {
        "task": config.task,
        "steps": result.steps,
        "final_loss": result.final_loss,
        "evaluation": dict(result.evaluation),
        "resumed_from": result.resumed_from,
        "wall_time_s": round(result.wall_time, 2),
        "devices": f"{jax.device_count()} x {jax.devices()[0].platform}",
        "mesh": dict(mesh.shape),
        "run_dir": str(run_dir),
    }
    summary["objective"] = objective_value(config.objective, summary)
    if jax.process_index() == 0:
        print(format_summary(summary))
    return summary


def objective_value(objective: str, summary: dict[str, Any]) -> float:
    """The number a sweep minimises: `final_loss`, or `eval_<name>`, the final evaluation's
    metric `<name>` (`eval_mse` for the spiral), as `metrics.jsonl` names it.

    **Arguments:**

    - `objective`: the config's `objective` field.
    - `summary`: what `run` returns (`final_loss`, `evaluation`, `task`).

    **Returns:** the value, a float. Raises `ConfigError` naming the metrics the task evaluates
    when `<name>` is not one of them.
    """
    if objective == "final_loss":
        return float(summary["final_loss"])
    name = objective.removeprefix("eval_")
    evaluation = summary["evaluation"]
    if name not in evaluation:
        choices = ", ".join(["final_loss", *(f"eval_{k}" for k in evaluation)])
        raise ConfigError("objective", objective, f"the {summary['task']} task evaluates {choices}")
    return float(evaluation[name])


def format_summary(summary: dict[str, Any]) -> str:
    evaluation = ", ".join(f"{k}={v:.4g}" for k, v in summary["evaluation"].items())
    resumed = summary["resumed_from"]
    lines = [
        f"[adjoint-lab] {summary['task']}: {summary['steps']} steps in "
        f"{summary['wall_time_s']} s on {summary['devices']} (mesh {summary['mesh']})"
        + (f", resumed from step {resumed}" if resumed is not None else ""),
        f"  final loss {summary['final_loss']:.4g}"
        + (f"; eval {evaluation}" if evaluation else ""),
        f"  run dir {summary['run_dir']}: metrics.jsonl, curves.png, checkpoints/, results.json",
    ]
    return "\n".join(lines)
