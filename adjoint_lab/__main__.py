"""Command line: `python -m adjoint_lab experiment=NAME key=value ...` (or `adjoint-lab ...`).

A Hydra app: groups experiment, model, data, optim, solver, gradient, mesh, distributed, train;
`-m` sweeps; `--cfg job` prints the composed config; `--help` lists groups and options.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from .config import ConfigError, register_configs, to_experiment_config

# Errors a user fixes by changing input: printed as one line, exit status 2, no traceback.
_USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError,)


def _user_errors() -> tuple[type[BaseException], ...]:
    from .data.images import DatasetNotFoundError
    from .ssm.task import MemoryBudgetError
    from .train import CheckpointError, NonFiniteLossError

    return (
        *_USER_ERRORS,
        CheckpointError,
        NonFiniteLossError,
        DatasetNotFoundError,
        MemoryBudgetError,
    )


@hydra.main(version_base="1.3", config_path="../configs", config_name="config")
def _app(cfg: DictConfig) -> float:
    try:
        config = to_experiment_config(cfg)
        from .run import run

        summary = run(config)
    except _user_errors() as error:
        print(f"adjoint-lab: error: {error}", file=sys.stderr)
        sys.exit(2)
    return float(summary["final_loss"])


def main() -> None:
    register_configs()
    _app()


if __name__ == "__main__":
    main()
