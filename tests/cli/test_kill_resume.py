"""A quick run as a user launches it writes what it promises; the same run killed with SIGKILL
mid-way and restarted ends bit-identical to it. One test, because the uninterrupted run is both
the thing checked and the reference: each command is a fresh process (~16 s here)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from adjoint_lab.train import Checkpointer
from tests.cli.test_cli import QUICK, cli

STEPS = 12
ARGS = [*QUICK, f"train.steps={STEPS}", "train.checkpoint_every=3", "train.keep_checkpoints=4"]


def _final_params(run_dir: Path, step: int) -> dict[str, np.ndarray]:
    checkpointer = Checkpointer(run_dir / "checkpoints")
    state, meta = checkpointer.read(step)
    checkpointer.close()
    assert meta["step"] == step
    return state


def _saved_steps(checkpoints: Path) -> list[int]:
    # Orbax renames a step's directory into place once it is complete.
    if not checkpoints.exists():
        return []
    return sorted(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())


def test_quick_run_writes_its_outputs_and_a_sigkilled_run_resumes_bit_identical(tmp_path):
    reference = tmp_path / "reference"
    done = cli(*ARGS, f"hydra.run.dir={reference}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"node_spiral: {STEPS} steps" in done.stdout and "final loss" in done.stdout
    lines = (reference / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["step"] for r in records] == [5, 10, 12]  # every log_every, and the last
    assert all(np.isfinite(r["loss"]) for r in records)
    assert (reference / "curves.png").stat().st_size > 1000
    assert (reference / "trajectories.png").exists()
    assert _saved_steps(reference / "checkpoints") == [3, 6, 9, 12]  # keep_checkpoints=4
    assert (reference / ".hydra" / "config.yaml").exists()  # Hydra's record of the run
    # Outputs went to the configured directory only: no chdir, nothing in the cwd.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reference"]

    killed = tmp_path / "killed"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("JAX_NUM_CPU_DEVICES", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "adjoint_lab", *ARGS, f"hydra.run.dir={killed}"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while time.time() < deadline and not _saved_steps(killed / "checkpoints"):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    steps_at_kill = Checkpointer(killed / "checkpoints").steps()
    assert steps_at_kill and steps_at_kill[-1] < STEPS, steps_at_kill

    done = cli(*ARGS, f"hydra.run.dir={killed}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "resumed from step" in done.stdout
    got, want = _final_params(killed, STEPS), _final_params(reference, STEPS)
    assert got.keys() == want.keys() and len(got) > 3
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
