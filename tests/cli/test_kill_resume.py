"""A run killed with SIGKILL mid-way and restarted ends bit-identical to an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from adjoint_lab.train import Checkpointer
from tests.cli.test_cli import QUICK, cli

ARGS = [*QUICK, "train.steps=24", "train.checkpoint_every=3", "train.keep_checkpoints=10"]


def _final_params(run_dir: Path, step: int) -> dict[str, np.ndarray]:
    checkpointer = Checkpointer(run_dir / "checkpoints")
    state, meta = checkpointer.read(step)
    checkpointer.close()
    assert meta["step"] == step
    return state


def test_sigkill_then_resume_is_bit_identical(tmp_path):
    reference = tmp_path / "reference"
    done = cli(*ARGS, f"hydra.run.dir={reference}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr

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
    while time.time() < deadline and not (killed / "checkpoints" / "6").exists():
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    steps_at_kill = Checkpointer(killed / "checkpoints").steps()
    assert steps_at_kill and steps_at_kill[-1] < 24, steps_at_kill

    done = cli(*ARGS, f"hydra.run.dir={killed}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "resumed from step" in done.stdout
    got, want = _final_params(killed, 24), _final_params(reference, 24)
    assert got.keys() == want.keys() and len(got) > 3
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
