"""The pure training step: loss -> gradients -> optax update -> metrics.

Every training loop of the package and of `experiments/` is built from `train_step`, so an
experiment that needs its own loop (many seeds in one process, say) differs from `fit` only in
what it does between steps, never in how a step is taken.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import optax
from jaxtyping import Array, PRNGKeyArray, PyTree, Scalar

from .state import TrainState

__all__ = ["ValueAndGrad", "train_step", "value_and_grad_of"]

Params = PyTree[Array]
Batch = PyTree[Any]
ValueAndGrad = Callable[
    [Params, Batch, PRNGKeyArray], tuple[tuple[Scalar, Mapping[str, Scalar]], Params]
]
Step = Callable[[TrainState, Batch, PRNGKeyArray], tuple[TrainState, Scalar, dict[str, Scalar]]]


def value_and_grad_of(
    loss: Callable[[Params, Batch, PRNGKeyArray], tuple[Scalar, Mapping[str, Scalar]]],
) -> ValueAndGrad:
    """`jax.value_and_grad` of a `(params, batch, key) -> (loss, metrics)` loss."""
    return jax.value_and_grad(loss, has_aux=True)


def train_step(value_and_grad: ValueAndGrad, optimizer: optax.GradientTransformation) -> Step:
    """The pure step `(state, batch, key) -> (state, loss, metrics)`.

    **Arguments:**

    - `value_and_grad`: `(params, batch, key) -> ((loss, metrics), grads)`: autodiff
        (`value_and_grad_of(loss)`) or any other gradient method (an adjoint, say).
    - `optimizer`: an optax transformation (see `make_optimizer`).

    **Returns:**

    A pure, jittable function. `metrics` holds the loss function's metrics and `grad_norm`,
    the global norm of the gradient. The step does not check the loss: `fit` does, on device,
    without a host round trip per step.
    """

    def step(state: TrainState, batch: Batch, key: PRNGKeyArray):
        (loss, metrics), grads = value_and_grad(state.params, batch, key)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        stepped = TrainState(step=state.step + 1, params=params, opt_state=opt_state)
        return stepped, loss, dict(metrics, grad_norm=optax.tree.norm(grads))

    return step
