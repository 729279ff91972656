"""The command line as a user runs it: a fresh Python process per command, or, for commands
that stop before a job runs (refusals, `--help`, `--cfg`), the same entry point called in this
process. The quick run's outputs are checked in test_kill_resume.py, whose reference it is."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from adjoint_lab.app import build_task, compose_config, summary
from adjoint_lab.core import assert_tree_allclose

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


def in_process(*args: str, cwd: Path) -> tuple[int, str, str]:
    """`adjoint-lab <args>` through the console script's own `main`, in this process: its exit
    status, stdout and stderr. For commands that stop before Hydra runs a job (a refusal,
    `--help`, `--cfg`): a process each would spend its seconds importing JAX to print a few
    lines."""
    from contextlib import chdir, redirect_stderr, redirect_stdout
    from unittest import mock

    from adjoint_lab.__main__ import main

    # Hydra's logging set-up (logging.config.dictConfig) closes the handlers it finds, and
    # one of them, installed at import, writes to the stderr pytest captured then: skip it.
    # These commands log nothing.
    out, err = io.StringIO(), io.StringIO()
    argv = ["adjoint-lab", *args]
    no_logging = mock.patch("hydra._internal.logging_config.configure_logging")
    with (
        chdir(cwd),
        mock.patch.object(sys, "argv", argv),
        no_logging,
        redirect_stdout(out),
        redirect_stderr(err),
    ):
        try:
            main()
            status = 0
        except SystemExit as exit_:
            code = exit_.code
            status = code if isinstance(code, int) else int(code is not None)
    return status, out.getvalue(), err.getvalue()


def refused(*args: str, cwd: Path) -> tuple[int, str]:
    """The exit status and stderr of a command that must stop before Hydra runs a job."""
    status, _, err = in_process(*args, cwd=cwd)
    assert status != 0, f"adjoint-lab {' '.join(args)} ran instead of being refused"
    return status, err


def test_bad_value_is_one_line_and_nonzero(tmp_path):
    status, err = refused("optim.lr=-1", cwd=tmp_path)
    assert status == 2
    assert err.strip().splitlines() == ["adjoint-lab: error: optim.lr=-1.0 is invalid: must be > 0"]
    # Refused once the job has started (the devices are known only then), in a process of its
    # own as a user meets it.
    done = cli("mesh.shape=[64]", f"hydra.run.dir={tmp_path / 'r'}", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().startswith(
        "adjoint-lab: error: mesh.shape=[64] is invalid: needs 64"
    )
    assert "Traceback" not in done.stderr


def test_an_option_a_section_lacks_is_one_line_naming_what_it_takes(tmp_path):
    status, err = refused("optim.learning_rate=0.1", cwd=tmp_path)
    assert status == 2
    assert err.strip().splitlines() == [
        "adjoint-lab: error: optim.learning_rate=0.1 is invalid: optim takes name, lr, "
        "weight_decay, momentum, b1, b2, schedule, warmup_steps, decay_boundaries, "
        "decay_factor, clip_norm"
    ]


def test_a_gradient_option_the_method_does_not_take_is_refused(tmp_path):
    # `checkpointed` exists for ODE tasks and the SSM task, with different options.
    status, err = refused("gradient=checkpointed", "gradient.chunk=8", cwd=tmp_path)
    assert status == 2
    assert err.strip().splitlines() == [
        "adjoint-lab: error: gradient.chunk=8 is invalid: gradient=checkpointed takes "
        "checkpoints, max_steps for the node_spiral task"
    ]
    argv = ("experiment=ssm_lm", "gradient=adjoint", "gradient.checkpoints=3")
    status, err = refused(*argv, cwd=tmp_path)
    assert status == 2
    assert err.strip().splitlines() == [
        "adjoint-lab: error: gradient.checkpoints=3 is invalid: gradient=adjoint takes "
        "loss_chunk, schedule, chunk (checkpoints is an option of gradient=checkpointed, "
        "interpolating)"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # refused before any run started


def test_cfg_job_and_help(tmp_path):
    status, out, _ = in_process("--cfg", "job", "gradient=backsolve", cwd=tmp_path)
    assert status == 0
    assert "name: backsolve" in out and "task: node_spiral" in out
    status, out, _ = in_process("--help", cwd=tmp_path)
    assert status == 0
    gradient_line = next(line for line in out.splitlines() if line.startswith("gradient:"))
    listed = {name.strip() for name in gradient_line.removeprefix("gradient:").split(",")}
    assert {"backsolve", "checkpointed", "direct", "adjoint", "truncated"} <= listed
    assert "adjoint-lab" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing ran, nothing written


def test_multirun_sweeps_gradient_methods_in_parallel_into_one_table(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    done = cli(
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        # A bad value fails its jobs alone: the others still run, and the table shows them.
        "train.steps=2,0",
        "gradient=checkpointed,backsolve",
        "train.log_every=1",
        *QUICK[1:],
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stderr  # Hydra fails a sweep with a failed job
    assert "Joblib.Parallel(n_jobs=2" in done.stdout + done.stderr
    spans, trained = [], {}
    for job, method in (("0", "checkpointed"), ("1", "backsolve")):
        job_dir = sweep / job
        assert f"gradient={method}" in (job_dir / ".hydra" / "overrides.yaml").read_text()
        results = json.loads((job_dir / "results.json").read_text())
        assert results["steps"] == 2 and np.isfinite(results["final_loss"])
        lines = (job_dir / "metrics.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        trained[method] = (results, records[-1]["nfe"])
        # Hydra writes .hydra/ as a job starts, fit writes results.json as it ends.
        spans.append(
            ((job_dir / ".hydra").stat().st_mtime, (job_dir / "results.json").stat().st_mtime)
        )
    (start0, end0), (start1, end1) = spans
    assert start1 < end0 and start0 < end1, "the two jobs did not run at the same time"
    for job in ("2", "3"):
        error = (sweep / job / "error.txt").read_text()
        assert error.startswith("ConfigError: train.steps=0 is invalid: must be > 0\n")
        assert "Traceback" in error and not (sweep / job / "results.json").exists()

    with (sweep / "summary.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == [
        "job", "method", "train.steps", "status", "final_loss", "eval_mse", "nfe",
        "wall_time_s", "error",
    ]  # fmt: skip
    assert [(r["job"], r["method"], r["train.steps"], r["status"]) for r in rows] == [
        ("0", "checkpointed", "2", "ok"),
        ("1", "backsolve", "2", "ok"),
        ("2", "checkpointed", "0", "failed"),
        ("3", "backsolve", "0", "failed"),
    ]
    for row in rows[:2]:
        results, nfe = trained[row["method"]]
        assert float(row["final_loss"]) == results["final_loss"]
        assert float(row["eval_mse"]) == results["evaluation"]["mse"]
        assert float(row["wall_time_s"]) == results["wall_time"]
        assert float(row["nfe"]) == nfe
    # One forward solve, differentiated two ways: the same forward NFE, a whole number.
    assert rows[0]["nfe"] == rows[1]["nfe"] and float(rows[0]["nfe"]) >= 10
    assert float(rows[0]["nfe"]).is_integer()
    assert {r["error"] for r in rows[2:]} == {"ConfigError: train.steps=0 is invalid: must be > 0"}
    markdown = (sweep / "summary.md").read_text()
    assert markdown.splitlines()[2].startswith("| 0 | checkpointed | 2 | ok | ")

    # The same table by hand, from the sweep directory.
    (sweep / "summary.md").unlink()
    summary.main([str(sweep)])
    assert capsys.readouterr().out == markdown == (sweep / "summary.md").read_text()


# Tiny data, and an adaptive solve tight enough that the continuous adjoint (backsolve) and
# the discretise-then-optimise methods agree closely.
TINY = (
    "train.batch_size=2",
    "data.n_train=2",
    "data.n_test=1",
    "data.n_times=21",
    "data.window=4",
    "model.width=8",
    "model.depth=1",
    "solver=dopri5",
    "solver.adaptive=true",
    "solver.rtol=1e-10",
    "solver.atol=1e-10",
)


def _gradient(*overrides: str):
    """The loss and its gradient at step 0 of the task `adjoint-lab <overrides>` would run."""
    config = compose_config(*TINY, *overrides)
    task = build_task(config)
    params = task.init(jax.random.PRNGKey(0))
    batch = task.batch(0)

    # Jitted: un-jitted, every operation around the solve compiles as a program of its own.
    @jax.jit
    def loss(p):
        return task.loss(p, batch, jax.random.PRNGKey(1))[0]

    return loss, params, jax.jit(jax.grad(loss))(params)


def test_the_command_lines_gradient_methods_give_the_same_gradient():
    loss, params, checkpointed = _gradient("gradient=checkpointed")
    assert jax.tree.leaves(params)[0].dtype == jnp.float64
    _, _, backsolve = _gradient(
        "gradient=backsolve", "gradient.adjoint_rtol=1e-10", "gradient.adjoint_atol=1e-10"
    )
    # `direct` differentiates the same discretisation as `checkpointed`: core's
    # test_gradients.py compares the two, and test_gradient_schemas.py that the command line
    # builds it; a third trace of this solve here would add ten seconds and no check.
    # The continuous adjoint: equal up to the solver tolerances.
    assert_tree_allclose(backsolve, checkpointed, rtol=1e-6, atol=1e-9)
    # And the right gradient: a central difference along a random direction.
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(2), len(leaves))
    direction = tree.unflatten(
        [jax.random.normal(k, x.shape) for k, x in zip(keys, leaves, strict=True)]
    )
    eps = 1e-6
    shifted = [jax.tree.map(lambda p, d, s=s: p + s * eps * d, params, direction) for s in (1, -1)]
    numeric = (loss(shifted[0]) - loss(shifted[1])) / (2 * eps)
    analytic = sum(jax.tree.leaves(jax.tree.map(jnp.vdot, checkpointed, direction)))
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6)
