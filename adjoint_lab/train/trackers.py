"""Experiment trackers: where `fit` sends parameters, metrics and artefacts besides
`metrics.jsonl` (which is always written).

A tracker is passed as an object, `fit(..., trackers=(TensorBoardTracker(), MLflowTracker()))`.
`fit` starts each one on process 0 only, hands it every logged record, uploads the run's PNG
plots and `results.json` at the end, and finishes it. A run resumed from a checkpoint continues
the same tracker run: each tracker keeps what it needs to find that run in the run directory.

The tracking libraries are optional (`pip install "adjoint_lab[tracking]"`); they are imported
when a tracker is built, so a missing one fails before training starts.
"""

from __future__ import annotations

import abc
import dataclasses
import importlib
import json
import os
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, final

import jax
import numpy as np

ParamValue = bool | int | float | str | None
Outcome = Literal["finished", "failed", "killed"]

_EXTRA = 'pip install "adjoint_lab[tracking]"'


class MissingExtraError(ImportError):
    """A tracker's library is not installed."""


def _require(module: str, who: str, package: str | None = None) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(
            f"{who} needs the {package or module} package, which is not installed; "
            f"install the tracking extra: {_EXTRA}"
        ) from None


def flatten_params(config: Any, prefix: str = "") -> dict[str, ParamValue]:
    """A config tree as `{"optim.lr": 0.001, ...}`: what trackers record as parameters.

    **Arguments:**

    - `config`: nested dataclasses and mappings (an `ExperimentConfig`, a `DictConfig`, a dict).
    - `prefix`: prepended to every key, with a dot.

    **Returns:** dotted keys to scalars; sequences become their JSON text (`"[8, 8]"`).
    """
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        items: Iterable[tuple[str, Any]] = (
            (f.name, getattr(config, f.name)) for f in dataclasses.fields(config)
        )
    elif isinstance(config, Mapping):
        items = ((str(k), v) for k, v in config.items())
    else:
        return {prefix: _param_value(config)} if prefix else {}
    flat: dict[str, ParamValue] = {}
    for key, value in items:
        name = f"{prefix}.{key}" if prefix else key
        if (dataclasses.is_dataclass(value) and not isinstance(value, type)) or isinstance(
            value, Mapping
        ):
            flat.update(flatten_params(value, name))
        else:
            flat[name] = _param_value(value)
    return flat


def _param_value(value: Any) -> ParamValue:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Sequence):
        return json.dumps(list(value), default=str)
    return str(value)


def _numeric(record: Mapping[str, Any]) -> dict[str, float]:
    """The numeric entries of a metrics record, as floats (strings and `step` left out)."""
    out = {}
    for key, value in record.items():
        if key == "step" or isinstance(value, str | bool) or value is None:
            continue
        array = np.asarray(value)
        if array.ndim == 0 and np.issubdtype(array.dtype, np.number):
            out[key] = float(array)
    return out


class AbstractTracker(abc.ABC):
    """Receives one training run's parameters, metrics and artefacts.

    `fit` calls `start`, then `log_metrics` on every logging step, `log_artifacts` once at the
    end, and `finish` (also when training fails). Only process 0 calls any of them. A tracker
    object may be started again after `finish`, for the next run.
    """

    @abc.abstractmethod
    def start(
        self, run_dir: Path, params: Mapping[str, ParamValue], resume_step: int | None
    ) -> None:
        """Open the tracker run for `run_dir`.

        **Arguments:**

        - `run_dir`: the run directory; a tracker keeps there what it needs to resume.
        - `params`: the flattened config (dotted keys to scalars).
        - `resume_step`: the checkpoint step `fit` resumed from, or `None` for a fresh run;
          when given, continue the run an earlier `start` in `run_dir` opened.
        """

    @abc.abstractmethod
    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Record the scalars of one logging step (training and `eval_*` metrics)."""

    @abc.abstractmethod
    def log_artifacts(self, paths: Sequence[Path], step: int) -> None:
        """Record the run's output files (PNG plots, `results.json`) at the final step."""

    @abc.abstractmethod
    def finish(self, outcome: Outcome) -> None:
        """Close the run: `finished`, or `failed`/`killed` when training raised."""


