"""Command line: `python -m adjoint_lab experiment=NAME key=value ...` (or `adjoint-lab ...`).

A Hydra app: groups experiment, model, data, optim, solver, gradient, mesh, distributed, train;
`-m` sweeps; `--cfg job` prints the composed config; `--help` lists groups and options. The
configs ship inside the package (`pkg://adjoint_lab.configs`), so an installed copy runs from
any directory.
"""

from __future__ import annotations

import sys

import hydra
from hydra.errors import OverrideParseException
from omegaconf import DictConfig

from .app import (
    CONFIG_MODULE,
    composition_error,
    missing_plugin,
    register_configs,
    to_experiment_config,
)
from .config import ConfigError
from .train import MissingExtraError

# Errors a user fixes by changing input: printed as one line, exit status 2, no traceback.
_USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError,)


def _user_errors() -> tuple[type[BaseException], ...]:
    from .data.images import DatasetNotFoundError
    from .ssm.task import MemoryBudgetError
    from .train import CheckpointError, MissingExtraError, NonFiniteLossError

    return (
        *_USER_ERRORS,
        CheckpointError,
        NonFiniteLossError,
        DatasetNotFoundError,
        MemoryBudgetError,
        MissingExtraError,
    )


def _fail(error: BaseException) -> None:
    print(f"adjoint-lab: error: {error}", file=sys.stderr)
    sys.exit(2)


def _in_sweep() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}", config_name="config")
def _app(cfg: DictConfig) -> float:
    """One run; returns its `objective` (what Hydra's Optuna sweeper minimises)."""
    try:
        config = to_experiment_config(cfg)
        from .run import run

        summary = run(config)
    except _user_errors() as error:
        if _in_sweep():
            # Hydra records the job as failed (error.txt, a failed row of the sweep's summary)
            # and its other jobs still run; exiting here would end the whole sweep.
            raise
        _fail(error)
    return float(summary["objective"])


def _check_composition(argv: list[str]) -> None:
    """Compose and validate a single run's config first, so that a bad value or an option its
    section lacks (Hydra's struct error, e.g. `gradient=adjoint gradient.checkpoints=3`) is one
    line of ours, exit status 2, before Hydra makes a run directory. Anything else is left to
    Hydra (its help, sweeps, and its own errors)."""
    from hydra import compose, initialize_config_module
    from hydra._internal.utils import get_args_parser
    from hydra.errors import ConfigCompositionException

    try:
        args = get_args_parser().parse_args(argv)
    except SystemExit:
        return  # Hydra reports bad flags itself
    special = (args.help, args.hydra_help, args.info, args.shell_completion, args.multirun)
    custom = (args.config_path, args.config_dir, args.config_name)
    if any(special) or any(c is not None for c in custom):
        return
    overrides = list(args.overrides)
    if not any(o.startswith("run_dir=") for o in overrides):
        overrides.append("run_dir=unused")  # Hydra's run directory does not exist yet
    with initialize_config_module(version_base="1.3", config_module=CONFIG_MODULE):
        try:
            composed = compose("config", overrides=overrides)
        except ConfigCompositionException as error:
            explained = composition_error(error, overrides)
            if explained is not None:
                _fail(explained)
            return
    try:
        to_experiment_config(composed)
    except ConfigError as error:
        _fail(error)


def main() -> None:
    register_configs()
    try:
        missing = missing_plugin([a for a in sys.argv[1:] if not a.startswith("-")])
    except OverrideParseException:  # Hydra reports it below, in its own words
        missing = None
    if missing is not None:
        _fail(MissingExtraError(missing))
    _check_composition(sys.argv[1:])
    _app()


if __name__ == "__main__":
    main()
