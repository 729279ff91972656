"""Parameter counts, parameter matching by width, and the authors' architectures.

The paper compares models at a "similar computational budget", which its code implements as
matched parameter counts (about 112-115 K on 3x32x32 images, 83-90 K on 1x28x28) chosen
through the width of the vector-field blocks. `PAPER_ARCHITECTURES` pins those widths (from
the official code at the commits of the logged runs); `matched_width` finds a width for any
other budget.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import equinox as eqx
import jax
import numpy as np
from jaxtyping import PRNGKeyArray

from ..core.ode import Integrator
from ._models import (
    ANODE,
    CANODE,
    CILANODE,
    CILNODE,
    CNODE,
    ILANODE,
    ILNODE,
    NODE,
    SONODE,
    ODEClassifier,
)

__all__ = [
    "MODELS",
    "PAPER_ARCHITECTURES",
    "count_parameters",
    "format_parameter_counts",
    "matched_width",
    "paper_model",
    "paper_parameter_counts",
]

# The factory of each model name of the configs.
MODELS: dict[str, Callable[..., ODEClassifier]] = {
    "node": NODE,
    "anode": ANODE,
    "ilnode": ILNODE,
    "ilanode": ILANODE,
    "sonode": SONODE,
    "cnode": CNODE,
    "canode": CANODE,
    "cilnode": CILNODE,
    "cilanode": CILANODE,
}

_CIFAR = {"input_shape": (3, 32, 32), "style": "cifar", "pool": 4}
_MNIST = {"input_shape": (1, 28, 28), "style": "mnist", "pool": 8}

# Constructor arguments of the authors' models (official code, commits 8dfde80, ab6dded,
# 45d7ceb, d2150a7 for CIFAR-10/SVHN, 79c58ff, a5fe74c, 7b8e422 for MNIST; C-versions and
# "2nd-order" (here ILANODE) at HEAD 13ef816). SONODE is ours, its width matched to the others.
PAPER_ARCHITECTURES: dict[str, dict[str, dict[str, Any]]] = {
    "cifar10": {
        "node": {**_CIFAR, "width": 111},
        "cnode": {**_CIFAR, "k": 3, "width": 60, "path_width": 8},
        "anode": {**_CIFAR, "augment": 39, "width": 90},
        "canode": {**_CIFAR, "augment": 39, "k": 3, "width": 42, "path_width": 8},
        "ilnode": {**_CIFAR, "lift": 42, "width": 90},
        "cilnode": {**_CIFAR, "lift": 42, "k": 3, "width": 42, "path_width": 10},
        "ilanode": {**_CIFAR, "lift": 21, "augment": 21, "width": 90},
        "cilanode": {**_CIFAR, "lift": 21, "augment": 21, "k": 3, "width": 42, "path_width": 8},
        "sonode": {**_CIFAR, "lift": 21, "width": 91},
    },
    "mnist": {
        "node": {**_MNIST, "width": 95},
        "cnode": {**_MNIST, "k": 2, "width": 64, "path_width": 4},
        "anode": {**_MNIST, "augment": 20, "width": 95},
        "canode": {**_MNIST, "augment": 20, "k": 2, "width": 64, "path_width": 4},
        "ilnode": {**_MNIST, "lift": 21, "width": 95},
        "cilnode": {**_MNIST, "lift": 21, "k": 2, "width": 64, "path_width": 4},
        "ilanode": {**_MNIST, "lift": 16, "augment": 5, "width": 95},
        "cilanode": {**_MNIST, "lift": 16, "augment": 5, "k": 2, "width": 64, "path_width": 4},
        "sonode": {**_MNIST, "lift": 10, "width": 94},
    },
}
# SVHN images have CIFAR-10's shape and the authors used the same models on both.
PAPER_ARCHITECTURES["svhn"] = PAPER_ARCHITECTURES["cifar10"]


def count_parameters(model: Any) -> int:
    """The number of trainable scalars: the sizes of all floating-point arrays in `model`.

    Works on real models and on `equinox.filter_eval_shape` outputs (shape structs).

    **Arguments:**

    - `model`: an equinox module (or any pytree).

    **Returns:**

    The parameter count, an int.
    """

    def inexact(x: Any) -> bool:
        if isinstance(x, jax.ShapeDtypeStruct):
            return np.issubdtype(x.dtype, np.inexact)
        return eqx.is_inexact_array(x)

    leaves = jax.tree_util.tree_leaves(eqx.filter(model, inexact))
    return int(sum(int(np.prod(leaf.shape)) for leaf in leaves))


def _shape_count(make: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    # Shapes only: no arrays are allocated, so paper-sized models cost nothing to count.
    return count_parameters(eqx.filter_eval_shape(make, *args, **kwargs))


def matched_width(make: Callable[[int], Any], budget: int, *, max_width: int = 4096) -> int:
    """The width whose model has the parameter count closest to `budget`.

    The paper's way of comparing models "at a similar budget": widen or narrow the
    vector-field blocks. Counts are taken from shapes only (`equinox.filter_eval_shape`).

    **Arguments:**

    - `make`: `width -> model`; its parameter count must grow with the width.
    - `budget`: the target number of parameters.
    - `max_width`: the largest width tried.

    **Returns:**

    The width, an int in `[1, max_width]`; ties go to the smaller width.
    """
    if not isinstance(budget, int) or budget < 1:
        raise ValueError(f"`matched_width(budget={budget!r})`: `budget` must be an int >= 1.")
    low, high = 1, max_width
    # The smallest width whose count reaches the budget (or max_width).
    while low < high:
        mid = (low + high) // 2
        if _shape_count(make, mid) >= budget:
            high = mid
        else:
            low = mid + 1
    if low > 1 and budget - _shape_count(make, low - 1) <= _shape_count(make, low) - budget:
        return low - 1
    return low


def paper_model(
    name: str,
    dataset: str,
    *,
    num_classes: int = 10,
    integrator: Integrator | None = None,
    key: PRNGKeyArray,
) -> ODEClassifier:
    """One of the authors' image models, with their widths (`PAPER_ARCHITECTURES`).

    **Arguments:**

    - `name`: one of `MODELS` (`"cnode"`, `"node"`, `"anode"`, ...).
    - `dataset`: `"mnist"`, `"svhn"` or `"cifar10"`.
    - `num_classes`: the number of logits.
    - `integrator`: an `adjoint_lab.core.Integrator`; default `adjoint_lab.cnode.Integrator()`.
    - `key`: a `jax.random.PRNGKey`.

    **Returns:**

    The model.
    """
    if dataset not in PAPER_ARCHITECTURES:
        raise ValueError(
            f"`paper_model(dataset={dataset!r})`: choose one of {sorted(PAPER_ARCHITECTURES)}."
        )
    if name not in MODELS:
        raise ValueError(f"`paper_model(name={name!r})`: choose one of {list(MODELS)}.")
    kwargs = dict(PAPER_ARCHITECTURES[dataset][name])
    if integrator is not None:
        kwargs["integrator"] = integrator
    shape = kwargs.pop("input_shape")
    return MODELS[name](shape, num_classes, key=key, **kwargs)


def paper_parameter_counts(dataset: str) -> dict[str, int]:
    """The parameter count of every model of `PAPER_ARCHITECTURES[dataset]` (shapes only).

    **Arguments:**

    - `dataset`: `"mnist"`, `"svhn"` or `"cifar10"`.

    **Returns:**

    `{model name: parameter count}`.
    """
    key = jax.random.PRNGKey(0)
    return {
        name: _shape_count(lambda name=name: paper_model(name, dataset, key=key)) for name in MODELS
    }


def format_parameter_counts(counts: Mapping[str, int], title: str = "model") -> str:
    """A Markdown table of parameter counts, e.g. of `paper_parameter_counts("mnist")`.

    **Arguments:**

    - `counts`: `{model name: parameter count}`.
    - `title`: the header of the first column.

    **Returns:**

    The table as a string (print it).
    """
    lines = [f"| {title} | parameters |", "|---|---:|"]
    lines += [f"| {name} | {count:,} |" for name, count in counts.items()]
    return "\n".join(lines)
