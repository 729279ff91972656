"""A task-conditioned DeepONet (Lu et al. 2021) for the random-basis parabolic family.

u(t, x) ~ sum_j b_j(sensors) tau_j(x, t) + b0: the branch net sees the task through its
inputs at fixed sensor points (the drift and the initial condition there), the trunk net
sees the query point. The paper's code feeds the branch only the initial condition at 100
points, identical for every drift, so its DeepONet cannot tell tasks apart; here the drift
is part of the branch input.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

__all__ = ["DeepONet"]


class DeepONet(eqx.Module):
    """Branch MLP on `n_sensors` task features, trunk MLP on (x, t) in `d + 1` dimensions,
    tanh, `basis` shared outputs (Tables 3-4 of the paper: 15).

    **Fields:** `branch`, `trunk`, `bias`.
    """

    branch: eqx.nn.MLP
    trunk: eqx.nn.MLP
    bias: Float[Array, ""]

    def __init__(
        self,
        n_sensors: int,
        d: int,
        *,
        width: int = 64,
        depth: int = 4,
        basis: int = 15,
        key: PRNGKeyArray,
    ):
        kb, kt = jax.random.split(key)
        self.branch = eqx.nn.MLP(n_sensors, basis, width, depth, activation=jnp.tanh, key=kb)
        self.trunk = eqx.nn.MLP(d + 1, basis, width, depth, activation=jnp.tanh, key=kt)
        self.bias = jnp.zeros(())

    def __call__(
        self, sensors: Float[Array, " n_sensors"], query: Float[Array, "q d+1"]
    ) -> Float[Array, " q"]:
        """u at each query (x, t) for the task whose sensor values are `sensors`."""
        b = self.branch(sensors)
        return jax.vmap(self.trunk)(query) @ b + self.bias
