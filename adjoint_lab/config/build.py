"""The config boundary: names in configs become solver, controller and gradient objects here.

Nothing below this module sees a string naming a solver or a gradient method.
"""

from __future__ import annotations

from dataclasses import dataclass

import diffrax

from ..core.gradients import (
    AbstractGradientMethod,
    BacksolveAdjoint,
    CheckpointedBackprop,
    DirectBackprop,
)
from .errors import ConfigError
from .schema import ODE_GRADIENTS, GradientConfig, SolverConfig

_SOLVERS: dict[str, type[diffrax.AbstractSolver]] = {
    "euler": diffrax.Euler,
    "heun": diffrax.Heun,
    "midpoint": diffrax.Midpoint,
    "ralston": diffrax.Ralston,
    "bosh3": diffrax.Bosh3,
    "tsit5": diffrax.Tsit5,
    "dopri5": diffrax.Dopri5,
    "dopri8": diffrax.Dopri8,
    "kvaerno3": diffrax.Kvaerno3,
    "kvaerno4": diffrax.Kvaerno4,
    "kvaerno5": diffrax.Kvaerno5,
}


@dataclass(frozen=True)
class SolverSetup:
    """What `adjoint_lab.core.solve` takes: a solver, a step-size controller and dt0."""

    solver: diffrax.AbstractSolver
    controller: diffrax.AbstractStepSizeController
    dt0: float | None


def build_solver(config: SolverConfig) -> SolverSetup:
    solver = _SOLVERS[config.name]()
    if config.adaptive:
        controller = diffrax.PIDController(rtol=config.rtol, atol=config.atol)
    else:
        controller = diffrax.ConstantStepSize()
    return SolverSetup(solver=solver, controller=controller, dt0=config.dt0)


def build_gradient(config: GradientConfig) -> AbstractGradientMethod:
    if config.name not in ODE_GRADIENTS:
        raise ConfigError(
            "gradient.name",
            config.name,
            f"this experiment solves ODEs: choose one of {', '.join(ODE_GRADIENTS)}",
        )
    if config.name == "checkpointed":
        return CheckpointedBackprop(checkpoints=config.checkpoints, max_steps=config.max_steps)
    if config.name == "backsolve":
        return BacksolveAdjoint(
            seminorm=config.seminorm,
            rtol=config.adjoint_rtol,
            atol=config.adjoint_atol,
            max_steps=config.max_steps,
        )
    if config.name == "direct":
        return DirectBackprop(max_steps=config.max_steps)
    raise AssertionError(f"unvalidated gradient config {config.name!r}")