@final
class TensorBoardTracker(AbstractTracker):
    """TensorBoard event files, written with tensorboardX (no TensorFlow or PyTorch needed).

    Scalars go under their metric names, the flattened config to the HParams dashboard, the
    PNG plots to the Images tab and `results.json` to the Text tab. A resumed run appends a
    new event file that purges the steps after the checkpoint (TensorBoard's own restart
    mechanism), so the curves read like one uninterrupted run. A fresh run in a directory
    that holds event files replaces them, as `metrics.jsonl` is replaced.

    **Arguments:**

    - `logdir`: where event files go; default `<run_dir>/tensorboard`.
    - `flush_secs`: how often the writer flushes to disk.

    View with `tensorboard --logdir <run_dir or its parent>`.
    """

    def __init__(self, logdir: str | Path | None = None, flush_secs: int = 30):
        _require("tensorboardX", "TensorBoardTracker")
        self.logdir = None if logdir is None else Path(logdir)
        self.flush_secs = flush_secs
        self._writer: Any = None

    def start(
        self, run_dir: Path, params: Mapping[str, ParamValue], resume_step: int | None
    ) -> None:
        from tensorboardX import SummaryWriter
        from tensorboardX.summary import hparams

        logdir = self.logdir or Path(run_dir) / "tensorboard"
        logdir.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            for stale in logdir.glob("events.out.tfevents.*"):
                stale.unlink()
        first = resume_step or 0
        # Event files are read in name order. tensorboardX names them by the second and host;
        # the first step breaks ties, so a resume within the same second sorts after (and
        # never overwrites) the file it continues.
        self._writer = SummaryWriter(
            logdir=str(logdir),
            purge_step=first + 1,
            flush_secs=self.flush_secs,
            filename_suffix=f".from{first:09d}",
        )
        if resume_step is None and params:
            values = {k: "null" if v is None else v for k, v in params.items()}
            for summary in hparams(values, {"loss": 0.0}):
                self._writer.file_writer.add_summary(summary)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        for name, value in metrics.items():
            self._writer.add_scalar(name, value, step)

    def log_artifacts(self, paths: Sequence[Path], step: int) -> None:
        from PIL import Image
        from tensorboardX.proto.summary_pb2 import Summary  # pyright: ignore[reportAttributeAccessIssue]

        for path in paths:
            if path.suffix == ".png":
                data = path.read_bytes()
                with Image.open(path) as image:
                    width, height = image.size
                    channels = len(image.getbands())
                # The PNG as it is (no decode and re-encode), in TensorBoard's Images tab.
                encoded = Summary.Image(
                    height=height, width=width, colorspace=channels, encoded_image_string=data
                )
                summary = Summary(value=[Summary.Value(tag=f"plots/{path.stem}", image=encoded)])
                self._writer.file_writer.add_summary(summary, step)
            elif path.suffix == ".json":
                # Markdown code block, so the JSON keeps its layout in the Text tab.
                text = "```\n" + path.read_text() + "\n```"
                self._writer.add_text(path.stem, text, step)

    def finish(self, outcome: Outcome) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


_MLFLOW_RECORD = "mlflow_run.json"
_MLFLOW_MAX_PARAMS = 100  # per log_batch call
_MLFLOW_MAX_METRICS = 1000
_MLFLOW_MAX_PARAM_LENGTH = 6000


