"""A small Fourier Neural Operator (Li et al. 2020) in 1-d and 2-d: the Table 1 baseline of
"Base Models for Parabolic PDEs".

`FNO` maps input fields sampled on a uniform grid (for Table 1: the drift, the initial
condition and the coordinates) to output fields on the same grid (the solution at every
time point, one output channel per time). Each Fourier layer is

    h <- act(K h + W h),   (K h) = irfft(R . rfft(h)) on the lowest `modes` frequencies,

with R a learned complex (in, out, modes) tensor and W a pointwise linear map. Complex
weights are stored as separate real and imaginary arrays (optax and `eqx.is_inexact_array`
then treat them as ordinary parameters), so `parameter_count` counts a complex weight as
two reals; the paper's "19.9K" counts it once (see `fno_parameter_count(..., complex_once=True)`).

The grid is not periodic: `padding` zero-pads every spatial axis before the Fourier layers
and crops after them, as in the reference FNO code, so that the FFT's wrap-around does not
couple the two ends of the domain.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

__all__ = ["FNO", "SpectralConv", "fno_parameter_count", "parameter_count"]


def parameter_count(model: eqx.Module) -> int:
    """The number of real scalars in the floating-point array leaves of `model` (also for
    an abstract model from `eqx.filter_eval_shape`, whose leaves are shape structs)."""
    return int(
        sum(
            np.prod(leaf.shape, dtype=int)
            for leaf in jax.tree.leaves(model)
            if hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.inexact)
        )
    )


class SpectralConv(eqx.Module):
    """The Fourier integral operator of one FNO layer, on a 1-d or 2-d grid.

    1-d: the lowest `modes[0]` rfft frequencies are multiplied by a learned complex
    (in, out) matrix each; the rest are zeroed. 2-d: `rfft2`, and the kept block is
    kx in [0, m0) and [-m0, 0) (two weight blocks: the full-FFT axis has both signs)
    times ky in [0, m1).

    **Fields:** `real`, `imag` of shape `(blocks, in, out, *modes)`, `modes`.
    """

    real: Float[Array, "blocks cin cout *modes"]
    imag: Float[Array, "blocks cin cout *modes"]
    modes: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, cin: int, cout: int, modes: tuple[int, ...], *, key: PRNGKeyArray):
        if len(modes) not in (1, 2):
            raise ValueError(f"`SpectralConv(modes={modes!r})`: only 1-d and 2-d grids.")
        blocks = 1 if len(modes) == 1 else 2
        shape = (blocks, cin, cout, *modes)
        kr, ki = jax.random.split(key)
        # The reference FNO's scale 1 / (cin cout), uniform on [0, scale).
        scale = 1.0 / (cin * cout)
        self.real = scale * jax.random.uniform(kr, shape)
        self.imag = scale * jax.random.uniform(ki, shape)
        self.modes = tuple(int(m) for m in modes)

    def __call__(self, h: Float[Array, "cin ..."]) -> Float[Array, "cout ..."]:
        cout = self.real.shape[2]
        if len(self.modes) == 1:
            (m,) = self.modes
            n = h.shape[-1]
            if m > n // 2 + 1:
                raise ValueError(f"`SpectralConv`: {m} modes on a grid of {n} points.")
            h_ft = jnp.fft.rfft(h, axis=-1)
            w = (self.real + 1j * self.imag).astype(h_ft.dtype)
            out = jnp.einsum("ik,iok->ok", h_ft[:, :m], w[0])
            out_ft = jnp.zeros((cout, h_ft.shape[-1]), h_ft.dtype).at[:, :m].set(out)
            return jnp.fft.irfft(out_ft, n=n, axis=-1).astype(h.dtype)
        m0, m1 = self.modes
        n0, n1 = h.shape[-2:]
        if 2 * m0 > n0 or m1 > n1 // 2 + 1:
            raise ValueError(f"`SpectralConv`: modes {self.modes} on a grid {(n0, n1)}.")
        h_ft = jnp.fft.rfft2(h, axes=(-2, -1))
        w = (self.real + 1j * self.imag).astype(h_ft.dtype)
        low = jnp.einsum("ixy,ioxy->oxy", h_ft[:, :m0, :m1], w[0])
        high = jnp.einsum("ixy,ioxy->oxy", h_ft[:, -m0:, :m1], w[1])
        out_ft = jnp.zeros((cout, *h_ft.shape[-2:]), h_ft.dtype)
        out_ft = out_ft.at[:, :m0, :m1].set(low).at[:, -m0:, :m1].set(high)
        return jnp.fft.irfft2(out_ft, s=(n0, n1), axes=(-2, -1)).astype(h.dtype)


def _pointwise(layer: eqx.nn.Linear, h: Float[Array, "cin ..."]) -> Float[Array, "cout ..."]:
    # A 1x1 convolution: the same linear map at every grid point.
    return jnp.einsum("oi,i...->o...", layer.weight, h) + layer.bias.reshape(  # pyright: ignore[reportOptionalMemberAccess]
        (-1,) + (1,) * (h.ndim - 1)
    )


class FNO(eqx.Module):
    """Fourier Neural Operator on a `len(modes)`-d grid: lift, `n_layers` Fourier layers,
    project (width -> `projection` -> `cout`), all pointwise except the spectral convs.

    **Fields:** `lift`, `spectral`, `pointwise`, `project`, `modes`, `padding`.

    Call on inputs of shape `(cin, *grid)`; returns `(cout, *grid)`.
    """

    lift: eqx.nn.Linear
    spectral: tuple[SpectralConv, ...]
    pointwise: tuple[eqx.nn.Linear, ...]
    project: tuple[eqx.nn.Linear, eqx.nn.Linear]
    modes: tuple[int, ...] = eqx.field(static=True)
    padding: int = eqx.field(static=True)

    def __init__(
        self,
        cin: int,
        cout: int,
        *,
        modes: int | tuple[int, ...],
        width: int,
        n_layers: int = 4,
        projection: int = 64,
        padding: int = 0,
        key: PRNGKeyArray,
    ):
        modes = (int(modes),) if isinstance(modes, int | np.integer) else tuple(modes)
        keys = jax.random.split(key, 2 * n_layers + 3)
        self.lift = eqx.nn.Linear(cin, width, key=keys[0])
        self.spectral = tuple(
            SpectralConv(width, width, modes, key=k) for k in keys[1 : n_layers + 1]
        )
        self.pointwise = tuple(
            eqx.nn.Linear(width, width, key=k) for k in keys[n_layers + 1 : 2 * n_layers + 1]
        )
        self.project = (
            eqx.nn.Linear(width, projection, key=keys[-2]),
            eqx.nn.Linear(projection, cout, key=keys[-1]),
        )
        self.modes = modes
        self.padding = int(padding)

    def __call__(self, u: Float[Array, "cin ..."]) -> Float[Array, "cout ..."]:
        dims = len(self.modes)
        if u.ndim != dims + 1:
            raise ValueError(f"`FNO`: expected (channels, *grid) with {dims} grid axes.")
        h = _pointwise(self.lift, u)
        if self.padding:
            h = jnp.pad(h, [(0, 0)] + [(0, self.padding)] * dims)
        last = len(self.spectral) - 1
        for i, (spectral, pointwise) in enumerate(zip(self.spectral, self.pointwise, strict=True)):
            h = spectral(h) + _pointwise(pointwise, h)
            if i < last:  # no activation after the last Fourier layer (reference FNO)
                h = jax.nn.gelu(h)
        if self.padding:
            h = h[(slice(None),) + (slice(0, -self.padding),) * dims]
        h = jax.nn.gelu(_pointwise(self.project[0], h))
        return _pointwise(self.project[1], h)


def fno_parameter_count(
    cin: int,
    cout: int,
    *,
    modes: int | tuple[int, ...],
    width: int,
    n_layers: int = 4,
    projection: int = 64,
    complex_once: bool = False,
) -> int:
    """The closed-form parameter count of `FNO(cin, cout, ...)`.

    lift (cin + 1) width; per layer: spectral blocks * width^2 * prod(modes) complex weights
    (blocks = 2 in 2-d) and a pointwise (width + 1) width; projection (width + 1) projection
    + (projection + 1) cout. `complex_once` counts a complex weight as one parameter (the
    paper's convention) instead of two reals."""
    modes = (int(modes),) if isinstance(modes, int | np.integer) else tuple(modes)
    blocks = 1 if len(modes) == 1 else 2
    per_complex = 1 if complex_once else 2
    spectral = per_complex * blocks * width * width * math.prod(modes)
    return (
        (cin + 1) * width
        + n_layers * (spectral + (width + 1) * width)
        + (width + 1) * projection
        + (projection + 1) * cout
    )
