"""The layers the models are assembled from, in the authors' two image layouts and as MLPs.

Image layers act on one example stored channels-last, `[height, width, channels]`; MLP layers
on one vector `[features]`. So in both cases the channel (feature) axis is the last one, and
zero augmentation, second-order splitting and the heads act on it alike. (Models take
channels-first images, as PyTorch and the data readers do, and transpose them once.)

The layouts follow the official C-NODE code (GitHub `XingziXu/CNODE`):

- `"mnist"` (its MNIST scripts, the ANODE repository's `ConvODEFunc` shape): blocks
  InstanceNorm -> 1x1 conv -> ReLU -> 3x3 conv -> ReLU -> InstanceNorm -> 1x1 conv; path
  network 3x3 conv (no bias) -> act -> 3x3 conv (no bias) -> act -> 1x1 conv -> linear.
- `"cifar"` (its CIFAR-10 and SVHN scripts): blocks GroupNorm -> 3x3 conv (no bias) -> ReLU
  -> 3x3 conv (no bias) -> ReLU -> GroupNorm -> 1x1 conv; path network 1x1 conv -> act ->
  3x3 conv -> act -> 1x1 conv -> linear.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray, Real

Style = Literal["mnist", "cifar"]
STYLES: tuple[str, ...] = ("mnist", "cifar")


def group_count(channels: int, most: int = 32) -> int:
    """The largest divisor of `channels` that is at most `most`: the groups of a GroupNorm.

    The authors' code does not pin this down (PyTorch's usual `min(32, C)` does not divide
    their 111 or 90 channels); the parameter count does not depend on it.
    """
    return max(d for d in range(1, min(channels, most) + 1) if channels % d == 0)


def identity(x: Array) -> Array:
    """The identity: a linear output layer."""
    return x


class AbstractConvMethod(eqx.Module):
    """How `Conv` computes a stride-1, "same"-padded k x k convolution of one image.

    All methods compute the same function; they differ in speed by backend (see
    `experiments/cnode_fashion_mnist.py` for measurements). Subclasses implement
    `__call__(x [h, w, c_in], weight [k, k, c_in, c_out]) -> [h, w, c_out]`.
    """

    @abc.abstractmethod
    def __call__(
        self, x: Float[Array, "h w c_in"], weight: Float[Array, "k k c_in c_out"]
    ) -> Float[Array, "h w c_out"]: ...


class LaxConv(AbstractConvMethod):
    """`jax.lax.conv_general_dilated` (NHWC, HWIO): the baseline, and the default off CPU."""

    def __call__(self, x, weight):
        return jax.lax.conv_general_dilated(
            x[None], weight, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )[0]


def _padded(x: Array, size: int) -> Array:
    pad = size // 2
    return jnp.pad(x, ((pad, pad), (pad, pad), (0, 0)))


class Im2colConv(AbstractConvMethod):
    """One matrix product with the k*k shifted copies of the image concatenated (im2col)."""

    def __call__(self, x, weight):
        size, (h, w) = weight.shape[0], x.shape[:2]
        padded = _padded(x, size)
        patches = jnp.concatenate(
            [padded[i : i + h, j : j + w] for i in range(size) for j in range(size)], axis=-1
        )
        return patches @ weight.reshape(-1, weight.shape[-1])


class ShiftedMatmulConv(AbstractConvMethod):
    """A sum of k*k matrix products, one per shifted slice of the padded image.

    Unlike `Im2colConv` it never materialises the k*k-times larger patch matrix, whose
    concatenation and its transpose in the backward pass dominate on CPU.
    """

    def __call__(self, x, weight):
        size, (h, w) = weight.shape[0], x.shape[:2]
        padded = _padded(x, size)
        out = None
        for i in range(size):
            for j in range(size):
                term = padded[i : i + h, j : j + w] @ weight[i, j]
                out = term if out is None else out + term
        return out


class AutoConv(AbstractConvMethod):
    """The fastest method measured on the backend in use: `CPU_CONV` on CPU, else `LaxConv`.

    Chosen when the model is traced, so one model runs well on either backend. Inside the
    while loops of an ODE solve, XLA:CPU's native convolutions and above all their gradients
    run several times slower than matrix products.
    """

    def __call__(self, x, weight):
        method = CPU_CONV if jax.default_backend() == "cpu" else LaxConv()
        return method(x, weight)


# Measured fastest on 2 loaded cores in a C-NODE step at batch 256 (experiments/
# cnode_fashion_mnist.py): im2col 6.9 s, shifted matmuls 9.8 s (direct backprop, median of 2).
CPU_CONV: AbstractConvMethod = Im2colConv()


class Conv(eqx.Module):
    """A stride-1, "same"-padded square convolution of a channels-last image `[h, w, c]`.

    **Arguments:**

    - `in_channels`, `out_channels`: channels of input and output.
    - `kernel_size`: an odd int (1 or 3 here).
    - `use_bias`: whether to add a bias.
    - `method`: an `AbstractConvMethod` for k > 1 (1x1 convolutions are one matrix
        product): `AutoConv()` (default), `LaxConv()`, `Im2colConv()` or
        `ShiftedMatmulConv()`.
    - `key`: a `jax.random.PRNGKey`. Weights and bias are drawn uniformly from
        +-1/sqrt(fan_in), PyTorch's default for `nn.Conv2d` (kaiming-uniform with
        a = sqrt(5)) and equinox's.
    """

    weight: Float[Array, "k k c_in c_out"]
    bias: Float[Array, " c_out"] | None
    method: AbstractConvMethod = eqx.field(static=True)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        use_bias: bool = True,
        method: AbstractConvMethod | None = None,
        key: PRNGKeyArray,
    ):
        if kernel_size % 2 != 1:
            raise ValueError(f"`Conv(kernel_size={kernel_size})`: use an odd kernel size.")
        method = AutoConv() if method is None else method
        if not isinstance(method, AbstractConvMethod):
            raise TypeError(
                f"`Conv(method={method!r})`: pass an `adjoint_lab.cnode.AbstractConvMethod`, "
                "e.g. `LaxConv()` or `ShiftedMatmulConv()`."
            )
        self.method = method
        k_weight, k_bias = jax.random.split(key)
        bound = 1.0 / math.sqrt(in_channels * kernel_size**2)
        shape = (kernel_size, kernel_size, in_channels, out_channels)
        self.weight = jax.random.uniform(k_weight, shape, minval=-bound, maxval=bound)
        self.bias = (
            jax.random.uniform(k_bias, (out_channels,), minval=-bound, maxval=bound)
            if use_bias
            else None
        )

    def __call__(self, x: Float[Array, "h w c_in"]) -> Float[Array, "h w c_out"]:
        out = x @ self.weight[0, 0] if self.weight.shape[0] == 1 else self.method(x, self.weight)
        return out if self.bias is None else out + self.bias


class GroupNorm(eqx.Module):
    """Group normalisation of a channels-last image `[h, w, c]` (eps 1e-5, as PyTorch).

    `groups == channels` without affine parameters is PyTorch's default `InstanceNorm2d`.

    **Arguments:**

    - `groups`: the number of channel groups; must divide `channels`.
    - `channels`: the number of channels.
    - `affine`: learn a per-channel scale and shift.
    """

    weight: Float[Array, " c"] | None
    bias: Float[Array, " c"] | None
    groups: int = eqx.field(static=True)

    def __init__(self, groups: int, channels: int, *, affine: bool = True):
        if channels % groups:
            raise ValueError(f"`GroupNorm({groups}, {channels})`: groups must divide channels.")
        self.groups = groups
        self.weight = jnp.ones(channels) if affine else None
        self.bias = jnp.zeros(channels) if affine else None

    def __call__(self, x: Float[Array, "h w c"]) -> Float[Array, "h w c"]:
        h, w, c = x.shape
        # Statistics as reductions over the leading axis of a [pixels, channels] matrix, then
        # per group over the c channel means: XLA:CPU reduces `[h, w, groups, c / groups]`
        # over axes (0, 1, 3) about 10x slower, forward and backward (0.06 s against 0.63 s
        # for the InstanceNorms of the C-NODE MNIST step, batch 256). A group's mean is the
        # mean of its channels' means, since every channel has h * w pixels.
        pixels = x.reshape(h * w, c)
        mean = self._group_mean(pixels)
        centred = pixels - mean
        var = self._group_mean(centred * centred)
        out = (centred * jax.lax.rsqrt(var + 1e-5)).reshape(h, w, c)
        if self.weight is not None:
            out = out * self.weight + self.bias  # pyright: ignore[reportOperatorIssue]
        return out

    def _group_mean(self, pixels: Float[Array, "p c"]) -> Float[Array, " c"]:
        """Each channel's group mean over all pixels, repeated over the group's channels."""
        means = jnp.mean(pixels, axis=0)
        c = means.shape[0]
        if self.groups == c:
            return means
        grouped = jnp.mean(means.reshape(self.groups, c // self.groups), axis=1)
        return jnp.repeat(grouped, c // self.groups)


class ConvBlock(eqx.Module):
    """One "T block": a conv net `[h, w, c_in] -> [h, w, c_out]`.

    **Arguments:**

    - `in_channels`, `out_channels`: channels of the input and of the output.
    - `width`: hidden channels.
    - `style`: `"mnist"` or `"cifar"` (see the module docstring).
    - `conv`: the `AbstractConvMethod` of its 3x3 convolutions (`None`: `AutoConv()`).
    - `key`: a `jax.random.PRNGKey`.
    """

    norm_in: GroupNorm
    conv1: Conv
    conv2: Conv
    norm_mid: GroupNorm
    conv3: Conv

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        width: int,
        style: Style,
        *,
        conv: AbstractConvMethod | None = None,
        key: PRNGKeyArray,
    ):
        k1, k2, k3 = jax.random.split(key, 3)
        if style == "mnist":
            self.norm_in = GroupNorm(in_channels, in_channels, affine=False)
            self.conv1 = Conv(in_channels, width, 1, key=k1)
            self.conv2 = Conv(width, width, 3, method=conv, key=k2)
            self.norm_mid = GroupNorm(width, width, affine=False)
        else:
            self.norm_in = GroupNorm(group_count(in_channels), in_channels)
            self.conv1 = Conv(in_channels, width, 3, use_bias=False, method=conv, key=k1)
            self.conv2 = Conv(width, width, 3, use_bias=False, method=conv, key=k2)
            self.norm_mid = GroupNorm(group_count(width), width)
        self.conv3 = Conv(width, out_channels, 1, key=k3)

    def __call__(self, u: Float[Array, "h w c"]) -> Float[Array, "h w c_out"]:
        h = jax.nn.relu(self.conv1(self.norm_in(u)))
        h = jax.nn.relu(self.conv2(h))
        return self.conv3(self.norm_mid(h))


class ConvPath(eqx.Module):
    """The characteristic velocity a(s, z) of an image z: convs on [s, z], then linear to k.

    **Arguments:**

    - `image_shape`: `(height, width, channels)` of z (channels-last).
    - `k`: the number of characteristic directions.
    - `width`: hidden channels.
    - `style`: `"mnist"` or `"cifar"`.
    - `activation`: the hidden activation.
    - `output`: applied to the k directions (the authors: `jax.nn.relu6`, so a_j in
        [0, 6]; `identity`: linear).
    - `conv`: the `AbstractConvMethod` of its 3x3 convolutions (`None`: `AutoConv()`).
    - `key`: a `jax.random.PRNGKey`.
    """

    conv1: Conv
    conv2: Conv
    conv3: Conv
    linear: eqx.nn.Linear
    activation: Callable[[Array], Array] = eqx.field(static=True)
    output: Callable[[Array], Array] = eqx.field(static=True)

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        k: int,
        width: int,
        style: Style,
        activation: Callable[[Array], Array],
        *,
        output: Callable[[Array], Array] = identity,
        conv: AbstractConvMethod | None = None,
        key: PRNGKeyArray,
    ):
        height, breadth, channels = image_shape
        k1, k2, k3, k4 = jax.random.split(key, 4)
        if style == "mnist":
            self.conv1 = Conv(channels + 1, width, 3, use_bias=False, method=conv, key=k1)
            self.conv2 = Conv(width, width, 3, use_bias=False, method=conv, key=k2)
        else:
            self.conv1 = Conv(channels + 1, width, 1, key=k1)
            self.conv2 = Conv(width, width, 3, method=conv, key=k2)
        self.conv3 = Conv(width, 3, 1, key=k3)
        self.linear = eqx.nn.Linear(3 * height * breadth, k, key=k4)
        self.activation = activation
        self.output = output

    def __call__(self, s: Real[ArrayLike, ""], z: Float[Array, "h w c"]) -> Float[Array, " k"]:
        # The time enters as one constant image channel, as in the authors' code.
        time = jnp.broadcast_to(jnp.asarray(s, z.dtype), (*z.shape[:2], 1))
        h = self.activation(self.conv1(jnp.concatenate([time, z], axis=-1)))
        h = self.activation(self.conv2(h))
        return self.output(self.linear(jnp.ravel(self.conv3(h))))


class MLPPath(eqx.Module):
    """The characteristic velocity a(s, z) of a vector z: an MLP on [s, z].

    **Arguments:**

    - `features`: the length of z.
    - `k`: the number of characteristic directions.
    - `width`: hidden units (two hidden layers).
    - `activation`: the hidden activation.
    - `output`: applied to the k directions (`identity`: linear).
    - `key`: a `jax.random.PRNGKey`.
    """

    mlp: eqx.nn.MLP

    def __init__(
        self,
        features: int,
        k: int,
        width: int,
        activation: Callable[[Array], Array],
        *,
        output: Callable[[Array], Array] = identity,
        key: PRNGKeyArray,
    ):
        self.mlp = eqx.nn.MLP(
            features + 1, k, width, 2, activation=activation, final_activation=output, key=key
        )

    def __call__(self, s: Real[ArrayLike, ""], z: Float[Array, " n"]) -> Float[Array, " k"]:
        return self.mlp(jnp.concatenate([jnp.asarray(s, z.dtype)[None], z]))


class StackedNets(eqx.Module):
    """`k` networks of one architecture, stored stacked and evaluated together.

    Calling it on `u` returns the k outputs stacked on a new *last* axis, the layout
    `CharacteristicField` takes: `[*out_shape, k]`.

    **Arguments:**

    - `make`: `key -> network`.
    - `k`: how many.
    - `key`: a `jax.random.PRNGKey`.
    """

    nets: eqx.Module

    def __init__(self, make: Callable[[PRNGKeyArray], eqx.Module], k: int, *, key: PRNGKeyArray):
        self.nets = eqx.filter_vmap(make)(jax.random.split(key, k))

    def __call__(self, u: Array) -> Array:
        out = eqx.filter_vmap(lambda net: net(u))(self.nets)
        return jnp.moveaxis(out, 0, -1)


class InitialState(eqx.Module):
    """U(0) from the input z: an optional input layer, then optional zero augmentation.

    **Arguments:**

    - `layer`: `None` (U(0) = z), or a bias-free linear map (a 3x3 conv for images) to the
        lifted state (IL-NODE).
    - `augment`: zero channels (features) appended to the state (ANODE), on the last axis.
    """

    layer: Conv | eqx.nn.Linear | None
    augment: int = eqx.field(static=True)

    def __call__(self, z: Array) -> Array:
        u = z if self.layer is None else self.layer(z)
        if self.augment:
            zeros = jnp.zeros((*u.shape[:-1], self.augment), u.dtype)
            u = jnp.concatenate([u, zeros], axis=-1)
        return u


def _pooling_matrix(size: int, out: int, dtype) -> Array:
    # PyTorch's AdaptiveAvgPool: window i covers [floor(i*size/out), ceil((i+1)*size/out)).
    matrix = np.zeros((out, size))
    for i in range(out):
        start, stop = (i * size) // out, math.ceil((i + 1) * size / out)
        matrix[i, start:stop] = 1.0 / (stop - start)
    return jnp.asarray(matrix, dtype)


class ConvHead(eqx.Module):
    """1x1 conv to 6 channels -> adaptive average pool to `pool` x `pool` -> linear.

    Reads the first `in_channels` channels of the final state.

    **Arguments:**

    - `in_channels`: channels read from the final state.
    - `num_classes`: the number of logits.
    - `pool`: the side of the pooled map.
    - `key`: a `jax.random.PRNGKey`.
    - `head_channels`: the channels of the 1x1 conv (the authors: 6).
    """

    conv: Conv
    linear: eqx.nn.Linear
    in_channels: int = eqx.field(static=True)
    pool: int = eqx.field(static=True)

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        pool: int,
        *,
        key: PRNGKeyArray,
        head_channels: int = 6,
    ):
        k1, k2 = jax.random.split(key)
        self.in_channels = in_channels
        self.pool = pool
        self.conv = Conv(in_channels, head_channels, 1, key=k1)
        self.linear = eqx.nn.Linear(head_channels * pool * pool, num_classes, key=k2)

    def __call__(self, u: Float[Array, "h w c"]) -> Float[Array, " classes"]:
        h = self.conv(u[..., : self.in_channels])
        rows = _pooling_matrix(h.shape[0], self.pool, h.dtype)
        cols = _pooling_matrix(h.shape[1], self.pool, h.dtype)
        pooled = jnp.einsum("ih,hwc,jw->ijc", rows, h, cols)
        return self.linear(jnp.ravel(pooled))


class LinearHead(eqx.Module):
    """A linear map from the first `in_features` features of the final state to logits."""

    linear: eqx.nn.Linear
    in_features: int = eqx.field(static=True)

    def __init__(self, in_features: int, num_classes: int, *, key: PRNGKeyArray):
        self.in_features = in_features
        self.linear = eqx.nn.Linear(in_features, num_classes, key=key)

    def __call__(self, u: Float[Array, " n"]) -> Float[Array, " classes"]:
        return self.linear(u[: self.in_features])


class Projection(eqx.Module):
    """No head: the first `size` channels (features) of the final state.

    Images come back channels-first, `[size, h, w]`, like the models' inputs.
    """

    size: int = eqx.field(static=True)

    def __call__(self, u: Array) -> Array:
        out = u[..., : self.size]
        return jnp.moveaxis(out, -1, 0) if out.ndim == 3 else out
