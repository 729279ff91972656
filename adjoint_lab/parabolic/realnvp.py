"""A RealNVP normalising flow (Dinh, Sohl-Dickstein, Bengio 2017) in equinox, for the
meta-learned base distribution p_meta of "Base Models for Parabolic PDEs" (App. B.3).

The flow maps data x to a latent z = f(x) ~ N(0, I) through a fixed standardisation
(data mean and scale) followed by affine couplings with alternating binary masks:

    y = m * x + (1 - m) * (x * exp(s(m * x)) + t(m * x)),   log|det dy/dx| = sum (1 - m) s,

so log p(x) = log N(f(x); 0, I) + log|det df/dx| and sampling runs the couplings backwards
from z ~ N(0, I). The scale s = tanh(raw) * scale keeps the Jacobian well conditioned.
The paper uses 32 couplings from `normflows`; 4-8 suffice for 2-d Gaussian mixtures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float, PRNGKeyArray

from ..config.schema import OptimConfig
from ..train import TrainState, make_optimizer, train_step, value_and_grad_of

__all__ = ["AffineCoupling", "RealNVP", "fit_realnvp"]


class AffineCoupling(eqx.Module):
    """One affine coupling: the coordinates where `mask` is 0 are scaled and shifted by
    functions of those where it is 1."""

    mask: Bool[Array, " d"]
    net: eqx.nn.MLP
    scale: Float[Array, " d"]

    def __init__(self, mask: Bool[ArrayLike, " d"], width: int, depth: int, *, key):
        # Boolean, so that it is never an (inexact) trainable leaf.
        self.mask = jnp.asarray(mask, dtype=bool)
        d = self.mask.shape[0]
        self.net = eqx.nn.MLP(d, 2 * d, width, depth, activation=jnp.tanh, key=key)
        self.scale = jnp.ones(d)

    def _shift_scale(self, x_fixed: Float[Array, " d"]) -> tuple[Array, Array]:
        raw_s, t = jnp.split(self.net(x_fixed), 2)
        # Zero where the mask keeps x: those coordinates pass through unchanged.
        return (
            jnp.where(self.mask, 0.0, self.scale * jnp.tanh(raw_s)),
            jnp.where(self.mask, 0.0, t),
        )

    def forward(self, x: Float[Array, " d"]) -> tuple[Float[Array, " d"], Float[Array, ""]]:
        """x -> y (towards the latent) and log|det dy/dx|."""
        s, t = self._shift_scale(jnp.where(self.mask, x, 0.0))
        return x * jnp.exp(s) + t, jnp.sum(s)

    def inverse(self, y: Float[Array, " d"]) -> Float[Array, " d"]:
        s, t = self._shift_scale(jnp.where(self.mask, y, 0.0))
        return (y - t) * jnp.exp(-s)


class RealNVP(eqx.Module):
    """A RealNVP density on R^d: standardisation, then `n_couplings` affine couplings with
    alternating masks, onto a standard normal latent.

    **Fields:**

    - `loc`, `log_scale`: the fixed standardisation (x - loc) / exp(log_scale), shape `(d,)`
        (not trained; set from the data by `fit_realnvp`).
    - `couplings`: the `AffineCoupling` layers, applied in order from data to latent.
    """

    loc: Float[Array, " d"]
    log_scale: Float[Array, " d"]
    couplings: tuple[AffineCoupling, ...]

    def __init__(
        self,
        d: int,
        n_couplings: int = 6,
        width: int = 64,
        depth: int = 2,
        *,
        key: PRNGKeyArray,
        loc: Float[ArrayLike, " d"] | Sequence[float] | None = None,
        scale: Float[ArrayLike, " d"] | Sequence[float] | None = None,
    ):
        if d < 2:
            raise ValueError(f"`RealNVP`: needs d >= 2 to split coordinates; got d = {d}.")
        half = jnp.arange(d) < d // 2
        masks = [jnp.where(i % 2 == 0, half, ~half) for i in range(n_couplings)]
        keys = jax.random.split(key, n_couplings)
        self.couplings = tuple(
            AffineCoupling(m, width, depth, key=k) for m, k in zip(masks, keys, strict=True)
        )
        self.loc = jnp.zeros(d) if loc is None else jnp.asarray(loc, dtype=float)
        self.log_scale = jnp.zeros(d) if scale is None else jnp.log(jnp.asarray(scale, dtype=float))

    @property
    def d(self) -> int:
        return self.loc.shape[0]

    def forward(self, x: Float[Array, " d"]) -> tuple[Float[Array, " d"], Float[Array, ""]]:
        """Data x -> latent z = f(x), and log|det df/dx|."""
        z = (x - self.loc) * jnp.exp(-self.log_scale)
        log_det = -jnp.sum(self.log_scale)
        for coupling in self.couplings:
            z, ld = coupling.forward(z)
            log_det = log_det + ld
        return z, log_det

    def inverse(self, z: Float[Array, " d"]) -> Float[Array, " d"]:
        """Latent z -> data x = f^{-1}(z)."""
        for coupling in reversed(self.couplings):
            z = coupling.inverse(z)
        return z * jnp.exp(self.log_scale) + self.loc

    def log_prob(self, x: Float[Array, " d"]) -> Float[Array, ""]:
        """log p(x) = log N(f(x); 0, I) + log|det df/dx| for one point (vmap for a batch)."""
        z, log_det = self.forward(x)
        return -0.5 * jnp.sum(z**2) - 0.5 * self.d * math.log(2 * math.pi) + log_det

    def sample(self, key: PRNGKeyArray, n: int) -> Float[Array, "n d"]:
        """`n` independent samples x = f^{-1}(z), z ~ N(0, I)."""
        z = jax.random.normal(key, (n, self.d), self.loc.dtype)
        return jax.vmap(self.inverse)(z)


def fit_realnvp(
    key: PRNGKeyArray,
    data: Float[ArrayLike, "n d"],
    *,
    n_couplings: int = 6,
    width: int = 64,
    depth: int = 2,
    steps: int = 1500,
    learning_rate: float = 1e-3,
    weight_decay: float = 1e-5,
) -> tuple[RealNVP, Float[Array, " steps"]]:
    """Fit a `RealNVP` to `data` by maximum likelihood (full-batch AdamW, the paper's
    optimiser; weight decay 1e-5 as in App. B.3).

    **Returns:**

    The fitted flow and the mean negative log-likelihood (nats per sample) at every step.
    """
    data = jnp.asarray(data, dtype=float)
    flow = RealNVP(
        data.shape[1],
        n_couplings,
        width,
        depth,
        key=key,
        loc=data.mean(0),
        scale=data.std(0) + 1e-6,
    )
    # Train the couplings only: the standardisation stays fixed (and out of weight decay).
    spec = jax.tree.map(eqx.is_inexact_array, flow)
    spec = eqx.tree_at(lambda f: (f.loc, f.log_scale), spec, replace=(False, False))
    params, static = eqx.partition(flow, spec)
    optimiser = make_optimizer(
        OptimConfig(name="adamw", lr=learning_rate, weight_decay=weight_decay), steps
    )

    def loss(p, batch, key):
        del key  # full-batch and deterministic
        return -jnp.mean(jax.vmap(eqx.combine(p, static).log_prob)(batch)), {}

    step = train_step(value_and_grad_of(loss), optimiser)
    unused_key = jax.random.key(0)  # the step takes a key; this loss ignores it

    def body(state, _):
        state, value, _ = step(state, data, unused_key)
        return state, value

    # One scan: a single compile for the whole fit.
    state, losses = jax.lax.scan(body, TrainState.create(params, optimiser), length=steps)
    params = state.params
    return eqx.combine(params, static), losses
