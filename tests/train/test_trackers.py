"""Trackers: what `fit` sends to TensorBoard and MLflow, read back with their own readers."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from adjoint_lab.config.schema import ExperimentConfig, OptimConfig, TrainConfig
from adjoint_lab.train import (
    AbstractTracker,
    MissingExtraError,
    MLflowTracker,
    TensorBoardTracker,
    fit,
    flatten_params,
    make_optimizer,
    read_metrics,
)
from adjoint_lab.train import trackers as trackers_module
from tests.helpers import regression_task

TRAIN = TrainConfig(
    steps=12, batch_size=8, log_every=2, eval_every=6, checkpoint_every=4, progress=False
)
OPTIM = OptimConfig(name="adam", lr=0.3)
PARAMS = {"optim.lr": 0.3, "optim.name": "adam", "train.steps": 12, "optim.clip_norm": None}
STEPS = [2, 4, 6, 8, 10, 12]


class _Interrupt(Exception):
    pass


def _stop_at(stop: int):
    def on_step(step: int) -> None:
        if step == stop:
            raise _Interrupt

    return on_step


def _fit(run_dir: Path, trackers, train=TRAIN, **kwargs):
    return fit(
        regression_task(),
        make_optimizer(OPTIM, train.steps),
        train,
        run_dir,
        seed=3,
        params=PARAMS,
        trackers=trackers,
        **kwargs,
    )


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory):
    """One run through both trackers, interrupted after step 6 (its last checkpoint is at step
    4) and resumed by new tracker objects, as a restarted process would be."""
    pytest.importorskip("tensorboardX")
    pytest.importorskip("mlflow")
    run_dir = tmp_path_factory.mktemp("tracked")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        first = MLflowTracker(experiment="tests")
        with pytest.raises(_Interrupt):
            _fit(run_dir, (TensorBoardTracker(), first), on_step=_stop_at(6))
        interrupted = {"run_id": first.run_id}
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlflow.db'}")
        interrupted["status"] = client.get_run(first.run_id).info.status
        interrupted["loss_steps"] = [
            m.step for m in client.get_metric_history(first.run_id, "loss")
        ]
        second = MLflowTracker(experiment="tests")
        result = _fit(run_dir, (TensorBoardTracker(), second))
    assert result.resumed_from == 4
    return run_dir, interrupted, second.run_id, client


def _accumulator(logdir: Path):
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator"
    )
    accumulator = event_accumulator.EventAccumulator(
        str(logdir), size_guidance={"scalars": 0, "images": 0, "tensors": 0}
    )
    accumulator.Reload()
    return accumulator


def test_tensorboard_scalars_at_their_steps_once_after_resume(resumed_run):
    run_dir, *_ = resumed_run
    records = {r["step"]: r for r in read_metrics(run_dir / "metrics.jsonl")}
    accumulator = _accumulator(run_dir / "tensorboard")
    loss = accumulator.Scalars("loss")
    # Step 6 was logged by the interrupted run and again after the resume from step 4; the
    # resumed writer's purge leaves one value per step.
    assert [e.step for e in loss] == STEPS
    for event in loss:
        assert event.value == pytest.approx(records[event.step]["loss"], rel=1e-6)
    assert [e.step for e in accumulator.Scalars("eval_w_error")] == [6, 12]
    assert [e.step for e in accumulator.Scalars("grad_norm")] == STEPS


def test_tensorboard_params_and_artefacts(resumed_run):
    run_dir, *_ = resumed_run
    from tensorboard.plugins.hparams import plugin_data_pb2

    accumulator = _accumulator(run_dir / "tensorboard")
    contents = accumulator.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(
        contents["_hparams_/session_start_info"]
    ).session_start_info
    assert start.hparams["optim.lr"].number_value == pytest.approx(0.3)
    assert start.hparams["optim.name"].string_value == "adam"
    assert start.hparams["optim.clip_norm"].string_value == "null"
    images = accumulator.Images("plots/curves")
    assert images[-1].step == TRAIN.steps
    assert images[-1].encoded_image_string == (run_dir / "curves.png").read_bytes()
    text = accumulator.Tensors("results/text_summary")[-1]
    assert '"final_loss"' in text.tensor_proto.string_val[0].decode()


def test_mlflow_run_params_metrics_and_artefacts(resumed_run):
    run_dir, _, run_id, client = resumed_run
    records = {r["step"]: r for r in read_metrics(run_dir / "metrics.jsonl")}
    experiment = client.get_experiment_by_name("tests")
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs] == [run_id]
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["optim.lr"] == "0.3"
    assert run.data.params["train.steps"] == "12"
    assert run.data.tags["adjoint_lab.resumed_from"] == "4"
    history = client.get_metric_history(run_id, "loss")
    assert sorted({m.step for m in history}) == STEPS
    for metric in history:
        assert metric.value == pytest.approx(records[metric.step]["loss"], rel=1e-6)
    eval_steps = sorted({m.step for m in client.get_metric_history(run_id, "eval_w_error")})
    assert eval_steps == [6, 12]
    artefacts = {f.path for f in client.list_artifacts(run_id)}
    assert {"curves.png", "results.json"} <= artefacts
    local = Path(client.download_artifacts(run_id, "results.json", str(run_dir / "download")))
    assert json.loads(local.read_text())["steps"] == TRAIN.steps
    # The default store lives in the run directory, artefacts included.
    assert Path(run.info.artifact_uri.removeprefix("file://")).is_relative_to(run_dir)


def test_mlflow_resumed_run_appends_to_the_same_run(resumed_run):
    run_dir, interrupted, run_id, client = resumed_run
    assert interrupted["status"] == "FAILED"
    assert interrupted["loss_steps"] == [2, 4, 6]
    assert run_id == interrupted["run_id"]
    assert json.loads((run_dir / "mlflow_run.json").read_text())["run_id"] == run_id
    steps = [m.step for m in client.get_metric_history(run_id, "loss")]
    assert max(steps) == TRAIN.steps and len(steps) > len(interrupted["loss_steps"])


def test_mlflow_store_given_by_uri_keeps_artefacts_beside_it(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)  # MLflow's own artefact default would be ./mlruns here
    uri = f"sqlite:///{tmp_path / 'shared' / 'mlflow.db'}"
    (tmp_path / "shared").mkdir()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.json").write_text("{}")
    tracker = MLflowTracker(tracking_uri=uri, experiment="shared")
    tracker.start(run_dir, {"optim.lr": 0.1}, None)
    tracker.log_metrics({"loss": 2.0}, 3)
    tracker.log_artifacts([run_dir / "results.json"], 3)
    tracker.finish("finished")
    run = MlflowClient(tracking_uri=uri).get_run(tracker.run_id)
    assert run.data.metrics == {"loss": 2.0} and run.data.params == {"optim.lr": "0.1"}
    assert (tmp_path / "shared" / "mlartifacts").is_dir()
    assert list((tmp_path / "shared" / "mlartifacts").rglob("results.json"))
    assert not (tmp_path / "mlruns").exists() and not (run_dir / "mlflow.db").exists()


class _Recorder(AbstractTracker):
    def __init__(self):
        self.calls = []

    def start(self, run_dir, params, resume_step):
        self.calls.append(("start", dict(params), resume_step))

    def log_metrics(self, metrics, step):
        self.calls.append(("metrics", step, sorted(metrics)))

    def log_artifacts(self, paths, step):
        self.calls.append(("artifacts", step, sorted(p.name for p in paths)))

    def finish(self, outcome):
        self.calls.append(("finish", outcome))


SHORT = TrainConfig(
    steps=4, batch_size=8, log_every=2, eval_every=4, checkpoint_every=4, progress=False
)


def test_fit_drives_a_tracker_through_one_run(tmp_path):
    recorder = _Recorder()
    _fit(tmp_path, (recorder,), train=SHORT)
    assert recorder.calls[0] == ("start", PARAMS, None)
    assert [c[1] for c in recorder.calls if c[0] == "metrics"] == [2, 4]
    metrics = recorder.calls[2][2]
    assert {"loss", "grad_norm", "abs_b", "eval_w_error", "wall_time"} <= set(metrics)
    assert "step" not in metrics
    assert recorder.calls[-2] == ("artifacts", 4, ["curves.png", "results.json"])
    assert recorder.calls[-1] == ("finish", "finished")


def test_fit_closes_trackers_when_training_fails(tmp_path):
    recorder = _Recorder()
    with pytest.raises(_Interrupt):
        _fit(tmp_path, (recorder,), train=SHORT, on_step=_stop_at(3))
    assert recorder.calls[-1] == ("finish", "failed")
    assert not any(c[0] == "artifacts" for c in recorder.calls)


def test_only_process_zero_logs(tmp_path, monkeypatch):
    recorder = _Recorder()
    # Only the trackers see process 1: orbax would wait for a process 0 that never comes.
    monkeypatch.setattr(trackers_module, "jax", SimpleNamespace(process_index=lambda: 1))
    _fit(tmp_path, (recorder,), train=SHORT)
    assert recorder.calls == []


@pytest.mark.parametrize(
    ("missing", "build"),
    [
        ("tensorboardX", TensorBoardTracker),
        ("mlflow", MLflowTracker),
        ("sqlalchemy", MLflowTracker),  # mlflow-skinny alone has no SQLite store
    ],
)
def test_missing_library_names_the_extra(monkeypatch, missing, build):
    monkeypatch.setitem(sys.modules, missing, None)  # makes `import missing` fail
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(ImportError, match=r'pip install "adjoint_lab\[tracking\]"') as info:
        build()
    assert isinstance(info.value, MissingExtraError)
    assert "\n" not in str(info.value) and missing in str(info.value)


def test_flatten_params_of_the_experiment_config():
    flat = flatten_params(ExperimentConfig(model={"width": 8, "depths": [2, 3]}))
    assert flat["optim.lr"] == OptimConfig().lr
    assert flat["train.steps"] == TrainConfig().steps
    assert flat["model.width"] == 8
    assert flat["model.depths"] == "[2, 3]"
    assert flat["mesh.shape"] == "[-1]"
    assert flat["optim.clip_norm"] is None
    assert all(isinstance(v, bool | int | float | str | type(None)) for v in flat.values())
