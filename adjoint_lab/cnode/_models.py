"""C-NODE and its baselines: one `ODEClassifier`, and a factory per model of the paper.

Every model is U(1) -> head, where U solves d U/ds = field(s, U; z) on s in [0, 1] from an
initial state U(0) built from the input z. The models differ only in U(0) and the field:

| model | U(0) | field |
|---|---|---|
| `NODE` | z | f(U) |
| `ANODE` | [z, 0] | f(U) |
| `ILNODE` | L z | f(U) |
| `ILANODE` | [L z, 0] | f(U) (the authors' "2nd-order" baseline, `*_sec.py`) |
| `SONODE` | x = z or L z, v = 0 | dx/ds = v, dv/ds = f(x, v) (a true second-order NODE) |
| `CNODE` | z | sum_j a_j(s, z) T^(j)(U) |
| `CANODE`, `CILNODE`, `CILANODE` | as ANODE, ILNODE, ILANODE | sum_j a_j(s, z) T^(j)(U) |

(L: a bias-free 3x3 conv for images, a bias-free linear map for vectors.) So there is one
model class, `ODEClassifier(input_shape, initial, field, head, integrator)`, and the names
above are factories that assemble its parts. The input shape decides the layers:
`(channels, height, width)` gives the conv layout of the authors' code, `(features,)` MLPs
(for the synthetic tasks). A batch is solved as one ODE, as in the authors' torchdiffeq code:
adaptive steps are chosen by the error norm over the whole batch, so the output of one
example can depend (within the tolerance) on the rest of its batch; map the model over
single examples with `jax.vmap` to solve them separately.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray, Real

from ..core.gradients import AbstractGradientMethod, CheckpointedBackprop
from ..core.ode import Integrator as CoreIntegrator
from ._fields import (
    AbstractLatentField,
    AutonomousField,
    BatchedField,
    CharacteristicField,
    SecondOrderField,
)
from ._layers import (
    STYLES,
    AbstractConvMethod,
    Conv,
    ConvBlock,
    ConvHead,
    ConvPath,
    InitialState,
    LinearHead,
    MLPPath,
    Projection,
    StackedNets,
    Style,
    identity,
)

__all__ = [
    "ANODE",
    "CANODE",
    "CILANODE",
    "CILNODE",
    "CNODE",
    "ILANODE",
    "ILNODE",
    "NODE",
    "SONODE",
    "Integrator",
    "ODEClassifier",
]


# Default arguments; equinox modules are immutable, so sharing them is safe.
_TSIT5 = diffrax.Tsit5()
_PID = diffrax.PIDController(rtol=1e-3, atol=1e-3)
_CHECKPOINTED = CheckpointedBackprop(max_steps=256)


def Integrator(
    solver: diffrax.AbstractSolver = _TSIT5,
    controller: diffrax.AbstractStepSizeController | None = _PID,
    dt0: float | None = 0.1,
    gradient: AbstractGradientMethod = _CHECKPOINTED,
) -> CoreIntegrator:
    """The core's solver bundle, `adjoint_lab.core.Integrator`, with C-NODE's defaults.

    **Arguments:**

    - `solver`: a `diffrax.AbstractSolver`. Default `diffrax.Tsit5()`.
    - `controller`: a `diffrax.AbstractStepSizeController`. Default
        `diffrax.PIDController(rtol=1e-3, atol=1e-3)`, the tolerance of the authors'
        adaptive (dopri5) runs. `diffrax.ConstantStepSize()` takes constant steps of `dt0`;
        with `diffrax.Euler()` and `dt0=1.0` that is the single Euler step (one residual
        block) of the authors' non-adaptive runs.
    - `dt0`: the (initial) step size, default 0.1.
    - `gradient`: an `adjoint_lab.core.AbstractGradientMethod`. Default
        `CheckpointedBackprop(max_steps=256)`.

    **Returns:**

    An `adjoint_lab.core.Integrator`; every model of `adjoint_lab.cnode` holds one.
    """
    return CoreIntegrator(solver=solver, controller=controller, dt0=dt0, gradient=gradient)


_INTEGRATOR = Integrator()


class ODEClassifier(eqx.Module):
    """A classifier z -> head(U(1)) through a neural ODE dU/ds = field(s, U, z), U(0) = initial(z).

    The C-NODE family differs only in its parts; the factories `CNODE`, `NODE`, `ANODE`, ...
    assemble them, and any other parts of the same signatures make a new model.

    **Arguments:**

    - `input_shape`: the shape of one input, `(channels, height, width)` or `(features,)`.
    - `initial`: z -> U(0), for one example. Images (z and U) are channels-last inside the
        model, `[height, width, channels]`; the model transposes its input once.
    - `field`: an `AbstractLatentField`, `field(s, u, z)` for one example.
    - `head`: U(1) -> logits for one example (or the first channels of U(1), without a head).
    - `integrator`: an `adjoint_lab.core.Integrator`: solver, controller, dt0 and gradient
        method of the solve over s in [0, 1].
    """

    input_shape: tuple[int, ...] = eqx.field(static=True, converter=lambda s: tuple(map(int, s)))
    initial: Callable[[Array], Array]
    field: AbstractLatentField
    head: Callable[[Array], Array]
    integrator: CoreIntegrator

    def __check_init__(self):
        if not isinstance(self.field, AbstractLatentField):
            raise TypeError(
                f"`ODEClassifier(field={self.field!r})`: `field` must be an "
                "`adjoint_lab.cnode.AbstractLatentField` (e.g. `CharacteristicField`, "
                "`AutonomousField`, `SecondOrderField`)."
            )
        if not isinstance(self.integrator, CoreIntegrator):
            raise TypeError(
                f"`ODEClassifier(integrator={self.integrator!r})`: `integrator` must be an "
                "`adjoint_lab.core.Integrator`, e.g. `adjoint_lab.cnode.Integrator()`."
            )

    def logits_and_stats(
        self, x: Float[Array, "*batch ..."]
    ) -> tuple[Float[Array, "*batch classes"], dict[str, Int[Array, ""]]]:
        """The logits and the statistics of the forward solve.

        **Arguments:**

        - `x`: a batch `[batch, *input_shape]` or one example `[*input_shape]`.

        **Returns:**

        `(logits, stats)`: logits `[batch, classes]` (or `[classes]`); `stats` are those of
        `adjoint_lab.core.Solution`, e.g. `stats["nfe"]`, the forward evaluations of the
        field for the whole batch (one solve).
        """
        single, x = self._batch(x)
        sol = self.integrator.solve(
            BatchedField(self.field), 0.0, 1.0, jax.vmap(self.initial)(x), x
        )
        out = jax.vmap(self.head)(sol.ys[-1])  # pyright: ignore[reportOptionalSubscript]
        return (out[0] if single else out), sol.stats

    def __call__(self, x: Float[Array, "*batch ..."]) -> Float[Array, "*batch classes"]:
        """The logits of a batch `[batch, *input_shape]` or of one example."""
        return self.logits_and_stats(x)[0]

    def trajectory(
        self, x: Float[Array, "*batch ..."], ts: Real[Array, " times"]
    ) -> Float[Array, "times *batch classes"]:
        """The head applied to U(s) at the times `ts` in [0, 1] (the whole batch is one solve).

        **Arguments:**

        - `x`: a batch `[batch, *input_shape]` or one example.
        - `ts`: increasing times in [0, 1].

        **Returns:**

        `[times, batch, ...]` (or `[times, ...]` for one example): what the model would output
        if its solve stopped at each time; without a head, the trajectory of U itself.
        """
        single, x = self._batch(x)
        sol = self.integrator.solve(
            BatchedField(self.field), 0.0, 1.0, jax.vmap(self.initial)(x), x, ts=ts
        )
        out = jax.vmap(jax.vmap(self.head))(sol.ys)  # pyright: ignore[reportArgumentType]
        return out[:, 0] if single else out

    def _batch(self, x: ArrayLike) -> tuple[bool, Array]:
        x = jnp.asarray(x)
        single = self._check_input(x)
        if single:
            x = x[None]
        if x.ndim == 4:
            # Channels-last inside: see `adjoint_lab.cnode._layers.Conv` for why.
            x = jnp.moveaxis(x, 1, -1)
        return single, x

    def _check_input(self, x: Array) -> bool:
        expected = tuple(self.input_shape)
        shape = tuple(x.shape)
        if shape == expected:
            return True
        if len(shape) == len(expected) + 1 and shape[1:] == expected:
            return False
        what = "images" if len(expected) == 3 else "inputs"
        message = (
            f"This model was built for {what} of shape {expected} (its `input_shape`), so it "
            f"takes a batch [batch, {', '.join(map(str, expected))}] or one example "
            f"{list(expected)}; got shape {shape}."
        )
        if len(expected) == 3 and len(shape) in (3, 4):
            if shape[-1] == expected[0] and shape[-3:-1] == expected[1:]:
                message += (
                    " These look channels-last (NHWC): transpose them to channels-first, "
                    "e.g. `x.transpose(0, 3, 1, 2)`."
                )
            elif shape[-3] != expected[0] and shape[-2:] == expected[1:]:
                message += (
                    f" The channel count {shape[-3]} differs from the model's {expected[0]}: "
                    f"build the model with `input_shape={(shape[-3], *expected[1:])}`."
                )
            else:
                message += (
                    f" Build the model with `input_shape={shape[-3:]}` for these images "
                    "(MNIST is (1, 28, 28), SVHN and CIFAR-10 (3, 32, 32), digits (1, 8, 8))."
                )
        raise ValueError(message)


# The factories below assemble an `ODEClassifier` from a layout (images or vectors: which
# layers) and a dynamics (which field); both are objects, so no string chooses either.


def _positive(owner: str, name: str, value: Any, allow_zero: bool = False) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool)
    ok = ok and (value >= 0 if allow_zero else value >= 1)
    if not ok:
        bound = ">= 0" if allow_zero else ">= 1"
        raise ValueError(f"`{owner}({name}={value!r})`: `{name}` must be an int {bound}.")


class _AbstractLayout(eqx.Module):
    # Which layers the parts are made of: the authors' convs for images, MLPs for vectors.
    input_shape: eqx.AbstractVar[tuple[int, ...]]
    width: eqx.AbstractVar[int]

    @abc.abstractmethod
    def lift(self, channels: int, key: PRNGKeyArray) -> eqx.Module: ...

    @abc.abstractmethod
    def block(self, c_from: int, c_to: int, key: PRNGKeyArray) -> eqx.Module: ...

    @abc.abstractmethod
    def path(
        self,
        k: int,
        width: int,
        activation: Callable[[Array], Array],
        output: Callable[[Array], Array],
        key: PRNGKeyArray,
    ) -> eqx.Module: ...

    @abc.abstractmethod
    def head(self, channels: int, num_classes: int, key: PRNGKeyArray) -> eqx.Module: ...


class _ImageLayout(_AbstractLayout):
    input_shape: tuple[int, ...]
    width: int
    style: Style
    pool: int
    conv: AbstractConvMethod | None

    def lift(self, channels, key):
        return Conv(self.input_shape[0], channels, 3, use_bias=False, method=self.conv, key=key)

    def block(self, c_from, c_to, key):
        return ConvBlock(c_from, c_to, self.width, self.style, conv=self.conv, key=key)

    def path(self, k, width, activation, output, key):
        c, h, w = self.input_shape
        return ConvPath(
            (h, w, c), k, width, self.style, activation, output=output, conv=self.conv, key=key
        )

    def head(self, channels, num_classes, key):
        return ConvHead(channels, num_classes, self.pool, key=key)


class _VectorLayout(_AbstractLayout):
    input_shape: tuple[int, ...]
    width: int

    def lift(self, channels, key):
        return eqx.nn.Linear(self.input_shape[0], channels, use_bias=False, key=key)

    def block(self, c_from, c_to, key):
        return eqx.nn.MLP(c_from, c_to, self.width, 2, activation=jnp.tanh, key=key)

    def path(self, k, width, activation, output, key):
        return MLPPath(self.input_shape[0], k, width, activation, output=output, key=key)

    def head(self, channels, num_classes, key):
        return LinearHead(channels, num_classes, key=key)


class _AbstractDynamics(eqx.Module):
    # Which field: `build` makes it for a state of `channels` (after lifting and augmenting);
    # `velocity_channels` are the zero channels the initial state carries for it (SONODE's v).

    @abc.abstractmethod
    def check(self, owner: str) -> None: ...

    @abc.abstractmethod
    def build(
        self, layout: _AbstractLayout, channels: int, key_field: PRNGKeyArray, key_path: Any
    ) -> AbstractLatentField: ...

    def velocity_channels(self, channels: int) -> int:
        return 0


class _Autonomous(_AbstractDynamics):
    def check(self, owner):
        pass

    def build(self, layout, channels, key_field, key_path):
        return AutonomousField(layout.block(channels, channels, key_field))  # pyright: ignore[reportArgumentType]


class _Characteristic(_AbstractDynamics):
    k: int
    path_width: int
    path_activation: Callable[[Array], Array]
    path_output: Callable[[Array], Array]

    def check(self, owner):
        _positive(owner, "k", self.k)
        _positive(owner, "path_width", self.path_width)

    def build(self, layout, channels, key_field, key_path):
        path = layout.path(
            self.k, self.path_width, self.path_activation, self.path_output, key_path
        )

        def block(key):
            return layout.block(channels, channels, key)

        return CharacteristicField(path, StackedNets(block, self.k, key=key_field))  # pyright: ignore[reportArgumentType]


class _SecondOrder(_AbstractDynamics):
    def check(self, owner):
        pass

    def build(self, layout, channels, key_field, key_path):
        return SecondOrderField(layout.block(2 * channels, channels, key_field))  # pyright: ignore[reportArgumentType]

    def velocity_channels(self, channels):
        # v(0) = 0 rides along as zero augmentation of the position x(0).
        return channels


def _classifier(
    owner: str,
    input_shape: tuple[int, ...],
    num_classes: int | None,
    dynamics: _AbstractDynamics,
    *,
    width: int,
    lift: int | None = None,
    augment: int = 0,
    style: Style = "mnist",
    pool: int = 4,
    conv: AbstractConvMethod | None = None,
    integrator: CoreIntegrator,
    key: PRNGKeyArray,
) -> ODEClassifier:
    input_shape = tuple(int(d) for d in input_shape)
    if len(input_shape) not in (1, 3) or min(input_shape, default=0) < 1:
        raise ValueError(
            f"`{owner}(input_shape={input_shape})`: `input_shape` must be the shape of one "
            "example, `(channels, height, width)` for images (e.g. (1, 28, 28)) or "
            "`(features,)` for vectors, with positive sizes."
        )
    _positive(owner, "width", width)
    _positive(owner, "augment", augment, allow_zero=True)
    if lift is not None:
        _positive(owner, "lift", lift)
    dynamics.check(owner)
    if num_classes is not None:
        _positive(owner, "num_classes", num_classes)
    layout: _AbstractLayout
    if len(input_shape) == 3:
        if style not in STYLES:
            raise ValueError(
                f"`{owner}(style={style!r})`: `style` must be one of {STYLES}: the layer "
                "layout of the authors' MNIST or CIFAR-10/SVHN scripts."
            )
        _positive(owner, "pool", pool)
        if pool > min(input_shape[1:]):
            raise ValueError(
                f"`{owner}(pool={pool})`: the head pools to pool x pool, which must not exceed "
                f"the image size {input_shape[1:]}; choose pool <= {min(input_shape[1:])}."
            )
        layout = _ImageLayout(input_shape, width, style, pool, conv)
    else:
        layout = _VectorLayout(input_shape, width)

    k_lift, k_field, k_path, k_head = jax.random.split(key, 4)
    c_in = input_shape[0]
    layer = None if lift is None else layout.lift(lift, k_lift)
    channels = (c_in if lift is None else lift) + augment
    field = dynamics.build(layout, channels, k_field, k_path)
    initial = InitialState(layer, augment + dynamics.velocity_channels(channels))
    if num_classes is None:
        head: eqx.Module = Projection(min(c_in, channels))
    else:
        head = layout.head(channels, num_classes, k_head)
    return ODEClassifier(input_shape, initial, field, head, integrator)


_COMMON_ARGUMENTS = """
    - `input_shape`: the shape of one example: `(channels, height, width)` for images (the
        authors' conv layout), `(features,)` for vectors (MLPs with two hidden layers).
    - `num_classes`: the number of logits; `None` for no head: the output is then the first
        `input_shape[0]` channels (features) of the final state (of its position x, for
        `SONODE`), the shape of the input.
    - `width`: hidden channels (units) of each vector-field block; the knob that matches
        parameter counts between models (see `adjoint_lab.cnode.matched_width`).
    - `style`: images only: `"mnist"` (InstanceNorm blocks, the authors' MNIST layout) or
        `"cifar"` (GroupNorm blocks, their CIFAR-10/SVHN layout).
    - `pool`: images only: the head's adaptive average pool size (the authors: 8 on MNIST,
        4 on CIFAR-10/SVHN).
    - `conv`: images only: the `adjoint_lab.cnode.AbstractConvMethod` of the 3x3
        convolutions; `None` for `AutoConv()`, the fastest on the backend.
    - `integrator`: an `adjoint_lab.core.Integrator` (solver, controller, dt0, gradient);
        default `adjoint_lab.cnode.Integrator()`.
    - `key`: a `jax.random.PRNGKey` for the initialisation.

    **Returns:**

    An `ODEClassifier`.
"""
_LIFT = """
    - `lift`: the channels (features) of L z; L is a bias-free 3x3 conv (images) or linear
        map (vectors)."""
_AUGMENT = """
    - `augment`: the number of zero channels (features) appended to the state."""
_CHARACTERISTIC = """
    - `k`: the number of characteristic directions (Jacobian blocks T^(j)).
    - `path_width`: hidden channels (units) of the path network a(s, z).
    - `path_activation`: the path network's hidden activation (the authors' MNIST code:
        `jax.nn.hard_tanh`).
    - `path_output`: applied to the k directions a_j(s, z): `identity` (linear, default)
        or the authors' `jax.nn.relu6` (a_j in [0, 6]: a monotone integration path)."""


