"""A regular (non-editable) install runs `adjoint-lab` from any directory: the Hydra configs
ship inside the wheel (`pkg://adjoint_lab.configs`), not beside the source tree."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The default experiment for two steps, at the sizes of the CLI tests (tests/cli) so that the
# session's compilation cache already holds its training step.
OVERRIDES = ["train=quick", "train.steps=2", "train.progress=false", "data.n_train=16",
             "data.n_times=41"]  # fmt: skip
# `adjoint-lab`'s console script, preceded by where the package was imported from.
ENTRY = (
    "import sys, adjoint_lab; print('imported', adjoint_lab.__file__, flush=True);"
    "from adjoint_lab.__main__ import main; sys.argv[0] = 'adjoint-lab'; main()"
)


def _builds_wheels_offline() -> bool:
    """setuptools 70.1+ builds wheels itself; older versions need the `wheel` package."""
    try:
        version = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        return False
    major, minor = (int(part) for part in version.split(".")[:2])
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


def _run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)
    assert done.returncode == 0, f"{' '.join(command)}\n{done.stdout}\n{done.stderr}"
    return done


def test_a_wheel_install_runs_the_default_experiment_from_another_directory(tmp_path):
    if not _builds_wheels_offline():
        pytest.fail("building a wheel offline needs setuptools>=70.1: pip install -e '.[test]'")
    # Build from a copy of the sources: an in-tree build reuses build/, stale files included.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "adjoint_lab", source / "adjoint_lab", ignore=ignore)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    wheels = tmp_path / "wheels"
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)])
    (wheel,) = wheels.glob("adjoint_lab-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"adjoint_lab/configs/config.yaml", "adjoint_lab/configs/gradient/adjoint.yaml"} <= names

    target = tmp_path / "installed"
    _run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)])
    script = (target / "bin" / "adjoint-lab").read_text()
    assert "from adjoint_lab.__main__ import main" in script

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target), "JAX_PLATFORMS": "cpu"}
    env.pop("JAX_NUM_CPU_DEVICES", None)
    run_dir = tmp_path / "run"
    done = _run(
        [sys.executable, "-c", ENTRY, *OVERRIDES, f"hydra.run.dir={run_dir}"],
        cwd=elsewhere,
        env=env,
    )
    imported = Path(done.stdout.splitlines()[0].removeprefix("imported "))
    assert imported.is_relative_to(target), imported
    assert "node_spiral: 2 steps" in done.stdout
    assert (run_dir / "results.json").exists()
    assert list(elsewhere.iterdir()) == []
