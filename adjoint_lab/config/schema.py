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
ODE_GRADIENTS = (
    "checkpointed",
    "backsolve",
    "direct",
    "reversible",
    "interpolating",
    "quadrature",
    "gauss",
)
# Gradient methods of the SSM language model (`adjoint_lab.ssm.METHODS`); `checkpointed` is
# shared: binomial checkpoints for an ODE solve, chunk boundary states for an SSM.
SSM_GRADIENTS = (
    "backprop",
    "remat",
    "adjoint_paper",
    "adjoint",
    "truncated",
    "checkpointed",
    "scan_backprop",
)
# The schedules of the SSM's single-device exact adjoint (`adjoint_lab.ssm.Chunkwise`,
# `StoredStreams`).
ADJOINT_SCHEDULES = ("chunkwise", "stored_streams")
GRADIENTS = tuple(dict.fromkeys(ODE_GRADIENTS + SSM_GRADIENTS))
# adjoint_paper/truncated: the O(T) aggregated sum, or the paper's O(T^2) double sum.
FORMS = ("aggregated", "literal")
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
    """Base of the `gradient` group: one schema per method, holding the options it takes.

    `name` is set by the group option (`gradient=backsolve`); each subclass's fields are the
    only options its method takes, so Hydra refuses any other key.
    """

    name: str = ""

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in _POSITIVE_OR_NULL:
                require(value is None or value > 0, f.name, value, "must be > 0, or null")

    @classmethod
    def options(cls) -> tuple[str, ...]:
        """The fields a user may set: every field but `name`."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.name != "name")


# Options that are a positive count or null (null: a default that follows the problem size).
_POSITIVE_OR_NULL = (
    "checkpoints",
    "adjoint_rtol",
    "adjoint_atol",
    "window",
    "chunk",
    "loss_chunk",
)


def _max_steps_positive(config: Any) -> None:
    require(config.max_steps > 0, "max_steps", config.max_steps, "must be > 0")


# --- Gradients of an ODE solve (`adjoint_lab.core.gradients`). ------------------------------


@dataclass(frozen=True)
class CheckpointedConfig(GradientConfig):
    """Backprop through the solver with binomial checkpointing (`core.CheckpointedBackprop`):
    `checkpoints` stored states (null: diffrax's default, about sqrt(2 * max_steps))."""

    name: str = "checkpointed"
    checkpoints: int | None = None
    max_steps: int = 4096

    def validate(self) -> None:
        super().validate()
        _max_steps_positive(self)


@dataclass(frozen=True)
class BacksolveConfig(GradientConfig):
    """The continuous adjoint solved backwards (`core.BacksolveAdjoint`), with the adjoint
    seminorm (Kidger, Chen & Lyons 2021) and the backward tolerances (null: the forward's)."""

    name: str = "backsolve"
    seminorm: bool = False
    adjoint_rtol: float | None = None
    adjoint_atol: float | None = None
    max_steps: int = 4096

    def validate(self) -> None:
        super().validate()
        _max_steps_positive(self)


@dataclass(frozen=True)
class DirectConfig(GradientConfig):
    """Backprop through nested checkpointed scans (`core.DirectBackprop`)."""

    name: str = "direct"
    max_steps: int = 4096

    def validate(self) -> None:
        super().validate()
        _max_steps_positive(self)


@dataclass(frozen=True)
class ReversibleConfig(GradientConfig):
    """Exact O(1)-memory gradients through an algebraically reversible solve
    (`core.ReversibleAdjoint`): the `solver` is wrapped in `core.Reversible` with `coupling`
    (McCallum & Foster 2024); `solver=heun` with `reversible_heun=true` uses reversible Heun."""

    name: str = "reversible"
    coupling: float = 0.999
    reversible_heun: bool = False
    max_steps: int = 4096

    def validate(self) -> None:
        super().validate()
        _max_steps_positive(self)
        require(0 < self.coupling <= 1, "coupling", self.coupling, "must be in (0, 1]")


@dataclass(frozen=True)
class InterpolatingConfig(GradientConfig):
    """The adjoint ODE solved backwards on the forward solve's dense interpolant
    (`core.InterpolatingAdjoint`); `checkpoints` bounds the stored interpolant (null: all)."""

    name: str = "interpolating"
    checkpoints: int | None = None
    adjoint_rtol: float | None = None
    adjoint_atol: float | None = None
    max_steps: int = 4096

    def validate(self) -> None:
        super().validate()
        _max_steps_positive(self)


@dataclass(frozen=True)
class QuadratureConfig(GradientConfig):
    """Only the adjoint state solved backwards; the parameter gradient by a separate
    quadrature with `nodes` points per step (`core.QuadratureAdjoint`)."""

    name: str = "quadrature"
    nodes: int = 3
    adjoint_rtol: float | None = None
    adjoint_atol: float | None = None
    max_steps: int = 4096

    def validate(self) -> None:
        super().validate()
        _max_steps_positive(self)
        require(self.nodes > 0, "nodes", self.nodes, "must be > 0")


@dataclass(frozen=True)
class GaussConfig(GradientConfig):
    """Only the adjoint state solved backwards; the parameter gradient by `nodes`-point
    Gauss-Legendre quadrature on the interpolants of each step (`core.GaussAdjoint`)."""

    name: str = "gauss"
    nodes: int = 3
    adjoint_rtol: float | None = None
    adjoint_atol: float | None = None
    max_steps: int = 4096

    def validate(self) -> None:
        super().validate()
        _max_steps_positive(self)
        require(self.nodes > 0, "nodes", self.nodes, "must be > 0")


# --- Gradients of the SSM language model (`adjoint_lab.ssm`). --------------------------------
# Every SSM method takes `loss_chunk`: tokens per chunk of the loss (null: 256 or the context).


@dataclass(frozen=True)
class BackpropConfig(GradientConfig):
    """`jax.grad` through the model (autodiff through the associative scan)."""

    name: str = "backprop"
    loss_chunk: int | None = None


@dataclass(frozen=True)
class ScanBackpropConfig(GradientConfig):
    """`jax.grad` through the model with the recurrences by `lax.scan` (a smaller tape than
    the associative scan's)."""

    name: str = "scan_backprop"
    loss_chunk: int | None = None


@dataclass(frozen=True)
class RematConfig(GradientConfig):
    """`jax.grad` with per-layer and time-chunk rematerialisation; `chunk` tokens per chunk
    (null: the power of two nearest sqrt(T))."""

    name: str = "remat"
    chunk: int | None = None
    loss_chunk: int | None = None


def _form_is_known(config: Any) -> None:
    require_one_of("form", config.form, FORMS)


@dataclass(frozen=True)
class AdjointPaperConfig(GradientConfig):
    """The paper's adjoint sharding estimator (Xu et al. 2025, Prop. 3); `form`: aggregated
    (O(T)) or literal (the paper's O(T^2) double sum)."""

    name: str = "adjoint_paper"
    form: str = "aggregated"
    loss_chunk: int | None = None

    def validate(self) -> None:
        super().validate()
        _form_is_known(self)


@dataclass(frozen=True)
class AdjointConfig(GradientConfig):
    """The exact adjoint: the residual cotangent handed from layer to layer. `schedule` on
    one device: `chunkwise` (time chunks of `chunk` tokens, null: 64; only the states
    stored) or `stored_streams` (the whole context at a time; takes no `chunk`)."""

    name: str = "adjoint"
    loss_chunk: int | None = None
    schedule: str = "chunkwise"
    chunk: int | None = None

    def validate(self) -> None:
        super().validate()
        require_one_of("schedule", self.schedule, ADJOINT_SCHEDULES)
        require(
            self.schedule == "chunkwise" or self.chunk is None,
            "chunk",
            self.chunk,
            "applies only to schedule=chunkwise; leave it null for stored_streams",
        )


@dataclass(frozen=True)
class TruncatedConfig(GradientConfig):
    """Truncated adjoint sharding (the paper's section 4.3): each output's gradient reaches
    back at most `window` tokens."""

    name: str = "truncated"
    window: int = 64
    form: str = "aggregated"
    loss_chunk: int | None = None

    def validate(self) -> None:
        super().validate()
        require(self.window > 0, "window", self.window, "must be > 0")
        _form_is_known(self)


@dataclass(frozen=True)
class SSMCheckpointedConfig(GradientConfig):
    """The exact adjoint from chunk boundary states; `chunk` tokens per chunk (null: the power
    of two nearest sqrt(T))."""

    name: str = "checkpointed"
    chunk: int | None = None
    loss_chunk: int | None = None


@dataclass(frozen=True)
class CheckpointedOption(GradientConfig):
    """What `gradient=checkpointed` composes to before the task is known: the options of both
    `CheckpointedConfig` (ODE) and `SSMCheckpointedConfig` (SSM). `gradient_for` splits it."""

    name: str = "checkpointed"
    checkpoints: int | None = None
    max_steps: int = 4096
    chunk: int | None = None
    loss_chunk: int | None = None


ODE_GRADIENT_SCHEMAS: dict[str, type[GradientConfig]] = {
    "checkpointed": CheckpointedConfig,
    "backsolve": BacksolveConfig,
    "direct": DirectConfig,
    "reversible": ReversibleConfig,
    "interpolating": InterpolatingConfig,
    "quadrature": QuadratureConfig,
    "gauss": GaussConfig,
}
SSM_GRADIENT_SCHEMAS: dict[str, type[GradientConfig]] = {
    "backprop": BackpropConfig,
    "remat": RematConfig,
    "adjoint_paper": AdjointPaperConfig,
    "adjoint": AdjointConfig,
    "truncated": TruncatedConfig,
    "checkpointed": SSMCheckpointedConfig,
    "scan_backprop": ScanBackpropConfig,
}
# The schema each `gradient` group option composes to (`gradient/<name>_schema`).
GRADIENT_OPTIONS: dict[str, type[GradientConfig]] = {
    **ODE_GRADIENT_SCHEMAS,
    **SSM_GRADIENT_SCHEMAS,
    "checkpointed": CheckpointedOption,
}
_OPTION_OF: dict[type[GradientConfig], str] = {
    schema: name
    for table in (ODE_GRADIENT_SCHEMAS, SSM_GRADIENT_SCHEMAS, GRADIENT_OPTIONS)
    for name, schema in table.items()
}


def gradient_for(
    config: GradientConfig, methods: dict[str, type[GradientConfig]], who: str
) -> GradientConfig:
    """The schema of `methods` that a composed `gradient` option stands for.

    **Arguments:**

    - `config`: the composed option (a `GRADIENT_OPTIONS` schema).
    - `methods`: the methods the task takes, by name (`ODE_GRADIENT_SCHEMAS` or
        `SSM_GRADIENT_SCHEMAS`).
    - `who`: the task, for the messages ("the ssm_lm task").

    **Returns:**

    An instance of `methods[config.name]` with the options of `config`. Raises `ConfigError`
    (fields relative to `gradient`) if the name was overridden, if the task does not take the
    method, or if an option of `config` is set that this task's version of the method lacks.
    """
    option = _OPTION_OF[type(config)]
    if config.name != option:
        raise ConfigError(
            "name",
            config.name,
            f"the method is the group option: choose gradient=<{', '.join(methods)}>",
        )
    if option not in methods:
        raise ConfigError("name", option, f"{who} takes one of {', '.join(methods)}")
    schema = methods[option]
    if type(config) is schema:
        return config
    given = {name: getattr(config, name) for name in type(config).options()}
    defaults = type(config)()
    for name, value in given.items():
        if name not in schema.options() and value != getattr(defaults, name):
            raise ConfigError(name, value, f"gradient={option} {describe_options(schema, who)}")
    return schema(**{name: value for name, value in given.items() if name in schema.options()})


def describe_options(schema: type[GradientConfig], who: str = "") -> str:
    """The end of an inapplicable-option error: `takes a, b` (and `for <who>` when given)."""
    where = f" for {who}" if who else ""
    return f"takes {', '.join(schema.options()) or 'no options'}{where}"


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
class TensorBoardLoggerConfig:
    """TensorBoard event files (`train.TensorBoardTracker`); `logdir` null means
    `<run_dir>/tensorboard`."""

    logdir: str | None = None
    flush_secs: int = 30

    def validate(self) -> None:
        require(self.flush_secs > 0, "flush_secs", self.flush_secs, "must be > 0")


@dataclass(frozen=True)
class MLflowLoggerConfig:
    """An MLflow run (`train.MLflowTracker`); `tracking_uri` null: a SQLite store in the run
    directory (or `MLFLOW_TRACKING_URI`)."""

    tracking_uri: str | None = None
    experiment: str = "adjoint_lab"
    run_name: str | None = None

    def validate(self) -> None:
        require(self.experiment != "", "experiment", self.experiment, "give an experiment name")


@dataclass(frozen=True)
class LoggerConfig:
    """Trackers beside the always-on `metrics.jsonl`: `logger=tensorboard`, `logger=mlflow` or
    `logger=[tensorboard,mlflow]` fill the sections; a null section is off."""

    tensorboard: TensorBoardLoggerConfig | None = None
    mlflow: MLflowLoggerConfig | None = None


@dataclass(frozen=True)
class ExperimentConfig:
    """The root of every run. `model` and `data` take the schema of the chosen group option,
    `gradient` the schema of the chosen method (a `GradientConfig`)."""

    task: str = "node_spiral"
    seed: int = 0
    # Where outputs go; Hydra's run directory by default (set in config.yaml).
    run_dir: str = "runs/default"
    model: Any = None
    data: Any = None
    optim: OptimConfig = field(default_factory=OptimConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    gradient: Any = None
    mesh: MeshConfig = field(default_factory=MeshConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    # What the run returns to Hydra, and so what a sweeper (Optuna) minimises: `final_loss`,
    # or `eval_<name>` for the final evaluation's metric `<name>` (e.g. `eval_mse`).
    objective: str = "final_loss"

    def validate(self) -> None:
        """Checks that span two sections."""
        require(
            self.objective == "final_loss"
            or (self.objective.startswith("eval_") and len(self.objective) > len("eval_")),
            "objective",
            self.objective,
            "use final_loss, or eval_<name> for an evaluation metric (eval_mse for node_spiral)",
        )
        gradient = self.gradient
        if isinstance(gradient, BacksolveConfig) and not self.solver.adaptive:
            backward_control = gradient.seminorm or gradient.adjoint_rtol or gradient.adjoint_atol
            require(
                not backward_control,
                "gradient.seminorm",
                gradient.seminorm,
                "the seminorm and adjoint tolerances control adaptive backward steps; "
                "set solver.adaptive=true, or drop them for constant steps",
            )


def validate(config: Any, prefix: str = "") -> None:
    """Validate a config tree, raising `ConfigError` with the dotted path of the first bad field."""
    if not dataclasses.is_dataclass(config):
        return
    check = getattr(config, "validate", None)
    if check is not None:
        try:
            check()
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