def _document(*extra: str) -> Callable[[Callable], Callable]:
    def decorate(factory: Callable) -> Callable:
        factory.__doc__ = (
            f"{factory.__doc__}\n\n    **Arguments:**\n{''.join(extra)}{_COMMON_ARGUMENTS}"
        )
        return factory

    return decorate


@_document()
def NODE(
    input_shape: tuple[int, ...],
    num_classes: int | None = 10,
    *,
    width: int,
    style: Style = "mnist",
    pool: int = 4,
    conv: AbstractConvMethod | None = None,
    integrator: CoreIntegrator = _INTEGRATOR,
    key: PRNGKeyArray,
) -> ODEClassifier:
    """Neural ODE: dU/ds = f(U), U(0) = z (Chen et al. 2018)."""
    return _classifier(
        "NODE", input_shape, num_classes, _Autonomous(), width=width, style=style, pool=pool,
        conv=conv, integrator=integrator, key=key,
    )  # fmt: skip


@_document(_AUGMENT)
def ANODE(
    input_shape: tuple[int, ...],
    num_classes: int | None = 10,
    *,
    width: int,
    augment: int,
    style: Style = "mnist",
    pool: int = 4,
    conv: AbstractConvMethod | None = None,
    integrator: CoreIntegrator = _INTEGRATOR,
    key: PRNGKeyArray,
) -> ODEClassifier:
    """Augmented neural ODE: dU/ds = f(U), U(0) = [z, 0] (Dupont et al. 2019)."""
    return _classifier(
        "ANODE", input_shape, num_classes, _Autonomous(), width=width, augment=augment,
        style=style, pool=pool, conv=conv, integrator=integrator, key=key,
    )  # fmt: skip


