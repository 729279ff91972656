"""Structured-config schemas: frozen dataclasses that Hydra composes and type-checks.

Every section has a `validate()` that raises `ConfigError` naming the field and the allowed
values. Hydra's own machinery handles unknown keys and group options; these checks handle values
that type-check but make no sense (a negative learning rate, an unknown solver name, ...).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError, require, require_one_of

SOLVERS = (
    "euler",
    "heun",
    "midpoint",
    "ralston",
    "bosh3",
    "tsit5",
    "dopri5",
    "dopri8",
    "kvaerno3",
    "kvaerno4",
    "kvaerno5",
)
ODE_GRADIENTS = ("checkpointed", "backsolve", "direct")
# Gradient methods of the SSM language model (`adjoint_lab.ssm.METHODS`); `checkpointed` is
# shared: binomial checkpoints for an ODE solve, chunk boundary states for an SSM.
SSM_GRADIENTS = ("backprop", "remat", "adjoint_paper", "adjoint", "truncated", "checkpointed")
GRADIENTS = tuple(dict.fromkeys(ODE_GRADIENTS + SSM_GRADIENTS))
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "warmup_cosine", "step")


@dataclass(frozen=True)
class OptimConfig:
    """optax optimiser and learning-rate schedule."""

    name: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.0
    b1: float = 0.9
    b2: float = 0.999
    schedule: str = "constant"
    warmup_steps: int = 0
    # `step` schedule: multiply the rate by `decay_factor` at each of these steps.
    decay_boundaries: tuple[int, ...] = ()
    decay_factor: float = 0.1
    # Clip updates to this global gradient norm; null disables clipping.
    clip_norm: float | None = None

    def validate(self) -> None:
        require_one_of("name", self.name, OPTIMIZERS)
        require(self.lr > 0, "lr", self.lr, "must be > 0")
        require(self.weight_decay >= 0, "weight_decay", self.weight_decay, "must be >= 0")
        require(0 <= self.momentum < 1, "momentum", self.momentum, "must be in [0, 1)")
        require(0 <= self.b1 < 1, "b1", self.b1, "must be in [0, 1)")
        require(0 <= self.b2 < 1, "b2", self.b2, "must be in [0, 1)")
        require_one_of("schedule", self.schedule, SCHEDULES)
        require(self.warmup_steps >= 0, "warmup_steps", self.warmup_steps, "must be >= 0")
        require(0 < self.decay_factor <= 1, "decay_factor", self.decay_factor, "must be in (0, 1]")
        bounds = list(self.decay_boundaries)
        require(
            bounds == sorted(bounds) and all(b > 0 for b in bounds),
            "decay_boundaries",
            self.decay_boundaries,
            "must be increasing positive step numbers",
        )
        require(
            self.clip_norm is None or self.clip_norm > 0,
            "clip_norm",
            self.clip_norm,
            "must be > 0, or null to disable clipping",
        )


@dataclass(frozen=True)
class SolverConfig:
    """ODE solver and step-size control. `dt0` alone gives constant steps; `adaptive` a PID."""

    name: str = "tsit5"
    adaptive: bool = False
    dt0: float | None = 0.05
    rtol: float = 1e-5
    atol: float = 1e-6

    def validate(self) -> None:
        require_one_of("name", self.name, SOLVERS)
        require(
            self.dt0 is None or self.dt0 > 0,
            "dt0",
            self.dt0,
            "must be > 0 (or null with adaptive=true)",
        )
        require(
            self.adaptive or self.dt0 is not None,
            "dt0",
            self.dt0,
            "constant-step solves need dt0 > 0; set solver.dt0 or solver.adaptive=true",
        )
        require(self.rtol > 0, "rtol", self.rtol, "must be > 0")
        require(self.atol > 0, "atol", self.atol, "must be > 0")
        require(
            not (self.adaptive and self.name == "euler"),
            "name",
            self.name,
            "euler has no error estimate; use an embedded solver (heun, bosh3, tsit5, dopri5, ...)"
            " with adaptive=true, or adaptive=false",
        )


@dataclass(frozen=True)
class GradientConfig:
    """How gradients are computed: of an ODE solve (`adjoint_lab.core.gradients`) or of the
    SSM language model (`adjoint_lab.ssm.value_and_grad`)."""

    name: str = "checkpointed"
    # checkpointed: number of stored solver states (null: diffrax's default, about
    # sqrt(2 * max_steps)); all methods: the step budget of the solve.
    checkpoints: int | None = None
    max_steps: int = 4096
    # backsolve: the adjoint seminorm (Kidger, Chen & Lyons 2021) and the backward tolerances.
    seminorm: bool = False
    adjoint_rtol: float | None = None
    adjoint_atol: float | None = None
    # SSM: truncated: tokens each adjoint state sees; remat/checkpointed: tokens per chunk
    # (null: the power of two nearest sqrt(T)); adjoint_paper/truncated: "aggregated" (O(T))
    # or "literal" (the paper's O(T^2) double sum); all: tokens per chunk of the loss.
    window: int | None = None
    chunk: int | None = None
    form: str = "aggregated"
    loss_chunk: int | None = None

    def validate(self) -> None:
        require_one_of("name", self.name, GRADIENTS)
        require(
            (self.window is not None) == (self.name == "truncated"),
            "window",
            self.window,
            "gradient=truncated needs a window (tokens), and only it takes one",
        )
        require(
            self.chunk is None or self.name in ("remat", "checkpointed"),
            "chunk",
            self.chunk,
            "only applies to gradient=remat or checkpointed (SSM)",
        )
        require_one_of("form", self.form, ("aggregated", "literal"))
        require(
            self.form == "aggregated" or self.name in ("adjoint_paper", "truncated"),
            "form",
            self.form,
            "literal (the paper's double sum) only applies to gradient=adjoint_paper or truncated",
        )
        for name in ("window", "chunk", "loss_chunk"):
            value = getattr(self, name)
            require(value is None or value > 0, name, value, "must be > 0, or null")
        for name in ("seminorm", "adjoint_rtol", "adjoint_atol"):
            value = getattr(self, name)
            require(
                self.name == "backsolve" or value in (None, False),
                name,
                value,
                "only applies to gradient=backsolve",
            )
        require(self.max_steps > 0, "max_steps", self.max_steps, "must be > 0")
        require(
            self.checkpoints is None or self.checkpoints > 0,
            "checkpoints",
            self.checkpoints,
            "must be > 0, or null for diffrax's default",
        )
        for name in ("adjoint_rtol", "adjoint_atol"):
            value = getattr(self, name)
            require(value is None or value > 0, name, value, "must be > 0, or null")


@dataclass(frozen=True)
class MeshConfig:
    """A device mesh: axis names and sizes; -1 takes all the devices the other axes leave."""

    axes: tuple[str, ...] = ("data",)
    shape: tuple[int, ...] = (-1,)
    # Simulated host devices (jax_num_cpu_devices), applied before JAX starts; null leaves the
    # platform's own device count.
    cpu_devices: int | None = None

    def validate(self) -> None:
        require(len(self.axes) > 0, "axes", self.axes, "give at least one axis name")
        require(
            len(set(self.axes)) == len(self.axes), "axes", self.axes, "axis names must be unique"
        )
        require(
            len(self.shape) == len(self.axes),
            "shape",
            self.shape,
            f"needs one size per axis ({len(self.axes)} axes: {', '.join(self.axes)})",
        )
        require(
            all(s == -1 or s > 0 for s in self.shape),
            "shape",
            self.shape,
            "sizes must be positive, or -1 for 'all remaining devices'",
        )
        require(
            sum(s == -1 for s in self.shape) <= 1,
            "shape",
            self.shape,
            "at most one axis may be -1",
        )
        require(
            self.cpu_devices is None or self.cpu_devices > 0,
            "cpu_devices",
            self.cpu_devices,
            "must be > 0, or null",
        )


@dataclass(frozen=True)
class DistributedConfig:
    """`jax.distributed.initialize` arguments; all null with enabled=true auto-detects (Slurm)."""

    enabled: bool = False
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    initialization_timeout: int = 300

    def validate(self) -> None:
        if self.num_processes is not None:
            require(self.num_processes > 0, "num_processes", self.num_processes, "must be > 0")
        if self.process_id is not None:
            limit = self.num_processes if self.num_processes is not None else float("inf")
            require(
                0 <= self.process_id < limit,
                "process_id",
                self.process_id,
                "must be in [0, num_processes)",
            )


@dataclass(frozen=True)
class TrainConfig:
    """The shared training loop: length, batch, logging and checkpoint policy."""

    steps: int = 300
    batch_size: int = 16
    log_every: int = 10
    eval_every: int = 100
    checkpoint_every: int = 100
    keep_checkpoints: int = 3
    # Resume from the latest checkpoint of the run directory (auto) or from a given checkpoint
    # directory (a path); `false` refuses to start over an existing checkpoint.
    resume: str = "auto"
    progress: bool = True

    def validate(self) -> None:
        for name in ("steps", "batch_size", "log_every", "eval_every", "checkpoint_every"):
            value = getattr(self, name)
            require(value > 0, name, value, "must be > 0")
        require(self.keep_checkpoints > 0, "keep_checkpoints", self.keep_checkpoints, "must be > 0")
        require(
            self.resume != "",
            "resume",
            self.resume,
            "use auto, false, or the path of a checkpoint directory",
        )


@dataclass(frozen=True)
class ExperimentConfig:
    """The root of every run. `model` and `data` take the schema of the chosen group option."""

    task: str = "node_spiral"
    seed: int = 0
    # Where outputs go; Hydra's run directory by default (set in config.yaml).
    run_dir: str = "runs/default"
    model: Any = None
    data: Any = None
    optim: OptimConfig = field(default_factory=OptimConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    gradient: GradientConfig = field(default_factory=GradientConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def validate(config: Any, prefix: str = "") -> None:
    """Validate a config tree, raising `ConfigError` with the dotted path of the first bad field."""
    if not dataclasses.is_dataclass(config):
        return
    if hasattr(config, "validate"):
        try:
            config.validate()
        except ConfigError as error:
            raise (error.under(prefix) if prefix else error) from None
    for f in dataclasses.fields(config):
        child = getattr(config, f.name)
        validate(child, f"{prefix}.{f.name}" if prefix else f.name)


def freeze(config: Any) -> Any:
    """Turn the lists OmegaConf produces into tuples, so frozen configs are hashable."""
    if dataclasses.is_dataclass(config):
        for f in dataclasses.fields(config):
            object.__setattr__(config, f.name, freeze(getattr(config, f.name)))
        return config
    if isinstance(config, list | tuple):
        return tuple(freeze(item) for item in config)
    if isinstance(config, dict):
        return {key: freeze(value) for key, value in config.items()}
    return config
