"""The training state: everything a checkpoint must hold to continue a run exactly."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import optax
from jaxtyping import Array, Int, PyTree


class TrainState(eqx.Module):
    """Step counter, parameters and optimiser state.

    The per-step PRNG key is derived from the run's seed and `step` (`jax.random.fold_in`), so
    it needs no storage and a resumed run draws exactly the keys an uninterrupted run would.
    """

    step: Int[Array, ""]
    params: PyTree[Array]
    opt_state: optax.OptState

    @classmethod
    def create(cls, params: PyTree[Array], optimizer: optax.GradientTransformation) -> TrainState:
        return cls(step=jnp.asarray(0, jnp.int32), params=params, opt_state=optimizer.init(params))
