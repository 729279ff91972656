"""Latent vector fields d(state)/ds = f(s, state; z) of C-NODE and its baselines.

Each field acts on one example: the state `u` of one input `z`. `BatchedField` maps a field
over a batch, so that a whole batch can be solved as one ODE (as the authors' torchdiffeq code
does: one step-size sequence for the batch, chosen by the error norm over all of it).
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Real

__all__ = [
    "AbstractLatentField",
    "AutonomousField",
    "BatchedField",
    "CharacteristicField",
    "SecondOrderField",
]


class AbstractLatentField(eqx.Module):
    """A latent vector field `field(s, u, z) -> du/ds`: the dynamics of an `ODEClassifier`.

    `u` is the state of one example (or of a batch, for `BatchedField`) and `z` its input;
    the final subclasses are the dynamics of the model family: `AutonomousField` (NODE,
    ANODE, IL-NODE), `CharacteristicField` (C-NODE) and `SecondOrderField` (SONODE). Any
    subclass can be the `field` of an `adjoint_lab.cnode.ODEClassifier`.
    """

    @abc.abstractmethod
    def __call__(self, s: Real[Array, ""], u: Array, z: Array) -> Array:
        """du/ds at time `s` for the state `u` of the input `z`."""


class CharacteristicField(AbstractLatentField):
    """dU/ds = T(U) a(s, z) = sum_j a_j(s, z) T^(j)(U): the C-NODE field.

    Along a characteristic curve x(s) of a first-order PDE whose solution is u, the value
    U(s) = u(x(s)) moves with dU/ds = J_x u(x(s)) dx/ds. C-NODE learns the characteristic
    velocity dx/ds = a(s, z) from the input z and the Jacobian J_x u ~ T(U), so that
    different inputs move along different characteristics of one PDE solution.

    **Arguments:**

    - `direction`: `a(s, z) -> [k]`, the characteristic velocity; z is the original input,
        not the current state.
    - `jacobian`: `T(u) -> [*u.shape, k]`, the Jacobian of the PDE solution along its `k`
        coordinates (for a vector state `u: [n]`, an `[n, k]` matrix).

    ??? cite "References"

        Xu, Hasan, Elkhalil, Ding and Tarokh, "Characteristic Neural Ordinary Differential
        Equations", ICLR 2023, arXiv 2111.13207.
    """

    direction: Callable[[Real[Array, ""], Array], Float[Array, " k"]]
    jacobian: Callable[[Array], Array]

    def __call__(self, s: Real[Array, ""], u: Array, z: Array) -> Array:
        a = self.direction(s, z)
        return jnp.tensordot(self.jacobian(u), a, axes=1)


class AutonomousField(AbstractLatentField):
    """dU/ds = f(U): a neural ODE whose field sees neither s nor the input (NODE, ANODE, IL-NODE).

    **Arguments:**

    - `net`: `f(u)`, of the shape of `u`.
    """

    net: Callable[[Array], Array]

    def __call__(self, s: Real[Array, ""], u: Array, z: Array) -> Array:
        return self.net(u)


class SecondOrderField(AbstractLatentField):
    """dx/ds = v, dv/ds = f(x, v) on the state u = concat(x, v) along the last axis.

    The second-order neural ODE of Massaroli et al. (Dissecting Neural ODEs, NeurIPS 2020),
    written as a first-order system of twice the size.

    **Arguments:**

    - `net`: `f(concat(x, v)) -> dv/ds`, of the shape of `x` (for images, the channel axis
        is the last: `adjoint_lab.cnode` stores images channels-last inside its models).
    """

    net: Callable[[Array], Array]

    def __call__(self, s: Real[Array, ""], u: Array, z: Array) -> Array:
        v = u[..., u.shape[-1] // 2 :]
        return jnp.concatenate([v, self.net(u)], axis=-1)


class BatchedField(AbstractLatentField):
    """A per-example field mapped over the leading (batch) axis of the state and the input.

    **Arguments:**

    - `field`: `field(s, u, z)` for one example.
    """

    field: Callable[[Real[Array, ""], Array, Array], Array]

    def __call__(self, s: Real[Array, ""], u: Array, z: Array) -> Array:
        return jax.vmap(self.field, in_axes=(None, 0, 0))(s, u, z)
