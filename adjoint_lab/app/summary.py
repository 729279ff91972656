"""One table for a sweep: every job of a `multirun/` directory as a row of `summary.md` and
`summary.csv` (method, the swept values, status, final loss, evaluation, NFE, wall time).

`SweepSummary` is a Hydra callback (on in the packaged `config.yaml`): a job that raises
leaves `error.txt` in its directory, and the table is rewritten after every job and at the end
of the sweep. Rewriting it per job keeps it whole when a failed job stops Hydra's basic or
joblib sweep before `on_multirun_end`, and when jobs end on other hosts (Slurm). By hand:
`python -m adjoint_lab.app.summary multirun/node_spiral/<date>`.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

Status = Literal["ok", "failed", "incomplete"]

ERROR_FILE = "error.txt"
SUMMARY_FILES = ("summary.md", "summary.csv")


@dataclass(frozen=True)
class JobRow:
    """What one job of a sweep left in its directory."""

    job: str
    overrides: Mapping[str, str]
    method: str | None
    status: Status
    final_loss: float | None = None
    evaluation: Mapping[str, float] = field(default_factory=dict)
    nfe: float | None = None
    wall_time_s: float | None = None
    error: str | None = None


def _job_dirs(sweep_dir: Path) -> list[Path]:
    """The job directories under `sweep_dir` (any depth: `hydra.sweep.subdir` may nest), in
    job order."""
    dirs = [p.parent.parent for p in sweep_dir.rglob(".hydra/overrides.yaml")]

    def order(path: Path) -> tuple[int, int, str]:
        name = path.relative_to(sweep_dir).as_posix()
        return (0, int(name), "") if name.isdigit() else (1, 0, name)

    return sorted(dirs, key=order)


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _last_nfe(metrics: Path) -> float | None:
    """The forward NFE of the last logged step that has one (tasks without a solve have none)."""
    if not metrics.exists():
        return None
    nfe = None
    for line in metrics.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line of a killed job
        if "nfe" in record:
            nfe = _float(record["nfe"])
    return nfe


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # not written, or half-written by a job killed at that moment


def read_job(job_dir: Path, sweep_dir: Path | None = None) -> JobRow:
    """The row of one job directory (Hydra's `.hydra/`, then `results.json`, `metrics.jsonl`
    and `error.txt`, whichever it wrote; the newer of the last two when a job was rerun)."""
    hydra_dir = job_dir / ".hydra"
    listed = OmegaConf.to_container(OmegaConf.load(hydra_dir / "overrides.yaml"))
    overrides: dict[str, str] = {}
    for item in listed if isinstance(listed, list) else []:
        key, _, value = str(item).partition("=")
        overrides[key] = value
    method = None
    if (hydra_dir / "config.yaml").exists():
        # Not resolved: the saved config refers to Hydra's runtime, which is gone.
        name = OmegaConf.select(OmegaConf.load(hydra_dir / "config.yaml"), "gradient.name")
        method = None if name is None else str(name)
    job = job_dir.relative_to(sweep_dir).as_posix() if sweep_dir is not None else job_dir.name
    nfe = _last_nfe(job_dir / "metrics.jsonl")
    results_path, error_path = job_dir / "results.json", job_dir / ERROR_FILE
    results = _read_json(results_path)
    failed = error_path.exists() and (
        results is None or error_path.stat().st_mtime >= results_path.stat().st_mtime
    )
    if failed:
        lines = error_path.read_text().strip().splitlines()
        error = lines[0] if lines else "(error.txt is empty)"
        return JobRow(job, overrides, method, "failed", nfe=nfe, error=error)
    if results is None:
        return JobRow(job, overrides, method, "incomplete", nfe=nfe)
    evaluation = {str(k): _float(v) for k, v in results.get("evaluation", {}).items()}
    return JobRow(
        job,
        overrides,
        method,
        "ok",
        final_loss=_float(results.get("final_loss")),
        evaluation={k: v for k, v in evaluation.items() if v is not None},
        nfe=nfe,
        wall_time_s=_float(results.get("wall_time")),
    )


def read_sweep(sweep_dir: str | Path) -> list[JobRow]:
    """Every job of a sweep directory, in job order."""
    sweep_dir = Path(sweep_dir)
    return [read_job(job, sweep_dir) for job in _job_dirs(sweep_dir)]


def _columns(rows: Sequence[JobRow]) -> tuple[list[str], list[str]]:
    """The overrides that differ between jobs (the swept ones; `gradient` is the method
    column) and the evaluation metrics any job has."""
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row.overrides if k not in keys)
    swept = [k for k in keys if k != "gradient" and len({row.overrides.get(k) for row in rows}) > 1]
    metrics: list[str] = []
    for row in rows:
        metrics.extend(k for k in row.evaluation if k not in metrics)
    return swept, metrics


def table(rows: Sequence[JobRow]) -> tuple[list[str], list[list[Any]]]:
    """The summary's header and rows (values as Python objects, `None` where absent)."""
    swept, metrics = _columns(rows)
    header = [
        "job",
        "method",
        *swept,
        "status",
        "final_loss",
        *(f"eval_{m}" for m in metrics),
        "nfe",
        "wall_time_s",
        "error",
    ]
    body = [
        [
            row.job,
            row.method,
            *(row.overrides.get(k) for k in swept),
            row.status,
            row.final_loss,
            *(row.evaluation.get(m) for m in metrics),
            row.nfe,
            row.wall_time_s,
            row.error,
        ]
        for row in rows
    ]
    return header, body


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def format_markdown(rows: Sequence[JobRow]) -> str:
    """The summary as a Markdown table."""
    header, body = table(rows)
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(_cell(v) for v in values) + " |" for values in body),
    ]
    return "\n".join(lines) + "\n"


