"""C-NODE and its baselines as equinox classifiers of images (or vectors).

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

(L: a bias-free 3x3 conv for images, a bias-free linear map for vectors.) The input shape
decides the layers: `(channels, height, width)` gives the conv layout of the authors' code,
`(features,)` MLPs (for the synthetic tasks). A batch is solved as one ODE, as in the authors'
torchdiffeq code: adaptive steps are chosen by the error norm over the whole batch, so the
output of one example can depend (within the tolerance) on the rest of its batch; map the
model over single examples with `jax.vmap` to solve them separately.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ._fields import AutonomousField, BatchedField, CharacteristicField, SecondOrderField
from ._integrator import Integrator
from ._layers import (
    STYLES,
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
    "AbstractODEClassifier",
]

_INTEGRATOR = Integrator()


class AbstractODEClassifier(eqx.Module):
    """A classifier z -> head(U(1)) through a neural ODE in the latent state U.

    Subclasses are final and differ in how they build `initial` and `field`.

    **Fields:**

    - `input_shape`: the shape of one input, `(channels, height, width)` or `(features,)`.
    - `initial`: z -> U(0), for one example. Images (z and U) are channels-last inside the
        model, `[height, width, channels]`; the model transposes its input once.
    - `field`: `field(s, u, z)` for one example.
    - `head`: U(1) -> logits for one example (or the first channels of U(1), without a head).
    - `integrator`: the solver, controller and gradient method of the solve.
    """

    input_shape: eqx.AbstractVar[tuple[int, ...]]
    initial: eqx.AbstractVar[InitialState]
    field: eqx.AbstractVar[Callable[..., Array]]
    head: eqx.AbstractVar[Callable[[Array], Array]]
    integrator: eqx.AbstractVar[Integrator]

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
        x = jnp.asarray(x)
        single = self._check_input(x)
        if single:
            x = x[None]
        if x.ndim == 4:
            # Channels-last inside: see `adjoint_lab.cnode._layers.Conv` for why.
            x = jnp.moveaxis(x, 1, -1)
        u0 = jax.vmap(self.initial)(x)
        sol = self.integrator(BatchedField(self.field), u0, x)
        out = jax.vmap(self.head)(sol.ys[-1])
        return (out[0] if single else out), sol.stats

    def __call__(self, x: Float[Array, "*batch ..."]) -> Float[Array, "*batch classes"]:
        """The logits of a batch `[batch, *input_shape]` or of one example."""
        return self.logits_and_stats(x)[0]

    def _check_input(self, x: Array) -> bool:
        expected = tuple(self.input_shape)
        shape = tuple(x.shape)
        if shape == expected:
            return True
        if len(shape) == len(expected) + 1 and shape[1:] == expected:
            return False
        name = type(self).__name__
        what = "images" if len(expected) == 3 else "inputs"
        message = (
            f"`{name}` was built for {what} of shape {expected} (its `input_shape`), so it "
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


class _Parts(NamedTuple):
    input_shape: tuple[int, ...]
    initial: InitialState
    field: Any
    head: Any


def _positive(owner: str, name: str, value: Any, allow_zero: bool = False) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool)
    ok = ok and (value >= 0 if allow_zero else value >= 1)
    if not ok:
        bound = ">= 0" if allow_zero else ">= 1"
        raise ValueError(f"`{owner}({name}={value!r})`: `{name}` must be an int {bound}.")


def _assemble(
    owner: str,
    input_shape: tuple[int, ...],
    num_classes: int | None,
    *,
    dynamics: str,
    width: int,
    lift: int | None = None,
    augment: int = 0,
    k: int = 1,
    path_width: int = 4,
    style: Style = "mnist",
    pool: int = 4,
    path_activation: Callable[[Array], Array] = jnp.tanh,
    key: PRNGKeyArray,
) -> _Parts:
    input_shape = tuple(int(d) for d in input_shape)
    if len(input_shape) not in (1, 3) or min(input_shape, default=0) < 1:
        raise ValueError(
            f"`{owner}(input_shape={input_shape})`: `input_shape` must be the shape of one "
            "example, `(channels, height, width)` for images (e.g. (1, 28, 28)) or "
            "`(features,)` for vectors, with positive sizes."
        )
    image = len(input_shape) == 3
    _positive(owner, "width", width)
    _positive(owner, "augment", augment, allow_zero=True)
    if lift is not None:
        _positive(owner, "lift", lift)
    if dynamics == "cnode":
        _positive(owner, "k", k)
        _positive(owner, "path_width", path_width)
    if num_classes is not None:
        _positive(owner, "num_classes", num_classes)
    if image:
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

    k_lift, k_field, k_path, k_head = jax.random.split(key, 4)
    c_in = input_shape[0]
    if lift is None:
        layer = None
        channels = c_in
    elif image:
        layer = Conv(c_in, lift, 3, use_bias=False, key=k_lift)
        channels = lift
    else:
        layer = eqx.nn.Linear(c_in, lift, use_bias=False, key=k_lift)
        channels = lift
    channels += augment

    def net(c_from: int, c_to: int) -> Callable[[PRNGKeyArray], eqx.Module]:
        if image:
            return lambda key: ConvBlock(c_from, c_to, width, style, key=key)
        return lambda key: eqx.nn.MLP(c_from, c_to, width, 2, activation=jnp.tanh, key=key)

    if dynamics == "node":
        field = AutonomousField(net(channels, channels)(k_field))
    elif dynamics == "cnode":
        if image:
            hwc = (*input_shape[1:], c_in)
            path = ConvPath(hwc, k, path_width, style, path_activation, key=k_path)
        else:
            path = MLPPath(c_in, k, path_width, path_activation, key=k_path)
        field = CharacteristicField(path, StackedNets(net(channels, channels), k, key=k_field))
    elif dynamics == "sonode":
        # v(0) = 0 rides along as zero augmentation of the position x(0).
        augment += channels
        field = SecondOrderField(net(2 * channels, channels)(k_field))
    else:
        raise AssertionError(dynamics)
    initial = InitialState(layer, augment)

    if num_classes is None:
        head = Projection(min(c_in, channels))
    elif image:
        head = ConvHead(channels, num_classes, pool, key=k_head)
    else:
        head = LinearHead(channels, num_classes, key=k_head)
    return _Parts(input_shape, initial, field, head)


class NODE(AbstractODEClassifier):
    """Neural ODE: dU/ds = f(U), U(0) = z (Chen et al. 2018).

    **Arguments:**

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
    - `integrator`: an `adjoint_lab.cnode.Integrator` (solver, controller, gradient).
    - `key`: a `jax.random.PRNGKey` for the initialisation.
    """

    input_shape: tuple[int, ...] = eqx.field(static=True)
    initial: InitialState
    field: AutonomousField
    head: Any
    integrator: Integrator

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int | None = 10,
        *,
        width: int,
        style: Style = "mnist",
        pool: int = 4,
        integrator: Integrator = _INTEGRATOR,
        key: PRNGKeyArray,
    ):
        parts = _assemble(
            "NODE",
            input_shape,
            num_classes,
            dynamics="node",
            width=width,
            style=style,
            pool=pool,
            key=key,
        )
        self.input_shape, self.initial, self.field, self.head = parts
        self.integrator = integrator


class ANODE(AbstractODEClassifier):
    """Augmented neural ODE: dU/ds = f(U), U(0) = [z, 0] (Dupont et al. 2019).

    **Arguments:**

    - `augment`: the number of zero channels (features) appended to z.
    - the others: as for `NODE`.
    """

    input_shape: tuple[int, ...] = eqx.field(static=True)
    initial: InitialState
    field: AutonomousField
    head: Any
    integrator: Integrator

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int | None = 10,
        *,
        width: int,
        augment: int,
        style: Style = "mnist",
        pool: int = 4,
        integrator: Integrator = _INTEGRATOR,
        key: PRNGKeyArray,
    ):
        parts = _assemble(
            "ANODE",
            input_shape,
            num_classes,
            dynamics="node",
            width=width,
            augment=augment,
            style=style,
            pool=pool,
            key=key,
        )
        self.input_shape, self.initial, self.field, self.head = parts
        self.integrator = integrator


class ILNODE(AbstractODEClassifier):
    """Input-layer neural ODE: dU/ds = f(U), U(0) = L z (Massaroli et al. 2020).

    **Arguments:**

    - `lift`: the channels (features) of U(0) = L z; L is a bias-free 3x3 conv (images) or
        linear map (vectors).
    - the others: as for `NODE`.
    """

    input_shape: tuple[int, ...] = eqx.field(static=True)
    initial: InitialState
    field: AutonomousField
    head: Any
    integrator: Integrator

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int | None = 10,
        *,
        width: int,
        lift: int,
        style: Style = "mnist",
        pool: int = 4,
        integrator: Integrator = _INTEGRATOR,
        key: PRNGKeyArray,
    ):
        parts = _assemble(
            "ILNODE",
            input_shape,
            num_classes,
            dynamics="node",
            width=width,
            lift=lift,
            style=style,
            pool=pool,
            key=key,
        )
        self.input_shape, self.initial, self.field, self.head = parts
        self.integrator = integrator


class ILANODE(AbstractODEClassifier):
    """Input layer plus zero augmentation: dU/ds = f(U), U(0) = [L z, 0].

    This is what the authors' code calls the "2nd-order" baseline (`*_sec.py`): a
    first-order field over all channels, *without* the structure dx/ds = v of a
    second-order ODE (for that, see `SONODE`).

    **Arguments:**

    - `lift`: the channels (features) of L z.
    - `augment`: the zero channels (features) appended after it.
    - the others: as for `NODE`.
    """

    input_shape: tuple[int, ...] = eqx.field(static=True)
    initial: InitialState
    field: AutonomousField
    head: Any
    integrator: Integrator

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int | None = 10,
        *,
        width: int,
        lift: int,
        augment: int,
        style: Style = "mnist",
        pool: int = 4,
        integrator: Integrator = _INTEGRATOR,
        key: PRNGKeyArray,
    ):
        parts = _assemble(
            "ILANODE",
            input_shape,
            num_classes,
            dynamics="node",
            width=width,
            lift=lift,
            augment=augment,
            style=style,
            pool=pool,
            key=key,
        )
        self.input_shape, self.initial, self.field, self.head = parts
        self.integrator = integrator


class SONODE(AbstractODEClassifier):
    """Second-order neural ODE: dx/ds = v, dv/ds = f(x, v), x(0) = z or L z, v(0) = 0.

    The second-order model of Massaroli et al. (Dissecting Neural ODEs, NeurIPS 2020); the
    head reads the position x(1). Its trajectories in x may cross, since the state is (x, v).

    **Arguments:**

    - `lift`: `None` for x(0) = z, or the channels (features) of x(0) = L z.
    - the others: as for `NODE`; `width` is that of the block f.
    """

    input_shape: tuple[int, ...] = eqx.field(static=True)
    initial: InitialState
    field: SecondOrderField
    head: Any
    integrator: Integrator

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int | None = 10,
        *,
        width: int,
        lift: int | None = None,
        style: Style = "mnist",
        pool: int = 4,
        integrator: Integrator = _INTEGRATOR,
        key: PRNGKeyArray,
    ):
        parts = _assemble(
            "SONODE",
            input_shape,
            num_classes,
            dynamics="sonode",
            width=width,
            lift=lift,
            style=style,
            pool=pool,
            key=key,
        )
        self.input_shape, self.initial, self.field, self.head = parts
        self.integrator = integrator


class CNODE(AbstractODEClassifier):
    """Characteristic neural ODE: dU/ds = sum_j a_j(s, z) T^(j)(U), U(0) = z (Xu et al. 2023).

    The path network a(s, z) sees the original input z and s; each of the `k` Jacobian
    blocks T^(j) sees the state only.

    **Arguments:**
    """

    input_shape: tuple[int, ...] = eqx.field(static=True)
    initial: InitialState
    field: CharacteristicField
    head: Any
    integrator: Integrator

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int | None = 10,
        *,
        width: int,
        k: int = 2,
        path_width: int = 4,
        path_activation: Callable[[Array], Array] = jnp.tanh,
        style: Style = "mnist",
        pool: int = 4,
        integrator: Integrator = _INTEGRATOR,
        key: PRNGKeyArray,
    ):
        parts = _assemble(
            "CNODE",
            input_shape,
            num_classes,
            dynamics="cnode",
            width=width,
            k=k,
            path_width=path_width,
            path_activation=path_activation,
            style=style,
            pool=pool,
            key=key,
        )
        self.input_shape, self.initial, self.field, self.head = parts
        self.integrator = integrator


class CANODE(AbstractODEClassifier):
    """C-NODE on the zero-augmented state U(0) = [z, 0] (the authors' `*_aug_line.py`).

    **Arguments:**

    - `augment`: the number of zero channels (features) appended to z.
    - the others: as for `CNODE`.
    """

    input_shape: tuple[int, ...] = eqx.field(static=True)
    initial: InitialState
    field: CharacteristicField
    head: Any
    integrator: Integrator

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int | None = 10,
        *,
        width: int,
        augment: int,
        k: int = 2,
        path_width: int = 4,
        path_activation: Callable[[Array], Array] = jnp.tanh,
        style: Style = "mnist",
        pool: int = 4,
        integrator: Integrator = _INTEGRATOR,
        key: PRNGKeyArray,
    ):
        parts = _assemble(
            "CANODE",
            input_shape,
            num_classes,
            dynamics="cnode",
            width=width,
            augment=augment,
            k=k,
            path_width=path_width,
            path_activation=path_activation,
            style=style,
            pool=pool,
            key=key,
        )
        self.input_shape, self.initial, self.field, self.head = parts
        self.integrator = integrator


class CILNODE(AbstractODEClassifier):
    """C-NODE on the lifted state U(0) = L z (the authors' `*_il_line.py`).

    **Arguments:**

    - `lift`: the channels (features) of U(0) = L z.
    - the others: as for `CNODE`.
    """

    input_shape: tuple[int, ...] = eqx.field(static=True)
    initial: InitialState
    field: CharacteristicField
    head: Any
    integrator: Integrator

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int | None = 10,
        *,
        width: int,
        lift: int,
        k: int = 2,
        path_width: int = 4,
        path_activation: Callable[[Array], Array] = jnp.tanh,
        style: Style = "mnist",
        pool: int = 4,
        integrator: Integrator = _INTEGRATOR,
        key: PRNGKeyArray,
    ):
        parts = _assemble(
            "CILNODE",
            input_shape,
            num_classes,
            dynamics="cnode",
            width=width,
            lift=lift,
            k=k,
            path_width=path_width,
            path_activation=path_activation,
            style=style,
            pool=pool,
            key=key,
        )
        self.input_shape, self.initial, self.field, self.head = parts
        self.integrator = integrator


class CILANODE(AbstractODEClassifier):
    """C-NODE on U(0) = [L z, 0]: the C-version of the authors' "2nd-order" (`*_sec_line.py`).

    **Arguments:**

    - `lift`: the channels (features) of L z.
    - `augment`: the zero channels (features) appended after it.
    - the others: as for `CNODE`.
    """

    input_shape: tuple[int, ...] = eqx.field(static=True)
    initial: InitialState
    field: CharacteristicField
    head: Any
    integrator: Integrator

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int | None = 10,
        *,
        width: int,
        lift: int,
        augment: int,
        k: int = 2,
        path_width: int = 4,
        path_activation: Callable[[Array], Array] = jnp.tanh,
        style: Style = "mnist",
        pool: int = 4,
        integrator: Integrator = _INTEGRATOR,
        key: PRNGKeyArray,
    ):
        parts = _assemble(
            "CILANODE",
            input_shape,
            num_classes,
            dynamics="cnode",
            width=width,
            lift=lift,
            augment=augment,
            k=k,
            path_width=path_width,
            path_activation=path_activation,
            style=style,
            pool=pool,
            key=key,
        )
        self.input_shape, self.initial, self.field, self.head = parts
        self.integrator = integrator
