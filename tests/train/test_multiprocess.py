"""Two JAX processes on localhost (jax.distributed) train like one process with 4 devices, and
give the SSM layer layout's single-device gradients with the layers split across processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

from adjoint_lab.config.schema import MeshConfig, OptimConfig, TrainConfig
from adjoint_lab.train import Checkpointer, fit, make_mesh, make_optimizer
from tests.helpers import regression_task
from tests.ssm.test_layouts import assert_layouts_match_one_device

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_match_one(tmp_path):
    port = _free_port()
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    env.pop("JAX_NUM_CPU_DEVICES", None)
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.train.multiprocess_worker",
                str(i),
                "2",
                str(port),
                str(tmp_path / "multi"),
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [w.communicate(timeout=300) for w in workers]
    for worker, (_out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err[-3000:]
    assert "devices 4, mesh {'data': 4}" in outputs[0][0]
    multi = np.load(tmp_path / "multi" / "params0.npz")
    other = np.load(tmp_path / "multi" / "params1.npz")

    train = TrainConfig(
        steps=6, batch_size=8, log_every=2, eval_every=6, checkpoint_every=3, progress=False
    )
    single = fit(
        regression_task(),
        make_optimizer(OptimConfig(name="adam", lr=0.1), train.steps),
        train,
        tmp_path / "single",
        seed=3,
        mesh=make_mesh(MeshConfig(axes=("data",), shape=(4,))),
    )
    for name in ("w", "b"):
        np.testing.assert_allclose(multi[name], np.asarray(single.params[name]), rtol=1e-12)
        np.testing.assert_array_equal(multi[name], other[name])
    # Both processes wrote one orbax checkpoint between them.
    assert Checkpointer(tmp_path / "multi" / "checkpoints").steps() == [3, 6]
    # The layer layout across the two processes: its ppermutes cross a process boundary.
    # (tests/ssm/test_layouts.py::test_two_processes_match_one, slow, adds the sequence one.)
    assert_layouts_match_one_device(tmp_path / "multi", ("layer",))