def format_csv(rows: Sequence[JobRow]) -> str:
    """The summary as CSV, numbers at full precision."""
    header, body = table(rows)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in values] for values in body])
    return out.getvalue()


def _replace(path: Path, text: str) -> None:
    """Write atomically: a reader (or a job ending at the same time) never sees half a file."""
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(text)
    os.replace(partial, path)


@contextmanager
def _locked(sweep_dir: Path) -> Iterator[None]:
    """One writer at a time among the jobs of a sweep (parallel joblib or Slurm jobs)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: the atomic replace still keeps each file whole
        yield
        return
    with (sweep_dir / ".summary.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_summary(sweep_dir: str | Path) -> list[JobRow]:
    """Write `summary.md` and `summary.csv` in `sweep_dir` from its job directories.

    **Arguments:**

    - `sweep_dir`: a Hydra sweep directory (`multirun/<task>/<date>`, `hydra.sweep.dir`).

    **Returns:** the rows written.
    """
    sweep_dir = Path(sweep_dir)
    with _locked(sweep_dir):
        rows = read_sweep(sweep_dir)
        markdown, table_csv = SUMMARY_FILES
        _replace(sweep_dir / markdown, format_markdown(rows))
        _replace(sweep_dir / table_csv, format_csv(rows))
    return rows


def write_error(job_dir: Path, error: BaseException) -> None:
    """`error.txt`: the exception's one-line message first (the summary's error column), then
    its traceback."""
    message = str(error).strip().splitlines()
    first = f"{type(error).__name__}: {message[0]}" if message else type(error).__name__
    trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    (job_dir / ERROR_FILE).write_text(f"{first}\n\n{trace}")


class SweepSummary(Callback):
    """Hydra callback: `error.txt` for a failed job; in a sweep, `summary.md`/`summary.csv` in
    the sweep directory after every job and at the end."""

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        # A rerun job (the same sweep directory) is not failed until it fails again.
        (Path(str(config.hydra.runtime.output_dir)) / ERROR_FILE).unlink(missing_ok=True)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        job_dir = Path(str(config.hydra.runtime.output_dir))
        if job_return.status == JobStatus.FAILED and isinstance(
            job_return._return_value, BaseException
        ):
            write_error(job_dir, job_return._return_value)
        if config.hydra.mode == RunMode.MULTIRUN:
            write_summary(str(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if sweep_dir.is_dir():
            write_summary(sweep_dir)


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m adjoint_lab.app.summary SWEEP_DIR`: (re)write and print a sweep's table."""
    parser = argparse.ArgumentParser(
        prog="python -m adjoint_lab.app.summary",
        description="Write summary.md and summary.csv for a Hydra sweep directory.",
    )
    parser.add_argument("sweep_dir", type=Path, help="e.g. multirun/node_spiral/<date>")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        parser.error(f"{args.sweep_dir} is not a directory; pass a Hydra sweep directory")
    if not _job_dirs(args.sweep_dir):
        parser.error(
            f"{args.sweep_dir} holds no job directories (none has .hydra/overrides.yaml); "
            "pass the sweep directory itself, e.g. multirun/node_spiral/<date>"
        )
    rows = write_summary(args.sweep_dir)
    print(format_markdown(rows), end="")


if __name__ == "__main__":
    main()
