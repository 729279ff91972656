"""`fit`: the one training loop every experiment uses."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
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
from .step import train_step, value_and_grad_of
from .task import Task
from .trackers import AbstractTracker, ParamValue, _Trackers


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
    """`train_step` with the per-step key and an on-device guard against non-finite losses.

    The guard carries `(bad_step, bad_loss)`: once a loss is NaN or inf, that step and every
    later one leave the state as it was, so the last good state survives the (donated) steps
    until `fit` next looks at the guard, which it does on logging and checkpoint steps only.
    """
    base_key = jax.random.PRNGKey(seed)
    step = train_step(task.value_and_grad or value_and_grad_of(task.loss), optimizer)

    def guarded(state: TrainState, guard: tuple[Array, Array], batch):
        bad_step, bad_loss = guard
        stepped, loss, metrics = step(state, batch, jax.random.fold_in(base_key, state.step))
        failed = ~jnp.isfinite(loss)
        good = ~failed & (bad_step < 0)
        kept = jax.tree_util.tree_map(lambda new, old: jnp.where(good, new, old), stepped, state)
        first = failed & (bad_step < 0)
        guard = (
            jnp.where(first, state.step, bad_step),
            jnp.where(first, loss.astype(bad_loss.dtype), bad_loss),
        )
        return kept, guard, loss, metrics

    return guarded


def _clear_guard() -> tuple[Array, Array]:
    return jnp.asarray(-1, jnp.int32), jnp.asarray(0.0, jnp.float32)


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
    params: Mapping[str, ParamValue] | None = None,
    trackers: Sequence[AbstractTracker] = (),
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
    - `params`: the run's configuration as dotted keys to scalars (`flatten_params(config)`),
      recorded by the trackers.
    - `trackers`: where metrics, `params` and the artefacts go besides `metrics.jsonl`
      (`TensorBoardTracker()`, `MLflowTracker()`, ...); only process 0 uses them, and a
      resumed run continues each tracker's run.
    - `on_step`: called with the step number after each step (tests use it to interrupt).

    **Returns:** a `FitResult`. Raises `NonFiniteLossError` (after checkpointing the last good
    state) when the loss turns NaN or inf.
    """
    # Trackers close their run on every way out: finished, failed, or interrupted.
    tracking = _Trackers(trackers)
    try:
        result = _fit(
            task,
            optimizer,
            config,
            Path(run_dir),
            seed,
            mesh,
            meta,
            dict(params or {}),
            on_step,
            tracking,
        )
    except KeyboardInterrupt:
        tracking.finish("killed")
        raise
    except BaseException:
        tracking.finish("failed")
        raise
    tracking.finish("finished")
    return result


def _fit(
    task: Task,
    optimizer: optax.GradientTransformation,
    config: TrainConfig,
    run_dir: Path,
    seed: int,
    mesh: Mesh | None,
    meta: Mapping[str, Any] | None,
    params: Mapping[str, ParamValue],
    on_step: Callable[[int], None] | None,
    tracking: _Trackers,
) -> FitResult:
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpointer = Checkpointer(run_dir / "checkpoints", keep=config.keep_checkpoints)
    is_main = jax.process_index() == 0
    try:
        state, resumed_from = _initial_state(
            task, optimizer, seed, checkpointer, config.resume, mesh
        )
        log = MetricsLog(run_dir / "metrics.jsonl", resume_step=resumed_from) if is_main else None
        tracking.start(run_dir, params, resumed_from)
        step = _make_step(task, optimizer, seed)
        if mesh is None:
            step_fn = jax.jit(step, donate_argnums=(0, 1))
        else:  # the state keeps its placement from step to step
            whole = replicated(mesh)
            out = (_state_shardings(task, state, mesh), (whole, whole), whole, whole)
            step_fn = jax.jit(step, donate_argnums=(0, 1), out_shardings=out)
        meta = dict(meta or {})

        def stop_if_failed(guard: tuple[Array, Array]) -> None:
            bad_step = int(guard[0])
            if bad_step >= 0:
                checkpointer.save(bad_step, state, meta)
                checkpointer.wait()
                raise NonFiniteLossError(bad_step, float(guard[1]), str(checkpointer.directory))

        first = 0 if resumed_from is None else resumed_from
        started = time.perf_counter()
        window_start, window_steps = started, 0
        loss_value = float("nan")
        guard = _clear_guard()
        if mesh is not None:
            # Placed as the step returns it, so the second step reuses the first's compile
            # instead of compiling again for an input committed to the mesh.
            guard = jax.device_put(guard, (replicated(mesh), replicated(mesh)))
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
            state, guard, loss, metrics = step_fn(state, guard, batch)
            window_steps += 1
            done = step + 1
            logging_step = done % config.log_every == 0 or done == config.steps
            checkpoint_step = done % config.checkpoint_every == 0 or done == config.steps
            # The only host round trips: the guard and the loss, on logging and checkpoint
            # steps. Between them the steps are dispatched without waiting for each other.
            if logging_step or checkpoint_step:
                stop_if_failed(guard)
            if logging_step:
                loss_value = float(loss)
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
                tracking.log_metrics(record)
                bar.set_postfix(loss=f"{loss_value:.4g}", it_s=f"{steps_per_sec:.1f}")
                window_start, window_steps = now, 0
            bar.update(1)
            if checkpoint_step:
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
        tracking.log_artifacts(run_dir, config.steps)
    return result