@final
class MLflowTracker(AbstractTracker):
    """An MLflow run, logged through `MlflowClient` (no global active run is touched).

    Without `tracking_uri` (and without `MLFLOW_TRACKING_URI` in the environment) the store is
    a SQLite database in the run directory, `sqlite:///<run_dir>/mlflow.db`, with artefacts in
    `<run_dir>/mlartifacts`: MLflow 3 refuses the old `./mlruns` file store unless
    `MLFLOW_ALLOW_FILE_STORE=true`, and SQLite needs no server. View it with
    `mlflow ui --backend-store-uri sqlite:///<run_dir>/mlflow.db`. Point several runs at one
    store (a shared SQLite file, or a server `http://host:5000`) to compare them in one UI.

    The run id is kept in `<run_dir>/mlflow_run.json`; a resumed run reopens that run and
    appends to its metric history. The steps between the last checkpoint and an interruption
    are logged twice (MLflow cannot delete metric values); a resume is bit-identical, so both
    values of the loss at such a step agree.

    **Arguments:**

    - `tracking_uri`: any MLflow tracking URI; default as above.
    - `experiment`: the experiment's name (created if missing).
    - `run_name`: the run's name; default the run directory's name.
    - `artifact_location`: where a newly created experiment stores artefacts; default
      `mlartifacts/` beside a SQLite file (`<run_dir>/mlartifacts` for the default store),
      the store's choice otherwise.
    - `tags`: extra run tags.
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment: str = "adjoint_lab",
        run_name: str | None = None,
        artifact_location: str | None = None,
        tags: Mapping[str, str] | None = None,
    ):
        _require("mlflow", "MLflowTracker", "mlflow (or mlflow-skinny)")
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if uri is None or uri.startswith(("sqlite:", "postgresql", "mysql", "mssql")):
            # mlflow-skinny leaves out the database store's dependencies.
            _require("sqlalchemy", "MLflowTracker's database store")
            _require("alembic", "MLflowTracker's database store")
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.run_name = run_name
        self.artifact_location = artifact_location
        self.tags = dict(tags or {})
        self._client: Any = None
        self.run_id: str | None = None

    def _uri(self, run_dir: Path) -> str:
        uri = self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        return uri or f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"

    def _artifact_location(self, uri: str) -> str | None:
        if self.artifact_location is not None:
            return self.artifact_location
        # A SQLite file keeps its artefacts beside it (MLflow's own default is `./mlruns` in
        # the working directory); other stores choose for themselves.
        if uri.startswith("sqlite:///") and ":memory:" not in uri:
            database = Path(uri.removeprefix("sqlite:///").split("?")[0])
            return (database.parent / "mlartifacts").resolve().as_uri()
        return None

    def start(
        self, run_dir: Path, params: Mapping[str, ParamValue], resume_step: int | None
    ) -> None:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        run_dir = Path(run_dir)
        uri = self._uri(run_dir)
        client = MlflowClient(tracking_uri=uri)
        record = run_dir / _MLFLOW_RECORD
        run = None
        if resume_step is not None and record.exists():
            stored = json.loads(record.read_text())
            if stored.get("tracking_uri") == uri:
                try:
                    run = client.get_run(stored["run_id"])
                except MlflowException:
                    warnings.warn(
                        f"MLflow run {stored['run_id']} (from {record}) is not in {uri}; "
                        "starting a new run",
                        stacklevel=2,
                    )
        logged: Mapping[str, str] = {}
        if run is None:
            found = client.get_experiment_by_name(self.experiment)
            if found is not None:
                experiment_id = found.experiment_id
            else:
                experiment_id = client.create_experiment(
                    self.experiment, artifact_location=self._artifact_location(uri)
                )
            tags = {"adjoint_lab.run_dir": str(run_dir.resolve()), **self.tags}
            run = client.create_run(
                experiment_id, run_name=self.run_name or run_dir.name, tags=tags
            )
            record.write_text(json.dumps({"tracking_uri": uri, "run_id": run.info.run_id}) + "\n")
        else:
            client.update_run(run.info.run_id, status="RUNNING")
            client.set_tag(run.info.run_id, "adjoint_lab.resumed_from", str(resume_step))
            logged = run.data.params
        self._client, self.run_id = client, run.info.run_id
        self._log_params(params, logged)

    def _log_params(self, params: Mapping[str, ParamValue], logged: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        values = {k: str(v)[:_MLFLOW_MAX_PARAM_LENGTH] for k, v in params.items()}
        # MLflow parameters cannot change; a resumed run with an edited config (a longer
        # `train.steps`, say) keeps the first values and says which differ.
        changed = sorted(k for k, v in values.items() if k in logged and logged[k] != v)
        if changed:
            warnings.warn(
                f"MLflow run {self.run_id} keeps its first values of {', '.join(changed)}; "
                "MLflow parameters cannot change after they are logged",
                stacklevel=3,
            )
        new = [Param(k, v) for k, v in values.items() if k not in logged]
        for i in range(0, len(new), _MLFLOW_MAX_PARAMS):
            self._client.log_batch(self.run_id, params=new[i : i + _MLFLOW_MAX_PARAMS])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        values = [Metric(k, v, now, step) for k, v in metrics.items()]
        for i in range(0, len(values), _MLFLOW_MAX_METRICS):
            self._client.log_batch(self.run_id, metrics=values[i : i + _MLFLOW_MAX_METRICS])

    def log_artifacts(self, paths: Sequence[Path], step: int) -> None:
        for path in paths:
            self._client.log_artifact(self.run_id, str(path))

    def finish(self, outcome: Outcome) -> None:
        if self._client is not None and self.run_id is not None:
            self._client.set_terminated(self.run_id, status=outcome.upper())
        self._client = None


class _Trackers:
    """`fit`'s fan-out to its trackers; on processes other than 0 it drops them."""

    def __init__(self, trackers: Sequence[AbstractTracker]):
        self.trackers = tuple(trackers) if jax.process_index() == 0 else ()
        self.started: list[AbstractTracker] = []

    def start(
        self, run_dir: Path, params: Mapping[str, ParamValue], resume_step: int | None
    ) -> None:
        for tracker in self.trackers:
            tracker.start(run_dir, params, resume_step)
            self.started.append(tracker)

    def log_metrics(self, record: Mapping[str, Any]) -> None:
        if self.started:
            metrics = _numeric(record)
            for tracker in self.started:
                tracker.log_metrics(metrics, int(record["step"]))

    def log_artifacts(self, run_dir: Path, step: int) -> None:
        paths = sorted(run_dir.glob("*.png")) + [run_dir / "results.json"]
        paths = [p for p in paths if p.is_file()]
        for tracker in self.started:
            tracker.log_artifacts(paths, step)

    def finish(self, outcome: Outcome) -> None:
        # Every tracker gets closed even if one of them fails to.
        errors = []
        for tracker in self.started:
            try:
                tracker.finish(outcome)
            except Exception as error:  # noqa: BLE001
                errors.append(error)
        self.started = []
        if errors and outcome == "finished":
            raise errors[0]
