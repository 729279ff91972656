"""The config boundary of the ODE solve: solver and gradient sections become `core` objects.

Nothing below this module sees a string naming a solver or an ODE gradient method. It sits in
`config` (which may import `core` only) so that a task built without an explicit integrator can
fall back to its config without importing the application layer; the application layer
(`adjoint_lab.app.build`) builds every run's objects through it.
"""

from __future__ import annotations

from collections.abc import Callable

import diffrax

from ..core.gradients import (
    AbstractGradientMethod,
    BacksolveAdjoint,
    CheckpointedBackprop,
    DirectBackprop,
    GaussAdjoint,
    InterpolatingAdjoint,
    QuadratureAdjoint,
    ReversibleAdjoint,
)
from ..core.ode import Integrator
from ..core.reversible import Reversible, ReversibleHeun
from .errors import ConfigError
from .schema import (
    ODE_GRADIENTS,
    BacksolveConfig,
    CheckpointedConfig,
    DirectConfig,
    GaussConfig,
    GradientConfig,
    InterpolatingConfig,
    QuadratureConfig,
    ReversibleConfig,
    SolverConfig,
)

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

_ODE_METHODS: dict[type[GradientConfig], Callable[..., AbstractGradientMethod]] = {
    CheckpointedConfig: lambda c: CheckpointedBackprop(
        checkpoints=c.checkpoints, max_steps=c.max_steps
    ),
    BacksolveConfig: lambda c: BacksolveAdjoint(
        seminorm=c.seminorm, rtol=c.adjoint_rtol, atol=c.adjoint_atol, max_steps=c.max_steps
    ),
    DirectConfig: lambda c: DirectBackprop(max_steps=c.max_steps),
    ReversibleConfig: lambda c: ReversibleAdjoint(max_steps=c.max_steps),
    InterpolatingConfig: lambda c: InterpolatingAdjoint(
        checkpoints=c.checkpoints, rtol=c.adjoint_rtol, atol=c.adjoint_atol, max_steps=c.max_steps
    ),
    QuadratureConfig: lambda c: QuadratureAdjoint(
        nodes=c.nodes, rtol=c.adjoint_rtol, atol=c.adjoint_atol, max_steps=c.max_steps
    ),
    GaussConfig: lambda c: GaussAdjoint(
        nodes=c.nodes, rtol=c.adjoint_rtol, atol=c.adjoint_atol, max_steps=c.max_steps
    ),
}


def build_gradient(config: GradientConfig) -> AbstractGradientMethod:
    """The `core` gradient method of an ODE task's `gradient` section.

    **Arguments:**

    - `config`: a `CheckpointedConfig`, `BacksolveConfig` or `DirectConfig`.

    **Returns:**

    The matching `AbstractGradientMethod`. Raises `ConfigError` for an SSM method.
    """
    make = _ODE_METHODS.get(type(config))
    if make is None:
        raise ConfigError(
            "gradient.name",
            getattr(config, "name", config),
            f"this experiment solves ODEs: choose one of {', '.join(ODE_GRADIENTS)}",
        )
    return make(config)


def build_integrator(solver: SolverConfig, gradient: GradientConfig | None = None) -> Integrator:
    """The solver bundle of the `solver` and `gradient` sections.

    **Arguments:**

    - `solver`: the `solver` section: a PID controller when `adaptive`, else constant steps.
    - `gradient`: the `gradient` section of an ODE task; `None` keeps `Integrator`'s default
        (`CheckpointedBackprop()`).

    **Returns:**

    A `core.Integrator`.
    """
    if solver.adaptive:
        controller = diffrax.PIDController(rtol=solver.rtol, atol=solver.atol)
    else:
        controller = diffrax.ConstantStepSize()
    parts = {} if gradient is None else {"gradient": build_gradient(gradient)}
    method = _SOLVERS[solver.name]()
    if isinstance(gradient, ReversibleConfig):
        # The reversible adjoint needs a reversible solver: the configured one, made reversible.
        if gradient.reversible_heun:
            if solver.name != "heun":
                raise ConfigError(
                    "gradient.reversible_heun",
                    True,
                    f"reversible Heun replaces solver=heun, not solver={solver.name}; "
                    "set solver=heun, or drop reversible_heun to wrap the solver in Reversible",
                )
            method = ReversibleHeun()
        else:
            method = Reversible(method, coupling=gradient.coupling)
    return Integrator(solver=method, controller=controller, dt0=solver.dt0, **parts)
