"""Sweeps beyond Hydra's basic launcher: the Optuna search, the Slurm config, the objective a
run returns to a sweeper. (The parallel joblib sweep and its summary table are in
test_cli.py, with the other command lines.)"""

from __future__ import annotations

import csv
import json

import pytest
from hydra import compose, initialize_config_module
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict, read_write

from adjoint_lab.__main__ import _app
from adjoint_lab.app import CONFIG_MODULE, compose_config, register_configs, to_experiment_config
from adjoint_lab.config import ConfigError
from adjoint_lab.run import objective_value

from .test_cli import QUICK, cli

TRIAL = ("train.steps=2", "train.log_every=1", *QUICK[1:])
# One step of a tiny model, for what runs in the test process.
TINY = ("train=quick", "train.steps=1", "train.progress=false", "train.batch_size=4",
        "data.n_train=4", "data.n_test=1", "data.n_times=21", "data.window=4",
        "model.width=8", "model.depth=1")  # fmt: skip


@pytest.mark.slow
def test_optuna_search_minimises_the_evaluation_over_lr_and_rtol(tmp_path):
    sweep = tmp_path / "sweep"
    done = cli(
        "hparams_search=node_spiral_optuna",
        "hydra.sweeper.n_trials=2",
        *TRIAL,
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    trials = []
    for job in ("0", "1"):
        overrides = dict(
            item.split("=", 1) for item in OmegaConf.load(sweep / job / ".hydra" / "overrides.yaml")
        )
        lr, rtol = float(overrides["optim.lr"]), float(overrides["solver.rtol"])
        assert 1e-3 <= lr <= 5e-2 and 1e-6 <= rtol <= 1e-2
        config = OmegaConf.load(sweep / job / ".hydra" / "config.yaml")
        assert config.objective == "eval_mse" and config.solver.adaptive is True
        assert config.optim.lr == lr and config.solver.rtol == rtol
        mse = json.loads((sweep / job / "results.json").read_text())["evaluation"]["mse"]
        trials.append((mse, lr, rtol))
    assert trials[0][1:] != trials[1][1:]  # two different points of the search space
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    mse, lr, rtol = min(trials)
    assert best.best_value == pytest.approx(mse, rel=1e-12)
    assert best.best_params["optim.lr"] == pytest.approx(lr, rel=1e-12)
    assert best.best_params["solver.rtol"] == pytest.approx(rtol, rel=1e-12)
    # A successful sweep's table, written at its end.
    with (sweep / "summary.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert [float(r["eval_mse"]) for r in rows] == [t[0] for t in trials]
    assert [float(r["optim.lr"]) for r in rows] == [t[1] for t in trials]


def test_optuna_search_config_sweeps_lr_and_rtol_of_the_default_experiment():
    register_configs()
    with initialize_config_module(version_base="1.3", config_module=CONFIG_MODULE):
        composed = compose(
            "config",
            overrides=["hparams_search=node_spiral_optuna", "run_dir=unused"],
            return_hydra_config=True,
        )
    sweeper = composed.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "minimize"
    assert dict(sweeper.params) == {
        "optim.lr": "tag(log, interval(1e-3, 5e-2))",
        "solver.rtol": "tag(log, interval(1e-6, 1e-2))",
    }
    assert composed.hydra.mode == RunMode.MULTIRUN
    with read_write(composed), open_dict(composed):
        del composed["hydra"]
    config = to_experiment_config(composed)
    assert config.task == "node_spiral" and config.objective == "eval_mse"
    assert config.solver.adaptive


def test_the_app_returns_the_configured_objective(tmp_path):
    """What the Hydra main returns is what a sweeper minimises: here the final evaluation's
    metric (objective=eval_mse), not the final loss (the default)."""
    register_configs()
    overrides = [*TINY, "objective=eval_mse", f"run_dir={tmp_path}"]
    with initialize_config_module(version_base="1.3", config_module=CONFIG_MODULE):
        composed = compose("config", overrides=overrides)
    value = _app(composed)
    results = json.loads((tmp_path / "results.json").read_text())
    assert value == results["evaluation"]["mse"] and value != results["final_loss"]


def test_an_objective_the_task_does_not_evaluate_is_refused():
    summary = {"task": "node_spiral", "final_loss": 0.5, "evaluation": {"mse": 0.25}}
    assert objective_value("final_loss", summary) == 0.5
    assert objective_value("eval_mse", summary) == 0.25
    with pytest.raises(ConfigError) as caught:
        objective_value("eval_accuracy", summary)
    assert str(caught.value) == (
        "objective='eval_accuracy' is invalid: the node_spiral task evaluates final_loss, eval_mse"
    )
    with pytest.raises(ConfigError, match=r"^objective='mse' is invalid: use final_loss, or eval_"):
        compose_config("objective=mse")


def test_slurm_cluster_config_submits_one_distributed_job_per_sweep_point():
    register_configs()
    with initialize_config_module(version_base="1.3", config_module=CONFIG_MODULE):
        composed = compose(
            "config",
            overrides=["cluster=slurm", "hydra.launcher.gpus_per_node=4", "run_dir=unused"],
            return_hydra_config=True,
        )
    launcher = composed.hydra.launcher
    assert launcher._target_ == (
        "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    )
    assert launcher.gpus_per_node == 4 and launcher.nodes == 1
    assert composed.hydra.mode == RunMode.MULTIRUN
    assert OmegaConf.to_container(composed.hydra.launcher, resolve=False)["submitit_folder"] == (
        "${hydra.sweep.dir}/.submitit/%j"
    )
    with read_write(composed), open_dict(composed):
        del composed["hydra"]
    config = to_experiment_config(composed)
    # jax.distributed with every field null: JAX reads the job's layout from Slurm.
    assert config.distributed.enabled
    assert config.distributed.coordinator_address is None
    assert config.distributed.num_processes is None and config.distributed.process_id is None


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["hparams_search=node_spiral_optuna"], "hparams_search=node_spiral_optuna"),
        (["-m", "cluster=slurm", "train.steps=2"], "cluster=slurm"),
        (["-m", "hydra/launcher=joblib", "optim.lr=1e-3,1e-2"], "hydra/launcher=joblib"),
    ],
)
def test_a_missing_sweeps_plugin_is_one_line_naming_the_extra(argv, names, monkeypatch, capsys):
    import importlib.util

    import adjoint_lab.__main__ as cli_main

    find_spec = importlib.util.find_spec
    hidden = lambda name, *a, **k: (
        None if name.startswith("hydra_plugins.") else find_spec(name, *a, **k)
    )
    monkeypatch.setattr(importlib.util, "find_spec", hidden)
    monkeypatch.setattr("sys.argv", ["adjoint-lab", *argv])
    with pytest.raises(SystemExit) as exit_info:
        cli_main.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"adjoint-lab: error: {names} uses Hydra's"), err
    assert "pip install 'adjoint_lab[sweeps]'" in err and "\n" not in err


def test_installed_sweeps_plugins_pass_the_plugin_check():
    from adjoint_lab.app import missing_plugin

    for argv in (
        ["hparams_search=node_spiral_optuna"],
        ["cluster=slurm"],
        ["hydra/launcher=joblib"],
    ):
        assert missing_plugin(argv) is None, argv
    assert missing_plugin(["gradient=adjoint,backsolve", "optim.lr=1e-3"]) is None
