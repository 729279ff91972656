"""What a training task hands to `fit`: pure functions over an array pytree of parameters."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jaxtyping import Array, PRNGKeyArray, PyTree, Scalar

Params = PyTree[Array]
Batch = PyTree[Any]


@dataclass(frozen=True)
class Task:
    """One experiment's model, data and loss, as the training loop sees them.

    **Arguments:**

    - `name`: shown in logs and summaries.
    - `init`: `key -> params`, an array-only pytree (split static parts off first, e.g. with
      `eqx.partition` or `nnx.split`, and close over them in `loss`).
    - `loss`: `(params, batch, key) -> (loss, metrics)`; pure and jittable; `metrics` is a dict of
      scalars logged beside the loss.
    - `batch`: `step -> batch`, the *global* batch for a step as NumPy arrays whose leading axis is
      the example axis. It must depend only on the step (and the task's seed) so that a resumed
      run sees exactly the batches an uninterrupted run would.
    - `batch_size`: examples per step, for throughput figures.
    - `evaluate`: optional `params -> metrics`, run every `train.eval_every` steps and at the end.
    - `report`: optional `(params, run_dir) -> None` that writes task-specific plots or tables.
    - `value_and_grad`: optional `(params, batch, key) -> ((loss, metrics), grads)` for tasks
      whose gradient is not `jax.value_and_grad(loss)` (an adjoint method, say); jittable.
    - `param_shardings`: optional `(mesh, params) -> shardings` placing the parameters on a
      mesh (say, layers split over a `"layer"` axis); the optimizer state follows them.
      Without it the state is replicated.
    """

    name: str
    init: Callable[[PRNGKeyArray], Params]
    loss: Callable[[Params, Batch, PRNGKeyArray], tuple[Scalar, Mapping[str, Scalar]]]
    batch: Callable[[int], Batch]
    batch_size: int
    evaluate: Callable[[Params], Mapping[str, Any]] | None = None
    report: Callable[[Params, Path], None] | None = None
    value_and_grad: (
        Callable[[Params, Batch, PRNGKeyArray], tuple[tuple[Scalar, Mapping[str, Scalar]], Params]]
        | None
    ) = None
    param_shardings: Callable[[Any, Params], PyTree[Any]] | None = None
