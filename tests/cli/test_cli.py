"""The command line as a user runs it: a fresh Python process per command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
QUICK = ["train=quick", "train.progress=false", "data.n_train=16", "data.n_times=41"]


def cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})}
    environment.pop("JAX_NUM_CPU_DEVICES", None)
    return subprocess.run(
        [sys.executable, "-m", "adjoint_lab", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_quick_run_writes_metrics_plot_checkpoint_and_summary(tmp_path):
    run_dir = tmp_path / "run"
    done = cli(*QUICK, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "node_spiral: 20 steps" in done.stdout and "final loss" in done.stdout
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [5, 10, 15, 20]
    assert all(np.isfinite(r["loss"]) for r in records)
    assert (run_dir / "curves.png").stat().st_size > 1000
    assert (run_dir / "trajectories.png").exists()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["10", "20"]
    assert (run_dir / ".hydra" / "config.yaml").exists()  # Hydra's record of the run
    # Outputs went to the configured directory only: no chdir, nothing in the cwd.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_bad_value_is_one_line_and_nonzero(tmp_path):
    done = cli("optim.lr=-1", cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines == ["adjoint-lab: error: optim.lr=-1.0 is invalid: must be > 0"]
    done = cli("mesh.shape=[64]", f"hydra.run.dir={tmp_path / 'r'}", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().startswith(
        "adjoint-lab: error: mesh.shape=[64] is invalid: needs 64"
    )
    assert "Traceback" not in done.stderr


def test_unknown_key_gets_hydras_error(tmp_path):
    done = cli("optim.learning_rate=0.1", cwd=tmp_path)
    assert done.returncode == 1
    assert "Could not override 'optim.learning_rate'" in done.stderr


def test_cfg_job_and_help(tmp_path):
    done = cli("--cfg", "job", "gradient=backsolve", cwd=tmp_path)
    assert done.returncode == 0
    assert "name: backsolve" in done.stdout and "task: node_spiral" in done.stdout
    done = cli("--help", cwd=tmp_path)
    assert done.returncode == 0
    gradient_line = next(line for line in done.stdout.splitlines() if line.startswith("gradient:"))
    listed = {name.strip() for name in gradient_line.removeprefix("gradient:").split(",")}
    assert {"backsolve", "checkpointed", "direct", "adjoint", "truncated"} <= listed
    assert "adjoint-lab" in done.stdout


def test_multirun_sweeps_gradient_methods(tmp_path):
    done = cli(
        "-m",
        "gradient=checkpointed,backsolve",
        "train.steps=5",
        "train.log_every=5",
        *QUICK[1:],
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    losses = []
    for job in ("0", "1"):
        results = json.loads((tmp_path / "sweep" / job / "results.json").read_text())
        losses.append(results["final_loss"])
    # Same seed and data: the two gradient methods give nearly the same training run.
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-3)
