"""Numerical checks for gradients: finite differences, closeness and errors over pytrees."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Literal

import equinox as eqx
import jax
import jax.tree_util as jtu
import numpy as np
from jaxtyping import ArrayLike, PyTree, Real

__all__ = [
    "assert_tree_allclose",
    "finite_difference_grad",
    "relative_error",
    "tree_allclose",
]

_SCHEMES = ("central", "forward")


def finite_difference_grad(
    f: Callable[[PyTree[Any]], Real[ArrayLike, ""]],
    x: PyTree[Any],
    eps: float = 1e-6,
    scheme: Literal["central", "forward"] = "central",
    *,
    vmap: bool = True,
) -> PyTree[Any]:
    """The gradient of a scalar function by finite differences, in float64.

    Every element of every floating-point leaf of `x` is perturbed by
    `h = eps * max(1, |x_i|)`. `"central"` uses `(f(x + h) - f(x - h)) / 2h` (error
    O(h^2), 2n evaluations); `"forward"` uses `(f(x + h) - f(x)) / h` (error O(h),
    n + 1 evaluations). Other leaves (integers, Python objects) are passed through
    unperturbed and get `None` as gradient, as in `equinox.filter_grad`.

    **Arguments:**

    - `f`: a function of `x` returning a scalar.
    - `x`: the point, any pytree; its floating-point leaves must be float64.
    - `eps`: the relative step. With float64, 1e-6 suits central differences of smooth
        functions (error ~ eps^2 from truncation plus ~1e-16/eps from rounding).
    - `scheme`: `"central"` or `"forward"`.
    - `vmap`: evaluate all perturbed points in one `jax.jit(jax.vmap(f))` call (one
        compilation); with `False`, call `f` once per point (for functions that do not
        vmap).

    **Returns:**

    A pytree of `x`'s structure: float64 numpy arrays for the floating-point leaves,
    `None` elsewhere.
    """
    if scheme not in _SCHEMES:
        raise ValueError(
            f"`finite_difference_grad(scheme={scheme!r})`: `scheme` must be one of {_SCHEMES}."
        )
    if not eps > 0:
        raise ValueError(f"`finite_difference_grad(eps={eps!r})`: `eps` must be > 0.")
    if not jax.config.read("jax_enable_x64"):
        raise ValueError(
            "`finite_difference_grad` needs float64: run "
            '`jax.config.update("jax_enable_x64", True)` before creating any arrays.'
        )
    diff, static = eqx.partition(x, eqx.is_inexact_array_like)
    leaves, treedef = jtu.tree_flatten(diff)
    for path, leaf in jtu.tree_flatten_with_path(diff)[0]:
        dtype = np.dtype(leaf.dtype if hasattr(leaf, "dtype") else np.result_type(leaf))
        if dtype != np.float64:
            raise ValueError(
                f"`finite_difference_grad`: leaf x{jtu.keystr(path)} has dtype "
                f"{dtype}; finite differences need float64 leaves. Cast "
                "x with `jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), x)`."
            )
    flat = np.concatenate([np.ravel(np.asarray(leaf)) for leaf in leaves] or [np.zeros(0)])
    n = flat.size
    shapes = [np.shape(leaf) for leaf in leaves]
    offsets = np.cumsum([0] + [int(np.prod(shape)) for shape in shapes])

    def split(vectors):
        # (m, n) rows of flattened leaves -> leaves with a leading axis of size m.
        return [
            vectors[:, start:stop].reshape((len(vectors),) + shape)
            for start, stop, shape in zip(offsets[:-1], offsets[1:], shapes, strict=True)
        ]

    steps = eps * np.maximum(1.0, np.abs(flat))
    shifts = np.diag(steps)
    if scheme == "central":
        points = np.concatenate([flat + shifts, flat - shifts])
    else:
        points = np.concatenate([flat + shifts, flat[None]])
    batched = jtu.tree_unflatten(treedef, split(points))
    if vmap:
        values = jax.jit(jax.vmap(lambda d: f(eqx.combine(d, static))))(batched)
    else:
        values = [
            f(eqx.combine(jtu.tree_map(lambda leaf, i=i: leaf[i], batched), static))
            for i in range(len(points))
        ]
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (len(points),):
        raise ValueError(
            f"`finite_difference_grad`: `f` must return a scalar; got shape {values.shape[1:]}."
        )
    if scheme == "central":
        grad = (values[:n] - values[n:]) / (2 * steps)
    else:
        grad = (values[:n] - values[n]) / steps
    return jtu.tree_unflatten(treedef, [leaf[0] for leaf in split(grad[None])])


def _leaves(a: PyTree[ArrayLike], b: PyTree[ArrayLike], name: str) -> list:
    paths_a, tree_a = jtu.tree_flatten_with_path(a)
    leaves_b, tree_b = jtu.tree_flatten(b)
    if tree_a != tree_b:
        raise ValueError(
            f"`{name}`: the two pytrees have different structures:\n{tree_a}\nvs\n{tree_b}"
        )
    return [
        (jtu.keystr(path), np.asarray(x), np.asarray(y))
        for (path, x), y in zip(paths_a, leaves_b, strict=True)
    ]


def tree_allclose(
    a: PyTree[ArrayLike], b: PyTree[ArrayLike], rtol: float = 1e-5, atol: float = 1e-8
) -> bool:
    """Whether two pytrees have the same structure and shapes, and close values.

    Closeness is elementwise `|a - b| <= atol + rtol * |b|` (numpy's `allclose`), with NaNs
    in the same places counted as equal.

    **Arguments:**

    - `a`, `b`: pytrees of arrays or numbers.
    - `rtol`, `atol`: relative and absolute tolerances.

    **Returns:**

    A Python bool.
    """
    if jtu.tree_structure(a) != jtu.tree_structure(b):
        return False
    for x, y in zip(jtu.tree_leaves(a), jtu.tree_leaves(b), strict=True):
        x, y = np.asarray(x), np.asarray(y)
        if x.shape != y.shape:
            return False
        if not np.allclose(x, y, rtol=rtol, atol=atol, equal_nan=True):
            return False
    return True


def relative_error(a: PyTree[ArrayLike], b: PyTree[ArrayLike]) -> float:
    """The relative error `||a - b|| / ||b||` over all leaves flattened into one vector.

    `||.||` is the Euclidean norm; the denominator is floored at the smallest normal
    float64, so `b = 0` gives `||a||` / tiny (large) unless `a = 0` as well (0).

    **Arguments:**

    - `a`: the approximation.
    - `b`: the reference; same pytree structure and shapes as `a`.

    **Returns:**

    A Python float.
    """
    pairs = _leaves(a, b, "relative_error")
    for path, x, y in pairs:
        if x.shape != y.shape:
            raise ValueError(
                f"`relative_error`: leaf {path or '<root>'} has shape {x.shape} in `a` "
                f"but {y.shape} in `b`."
            )
    diff = np.sqrt(sum(float(np.sum((x - y) ** 2)) for _, x, y in pairs))
    norm = np.sqrt(sum(float(np.sum(y**2)) for _, _, y in pairs))
    return float(diff / max(norm, np.finfo(np.float64).tiny))


def assert_tree_allclose(
    actual: PyTree[ArrayLike],
    expected: PyTree[ArrayLike],
    rtol: float = 1e-5,
    atol: float = 1e-8,
    *,
    err_msg: str = "",
) -> None:
    """Assert `tree_allclose(actual, expected, rtol, atol)`, explaining any failure.

    The message names the worst leaf (by its pytree path), its largest absolute and
    relative error, where it occurs, how many elements fail, and the overall
    `relative_error`.

    **Arguments:**

    - `actual`, `expected`: pytrees of arrays or numbers.
    - `rtol`, `atol`: as `tree_allclose`.
    - `err_msg`: prepended to the failure message.

    **Raises:**

    `AssertionError` if the pytrees differ in structure, shapes or values.
    """
    prefix = f"{err_msg}\n" if err_msg else ""
    try:
        pairs = _leaves(actual, expected, "assert_tree_allclose")
    except ValueError as e:
        raise AssertionError(prefix + str(e)) from None
    worst = None
    for path, x, y in pairs:
        name = path or "<root>"
        if x.shape != y.shape:
            raise AssertionError(
                f"{prefix}leaf {name}: shape {x.shape} (actual) vs {y.shape} (expected)"
            )
        bad = ~np.isclose(x, y, rtol=rtol, atol=atol, equal_nan=True)
        if not bad.any():
            continue
        abs_err = np.where(bad, np.abs(x - y), 0.0)
        abs_err = np.where(np.isnan(abs_err), np.inf, abs_err)
        # Excess over the tolerance, so the worst leaf is the one furthest outside it.
        excess = abs_err / (atol + rtol * np.abs(y))
        where = np.unravel_index(int(np.argmax(excess)), x.shape) if x.ndim else ()
        score = float(np.max(excess))
        if worst is None or score > worst[0]:
            worst = (score, name, where, x, y, int(bad.sum()), abs_err)
    if worst is None:
        return
    _, name, where, x, y, count, abs_err = worst
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(np.abs(y) > 0, abs_err / np.abs(y), np.where(abs_err > 0, np.inf, 0.0))
    lines = [
        f"{prefix}pytrees not close (rtol={rtol:g}, atol={atol:g}); worst leaf {name} "
        f"(shape {x.shape}): {count} of {max(x.size, 1)} elements differ",
        f"  worst element {[int(i) for i in where] if where else '(scalar)'}: "
        f"actual {x[where].item()!r}, expected {y[where].item()!r}",
        f"  leaf max abs error {float(np.max(abs_err)):.3e}, "
        f"max rel error {float(np.max(rel)):.3e}",
    ]
    with contextlib.suppress(ValueError, TypeError):
        lines.append(f"  relative_error over all leaves: {relative_error(actual, expected):.3e}")
    raise AssertionError("\n".join(lines))
