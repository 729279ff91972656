"""The package's annotations hold at run time: a subset of the suite under jaxtyping's import
hook with beartype (`ADJOINT_LAB_TYPECHECK=1`, tests/conftest.py), in a fresh process because
the hook acts on import.

Run everything that way with `ADJOINT_LAB_TYPECHECK=1 python -m pytest`; tests marked
`untyped` are skipped there (they pass ill-typed arguments on purpose, to test the package's
own error messages, which the hook pre-empts).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import pytest

REPO = Path(__file__).resolve().parents[1]
TYPECHECK = os.environ.get("ADJOINT_LAB_TYPECHECK", "0") == "1"
# Fast tests that call the annotated public functions of several layers.
SUBSET = (
    "tests/test_typecheck.py::test_a_wrong_shape_is_refused_under_the_hook",
    "tests/core/test_checks.py",
    "tests/config/test_config.py::test_every_experiment_composes_and_validates",
    "tests/config/test_config.py::test_type_errors_come_from_the_schema",
    "tests/parabolic/test_errors.py",
)


@pytest.mark.skipif(not TYPECHECK, reason="only under ADJOINT_LAB_TYPECHECK=1")
def test_a_wrong_shape_is_refused_under_the_hook():
    from jaxtyping import TypeCheckError

    from adjoint_lab.cnode import cross_entropy

    logits, labels = jnp.zeros((3, 5)), jnp.zeros((4,), int)
    with pytest.raises(TypeCheckError, match="batch"):
        cross_entropy(logits, labels)  # 3 rows of logits, 4 labels
    assert cross_entropy(logits, labels[:3]).shape == ()


@pytest.mark.skipif(TYPECHECK, reason="already under the hook")
def test_a_subset_of_the_suite_passes_under_jaxtyping_and_beartype():
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "ADJOINT_LAB_TYPECHECK": "1", "PYTHONPATH": path}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", *SUBSET],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    # The hook was on: the canary that only it makes pass ran and passed.
    assert f"PASSED {SUBSET[0]}" in done.stdout