@_document(_LIFT)
def ILNODE(
    input_shape: tuple[int, ...],
    num_classes: int | None = 10,
    *,
    width: int,
    lift: int,
    style: Style = "mnist",
    pool: int = 4,
    conv: AbstractConvMethod | None = None,
    integrator: CoreIntegrator = _INTEGRATOR,
    key: PRNGKeyArray,
) -> ODEClassifier:
    """Input-layer neural ODE: dU/ds = f(U), U(0) = L z (Massaroli et al. 2020)."""
    return _classifier(
        "ILNODE", input_shape, num_classes, _Autonomous(), width=width, lift=lift,
        style=style, pool=pool, conv=conv, integrator=integrator, key=key,
    )  # fmt: skip


@_document(_LIFT, _AUGMENT)
def ILANODE(
    input_shape: tuple[int, ...],
    num_classes: int | None = 10,
    *,
    width: int,
    lift: int,
    augment: int,
    style: Style = "mnist",
    pool: int = 4,
    conv: AbstractConvMethod | None = None,
    integrator: CoreIntegrator = _INTEGRATOR,
    key: PRNGKeyArray,
) -> ODEClassifier:
    """Input layer plus zero augmentation: dU/ds = f(U), U(0) = [L z, 0].

    This is what the authors' code calls the "2nd-order" baseline (`*_sec.py`): a
    first-order field over all channels, *without* the structure dx/ds = v of a
    second-order ODE (for that, see `SONODE`)."""
    return _classifier(
        "ILANODE", input_shape, num_classes, _Autonomous(), width=width, lift=lift,
        augment=augment, style=style, pool=pool, conv=conv, integrator=integrator, key=key,
    )  # fmt: skip


