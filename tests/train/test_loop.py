"""The training loop: resume, NaN handling, corrupted checkpoints, data parallelism."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import jax
import numpy as np
import pytest

from adjoint_lab.config.schema import MeshConfig, OptimConfig, TrainConfig
from adjoint_lab.train import (
    Checkpointer,
    CheckpointError,
    NonFiniteLossError,
    TrainState,
    fit,
    make_mesh,
    make_optimizer,
    read_metrics,
)
from tests.helpers import regression_task

TRAIN = TrainConfig(
    steps=12, batch_size=8, log_every=2, eval_every=6, checkpoint_every=4, progress=False
)
OPTIM = OptimConfig(name="adam", lr=0.3, schedule="warmup_cosine", warmup_steps=3)


def _fit(run_dir, task=None, train=TRAIN, optim=OPTIM, **kwargs):
    return fit(
        task or regression_task(),
        make_optimizer(optim, train.steps),
        train,
        run_dir,
        seed=3,
        **kwargs,
    )


class _Interrupt(Exception):
    pass


def _interrupt_at(step_to_stop: int):
    def on_step(step):
        if step == step_to_stop:
            raise _Interrupt

    return on_step


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("reference")
    return _fit(run_dir), run_dir


def test_writes_metrics_plot_and_checkpoints(reference):
    result, run_dir = reference
    records = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == [2, 4, 6, 8, 10, 12]
    assert {"loss", "abs_b", "grad_norm", "samples_per_sec", "wall_time"} <= set(records[0])
    assert "eval_w_error" in records[2] and "eval_w_error" not in records[0]
    assert records[-1]["loss"] < 0.5 * records[0]["loss"]
    assert (run_dir / "curves.png").stat().st_size > 1000
    assert (run_dir / "results.json").exists()
    assert Checkpointer(run_dir / "checkpoints").steps() == [4, 8, 12]


def test_interrupted_run_resumes_bit_identically(reference, tmp_path):
    result, reference_dir = reference
    with pytest.raises(_Interrupt):
        _fit(tmp_path, on_step=_interrupt_at(6))  # dies after the step-4 checkpoint
    assert Checkpointer(tmp_path / "checkpoints").steps() == [4]
    resumed = _fit(tmp_path)
    assert resumed.resumed_from == 4
    for got, want in zip(_leaves(resumed.params), _leaves(result.params), strict=True):
        np.testing.assert_array_equal(got, want)
    # The metrics file reads like the uninterrupted run's.
    losses = [r["loss"] for r in read_metrics(tmp_path / "metrics.jsonl")]
    assert losses == [r["loss"] for r in read_metrics(reference_dir / "metrics.jsonl")]


def test_finished_run_resumes_as_a_no_op(reference, tmp_path):
    result, reference_dir = reference
    shutil.copytree(reference_dir / "checkpoints", tmp_path / "checkpoints")
    again = _fit(tmp_path)
    assert again.resumed_from == TRAIN.steps
    for got, want in zip(_leaves(again.params), _leaves(result.params), strict=True):
        np.testing.assert_array_equal(got, want)


def test_resume_false_refuses_to_overwrite(reference, tmp_path):
    _, reference_dir = reference
    shutil.copytree(reference_dir / "checkpoints", tmp_path / "checkpoints")
    with pytest.raises(CheckpointError, match="resume=false"):
        _fit(tmp_path, train=TrainConfig(**{**TRAIN.__dict__, "resume": "false"}))


def test_resume_from_explicit_path(reference, tmp_path):
    result, reference_dir = reference
    longer = TrainConfig(
        **{**TRAIN.__dict__, "steps": 14, "resume": str(reference_dir / "checkpoints")}
    )
    resumed = _fit(tmp_path, train=longer)
    assert resumed.resumed_from == 12


def test_nan_loss_stops_with_step_and_keeps_last_good_state(tmp_path):
    constant = OptimConfig(name="adam", lr=0.05)
    with pytest.raises(NonFiniteLossError, match="at step 7") as info:
        _fit(tmp_path, task=regression_task(nan_at=7), optim=constant)
    assert info.value.step == 7
    checkpoints = Checkpointer(tmp_path / "checkpoints")
    assert checkpoints.steps() == [4, 7]
    # The kept state is the one after steps 0..6: identical to a clean 7-step run.
    seven = TrainConfig(**{**TRAIN.__dict__, "steps": 7})
    clean = _fit(tmp_path / "clean", train=seven, optim=constant)
    template = TrainState.create(clean.params, make_optimizer(constant, 7))
    state, _ = checkpoints.restore(7, template)
    checkpoints.close()
    assert int(state.step) == 7
    for got, want in zip(_leaves(state.params), _leaves(clean.params), strict=True):
        np.testing.assert_array_equal(got, want)


def _corrupt(step_dir: Path) -> None:
    for path in sorted(step_dir.rglob("*")):
        if path.is_file() and "state" in path.parts:
            path.write_bytes(b"garbage")


def test_corrupted_checkpoint_falls_back_with_warning(reference, tmp_path):
    result, reference_dir = reference
    shutil.copytree(reference_dir / "checkpoints", tmp_path / "checkpoints")
    _corrupt(tmp_path / "checkpoints" / "12")
    with pytest.warns(RuntimeWarning, match="unreadable"):
        resumed = _fit(tmp_path)
    assert resumed.resumed_from == 8
    for got, want in zip(_leaves(resumed.params), _leaves(result.params), strict=True):
        np.testing.assert_array_equal(got, want)


def test_all_checkpoints_corrupted_is_an_error_not_a_fresh_start(reference, tmp_path):
    _, reference_dir = reference
    shutil.copytree(reference_dir / "checkpoints", tmp_path / "checkpoints")
    for step in (4, 8, 12):
        _corrupt(tmp_path / "checkpoints" / str(step))
    with pytest.warns(RuntimeWarning), pytest.raises(CheckpointError, match="no readable"):
        _fit(tmp_path)


def test_checkpoint_of_another_model_names_the_leaves(reference, tmp_path):
    _, reference_dir = reference
    shutil.copytree(reference_dir / "checkpoints", tmp_path / "checkpoints")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a mismatch is reported at once, not skipped over
        with pytest.raises(CheckpointError, match=r"\['w'\].*checkpoint \(3,\).*model \(5,\)"):
            _fit(tmp_path, task=regression_task(width=5))


def test_data_parallel_matches_one_device(reference, tmp_path):
    result, _ = reference
    assert jax.device_count() >= 4
    mesh = make_mesh(MeshConfig(axes=("data",), shape=(4,)))
    sharded = _fit(tmp_path, mesh=mesh)
    for got, want in zip(_leaves(sharded.params), _leaves(result.params), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    leaf = jax.tree_util.tree_leaves(sharded.params)[0]
    assert len(leaf.sharding.device_set) == 4


@pytest.mark.parametrize("devices", [1, 4])
def test_the_training_step_is_lowered_once(tmp_path, devices):
    # A second lowering of the step means every run compiles it twice (once more for the
    # inputs the first step returns); count lowerings between steps 2 and 5.
    lowerings = []
    counting = [False]

    def listener(event, duration, **kwargs):
        if counting[0] and event == "/jax/core/compile/jaxpr_to_mlir_module_duration":
            lowerings.append(event)

    def on_step(step):
        counting[0] = 1 <= step < 5

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        mesh = make_mesh(MeshConfig(axes=("data",), shape=(devices,)))
        train = TrainConfig(
            steps=6,
            batch_size=8,
            log_every=100,
            eval_every=100,
            checkpoint_every=100,
            progress=False,
        )
        _fit(tmp_path, train=train, mesh=mesh, on_step=on_step)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert lowerings == []


def test_unoptimized_compilation_computes_the_same_initialisation():
    # The C-NODE tasks and train_classifier initialise through compile_unoptimized: it must
    # draw the parameters `init` draws for every key (to rounding: XLA's optimisation level
    # may contract a multiply-add differently), in the same structure.
    import equinox as eqx

    from adjoint_lab.train import compile_unoptimized

    def init(key):
        mlp = eqx.nn.MLP(3, 2, 8, 2, key=key)
        return jax.tree.map(lambda a: 0.5 * a, eqx.filter(mlp, eqx.is_inexact_array))

    compiled = compile_unoptimized(init, jax.random.PRNGKey(0))
    assert isinstance(compiled, jax.stages.Compiled)
    for seed in (0, 7):
        key = jax.random.PRNGKey(seed)
        got, want = compiled(key), init(key)
        assert jax.tree.structure(got) == jax.tree.structure(want)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)
    with pytest.raises(TypeError):
        compiled(jax.random.PRNGKey(0)[None])  # compiled for one key's shape
