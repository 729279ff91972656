"""`fit`: the one training loop every experiment uses."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh
from jaxtyping import Array, PyTree
from tqdm.auto import tqdm

from ..config.schema import TrainConfig
from .checkpoint import Checkpointer
from .errors import CheckpointError, NonFiniteLossError
from .mesh import replicated, shard_batch, state_shardings
from .metrics import MetricsLog, plot_curves, read_metrics
from .state import TrainState
from .task import Task


@dataclass(frozen=True)
class FitResult:
    """What `fit` returns; the same figures are in `run_dir/results.json`."""

    params: PyTree[Array]
    final_loss: float
    steps: int
    resumed_from: int | None
    wall_time: float
    evaluation: Mapping[str, Any]
    run_dir: Path


def _make_step(task: Task, optimizer: optax.GradientTransformation, seed: int) -> Callable:
    base_key = jax.random.PRNGKey(seed)
    value_and_grad = task.value_and_grad or jax.value_and_grad(task.loss, has_aux=True)

    def step(state: TrainState, batch):
        key = jax.random.fold_in(base_key, state.step)
        (loss, metrics), grads = value_and_grad(state.params, batch, key)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        stepped = TrainState(step=state.step + 1, params=params, opt_state=opt_state)
        # A non-finite loss keeps the previous state, so the last good state survives the
        # (donated) step and can be checkpointed before stopping.
        finite = jnp.isfinite(loss)
        kept = jax.tree_util.tree_map(lambda new, old: jnp.where(finite, new, old), stepped, state)
        metrics = dict(metrics, grad_norm=optax.tree.norm(grads))
        return kept, loss, metrics

    return step


def _state_shardings(task: Task, state: TrainState, mesh: Mesh) -> PyTree:
    placed = task.param_shardings(mesh, state.params) if task.param_shardings else None
    return state_shardings(state, mesh, placed)


def _initial_state(
    task: Task,
    optimizer: optax.GradientTransformation,
    seed: int,
    checkpointer: Checkpointer,
    resume: str,
    mesh: Mesh | None,
) -> tuple[TrainState, int | None]:
    params = task.init(jax.random.PRNGKey(seed))
    state = TrainState.create(params, optimizer)
    if mesh is not None:
        state = jax.device_put(state, _state_shardings(task, state, mesh))
    if resume == "false":
        if checkpointer.steps():
            raise CheckpointError(
                f"{checkpointer.directory} already holds checkpoints {checkpointer.steps()} and "
                "train.resume=false; choose a new run directory or resume"
            )
        return state, None
    if resume == "auto":
        restored = checkpointer.restore_latest(state)
    else:
        source = Checkpointer(resume)
        restored = source.restore_latest(state)
        if restored is None:
            raise CheckpointError(f"train.resume={resume!r} holds no checkpoint")
    if restored is None:
        return state, None
    state, meta = restored
    return state, int(meta["step"])


def fit(
    task: Task,
    optimizer: optax.GradientTransformation,
    config: TrainConfig,
    run_dir: str | Path,
    *,
    seed: int = 0,
    mesh: Mesh | None = None,
    meta: Mapping[str, Any] | None = None,
    on_step: Callable[[int], None] | None = None,
) -> FitResult:
    """Train `task` for `config.steps` steps, resuming from a checkpoint when there is one.

    **Arguments:**

    - `task`: model, data and loss (see `Task`).
    - `optimizer`: an optax transformation.
    - `config`: steps, batch, logging and checkpoint policy.
    - `run_dir`: receives `metrics.jsonl`, `checkpoints/`, `curves.png`, `results.json`.
    - `seed`: seeds parameters and per-step keys.
    - `mesh`: when given, each batch is split over its `data` axis and the state replicated
      (or placed by `task.param_shardings`).
    - `meta`: JSON-able facts stored with every checkpoint (e.g. the config).
    - `on_step`: called with the step number after each step (tests use it to interrupt).

    **Returns:** a `FitResult`. Raises `NonFiniteLossError` (after checkpointing the last good
    state) when the loss turns NaN or inf.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpointer = Checkpointer(run_dir / "checkpoints", keep=config.keep_checkpoints)
    is_main = jax.process_index() == 0
    try:
        state, resumed_from = _initial_state(
            task, optimizer, seed, checkpointer, config.resume, mesh
        )
        log = MetricsLog(run_dir / "metrics.jsonl", resume_step=resumed_from) if is_main else None
        step = _make_step(task, optimizer, seed)
        if mesh is None:
            step_fn = jax.jit(step, donate_argnums=0)
        else:  # the state keeps its placement from step to step
            whole = replicated(mesh)
            out = (_state_shardings(task, state, mesh), whole, whole)
            step_fn = jax.jit(step, donate_argnums=0, out_shardings=out)
        meta = dict(meta or {})

        first = 0 if resumed_from is None else resumed_from
        started = time.perf_counter()
        window_start, window_steps = started, 0
        loss_value = float("nan")
        bar = tqdm(
            total=config.steps,
            initial=first,
            desc=task.name,
            disable=not (config.progress and is_main),
            dynamic_ncols=True,
        )
        for step in range(first, config.steps):
            batch = task.batch(step)
            if mesh is not None:
                batch = shard_batch(batch, mesh)
            state, loss, metrics = step_fn(state, batch)
            loss_value = float(loss)
            if not math.isfinite(loss_value):
                checkpointer.save(step, state, meta)
                checkpointer.wait()
                raise NonFiniteLossError(step, loss_value, str(checkpointer.directory))
            window_steps += 1
            done = step + 1
            if done % config.log_every == 0 or done == config.steps:
                now = time.perf_counter()
                steps_per_sec = window_steps / max(now - window_start, 1e-9)
                record = {
                    "step": done,
                    "loss": loss_value,
                    **{k: float(v) for k, v in metrics.items()},
                    "steps_per_sec": steps_per_sec,
                    "samples_per_sec": steps_per_sec * task.batch_size,
                    "wall_time": now - started,
                }
                if task.evaluate is not None and (
                    done % config.eval_every == 0 or done == config.steps
                ):
                    record.update({f"eval_{k}": v for k, v in task.evaluate(state.params).items()})
                if log is not None:
                    log.write(record)
                bar.set_postfix(loss=f"{loss_value:.4g}", it_s=f"{steps_per_sec:.1f}")
                window_start, window_steps = now, 0
            bar.update(1)
            if done % config.checkpoint_every == 0 or done == config.steps:
                checkpointer.save(done, state, meta)
            if on_step is not None:
                on_step(done)
        bar.close()
        checkpointer.wait()
        if first == config.steps and log is not None:  # resumed a finished run
            finished = [r for r in read_metrics(log.path) if "loss" in r]
            loss_value = finished[-1]["loss"] if finished else loss_value
    finally:
        checkpointer.close()

    evaluation = dict(task.evaluate(state.params)) if task.evaluate is not None else {}
    result = FitResult(
        params=state.params,
        final_loss=loss_value,
        steps=config.steps,
        resumed_from=resumed_from,
        wall_time=time.perf_counter() - started,
        evaluation=evaluation,
        run_dir=run_dir,
    )
    if is_main:
        plot_curves(run_dir / "metrics.jsonl", run_dir / "curves.png", title=task.name)
        if task.report is not None:
            task.report(state.params, run_dir)
        summary = {
            "task": task.name,
            "steps": config.steps,
            "final_loss": loss_value,
            "resumed_from": resumed_from,
            "wall_time": result.wall_time,
            "evaluation": evaluation,
        }
        (run_dir / "results.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    return result