@_document(
    """
    - `lift`: `None` for x(0) = z, or the channels (features) of x(0) = L z."""
)
def SONODE(
    input_shape: tuple[int, ...],
    num_classes: int | None = 10,
    *,
    width: int,
    lift: int | None = None,
    style: Style = "mnist",
    pool: int = 4,
    conv: AbstractConvMethod | None = None,
    integrator: CoreIntegrator = _INTEGRATOR,
    key: PRNGKeyArray,
) -> ODEClassifier:
    """Second-order neural ODE: dx/ds = v, dv/ds = f(x, v), x(0) = z or L z, v(0) = 0.

    The second-order model of Massaroli et al. (Dissecting Neural ODEs, NeurIPS 2020); the
    head reads the position x(1). Its trajectories in x may cross, since the state is (x, v)."""
    return _classifier(
        "SONODE", input_shape, num_classes, _SecondOrder(), width=width, lift=lift,
        style=style, pool=pool, conv=conv, integrator=integrator, key=key,
    )  # fmt: skip


@_document(_CHARACTERISTIC)
def CNODE(
    input_shape: tuple[int, ...],
    num_classes: int | None = 10,
    *,
    width: int,
    k: int = 2,
    path_width: int = 4,
    path_activation: Callable[[Array], Array] = jnp.tanh,
    path_output: Callable[[Array], Array] = identity,
    style: Style = "mnist",
    pool: int = 4,
    conv: AbstractConvMethod | None = None,
    integrator: CoreIntegrator = _INTEGRATOR,
    key: PRNGKeyArray,
) -> ODEClassifier:
    """Characteristic neural ODE: dU/ds = sum_j a_j(s, z) T^(j)(U), U(0) = z (Xu et al. 2023).

    The path network a(s, z) sees the original input z and s; each of the `k` Jacobian
    blocks T^(j) sees the state only."""
    dynamics = _Characteristic(k, path_width, path_activation, path_output)
    return _classifier(
        "CNODE", input_shape, num_classes, dynamics, width=width, style=style, pool=pool,
        conv=conv, integrator=integrator, key=key,
    )  # fmt: skip


@_document(_AUGMENT, _CHARACTERISTIC)
def CANODE(
    input_shape: tuple[int, ...],
    num_classes: int | None = 10,
    *,
    width: int,
    augment: int,
    k: int = 2,
    path_width: int = 4,
    path_activation: Callable[[Array], Array] = jnp.tanh,
    path_output: Callable[[Array], Array] = identity,
    style: Style = "mnist",
    pool: int = 4,
    conv: AbstractConvMethod | None = None,
    integrator: CoreIntegrator = _INTEGRATOR,
    key: PRNGKeyArray,
) -> ODEClassifier:
    """C-NODE on the zero-augmented state U(0) = [z, 0] (the authors' `*_aug_line.py`)."""
    dynamics = _Characteristic(k, path_width, path_activation, path_output)
    return _classifier(
        "CANODE", input_shape, num_classes, dynamics, width=width, augment=augment,
        style=style, pool=pool, conv=conv, integrator=integrator, key=key,
    )  # fmt: skip


@_document(_LIFT, _CHARACTERISTIC)
def CILNODE(
    input_shape: tuple[int, ...],
    num_classes: int | None = 10,
    *,
    width: int,
    lift: int,
    k: int = 2,
    path_width: int = 4,
    path_activation: Callable[[Array], Array] = jnp.tanh,
    path_output: Callable[[Array], Array] = identity,
    style: Style = "mnist",
    pool: int = 4,
    conv: AbstractConvMethod | None = None,
    integrator: CoreIntegrator = _INTEGRATOR,
    key: PRNGKeyArray,
) -> ODEClassifier:
    """C-NODE on the lifted state U(0) = L z (the authors' `*_il_line.py`)."""
    dynamics = _Characteristic(k, path_width, path_activation, path_output)
    return _classifier(
        "CILNODE", input_shape, num_classes, dynamics, width=width, lift=lift, style=style,
        pool=pool, conv=conv, integrator=integrator, key=key,
    )  # fmt: skip


@_document(_LIFT, _AUGMENT, _CHARACTERISTIC)
def CILANODE(
    input_shape: tuple[int, ...],
    num_classes: int | None = 10,
    *,
    width: int,
    lift: int,
    augment: int,
    k: int = 2,
    path_width: int = 4,
    path_activation: Callable[[Array], Array] = jnp.tanh,
    path_output: Callable[[Array], Array] = identity,
    style: Style = "mnist",
    pool: int = 4,
    conv: AbstractConvMethod | None = None,
    integrator: CoreIntegrator = _INTEGRATOR,
    key: PRNGKeyArray,
) -> ODEClassifier:
    """C-NODE on U(0) = [L z, 0]: the C-version of the authors' "2nd-order" (`*_sec_line.py`)."""
    dynamics = _Characteristic(k, path_width, path_activation, path_output)
    return _classifier(
        "CILANODE", input_shape, num_classes, dynamics, width=width, lift=lift,
        augment=augment, style=style, pool=pool, conv=conv, integrator=integrator, key=key,
    )  # fmt: skip
