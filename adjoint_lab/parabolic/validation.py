"""Argument checks shared by the estimators: eager where values are concrete, at trace time
for shapes, and `equinox.error_if` for values only known inside `jit`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.core
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

__all__ = [
    "check_count",
    "check_points",
    "check_positive",
    "check_sigma",
    "check_function_shape",
]


def _is_traced(value: Any) -> bool:
    return isinstance(value, jax.core.Tracer)


def check_points(owner: str, x: ArrayLike) -> Float[Array, "m d"]:
    """`x` as a floating array of shape `(m, d)`, or a `ValueError` naming `x`."""
    x = jnp.asarray(x)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(
            f"`{owner}`: `x` must have shape (m, d), m points in d dimensions with m, d >= 1; "
            f"got shape {x.shape}. For one point pass `x[None, :]`; in one dimension pass "
            "`x[:, None]`."
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    if not _is_traced(x) and not np.all(np.isfinite(np.asarray(x))):
        bad = np.argwhere(~np.isfinite(np.asarray(x)))[:3].tolist()
        raise ValueError(
            f"`{owner}`: `x` must be finite; it has inf or nan at index (point, coordinate) "
            f"{', '.join(map(str, bad))}."
        )
    return x


def check_count(owner: str, name: str, value: Any, minimum: int) -> int:
    """`value` as a Python int >= `minimum` (it fixes an array shape), or a `ValueError`."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(
            f"`{owner}({name}={value!r})`: `{name}` must be a Python int >= {minimum}; it "
            "sets an array shape, so it cannot be traced or fractional."
        )
    return int(value)


def check_positive(owner: str, name: str, value: ArrayLike, hint: str) -> Array:
    """`value` as an array, checked to be finite and > 0 everywhere.

    Concrete values fail here with a `ValueError`; traced values fail at run time through
    `equinox.error_if`.
    """
    message = f"`{owner}`: `{name}` must be finite and > 0; {hint}"
    if not _is_traced(value):
        concrete = np.asarray(value)
        if not np.issubdtype(concrete.dtype, np.number) or not np.all(
            np.isfinite(concrete) & (concrete > 0)
        ):
            raise ValueError(f"{message} Got {name}={value!r}.")
        return jnp.asarray(value)
    value = jnp.asarray(value)
    return eqx.error_if(value, ~jnp.all(jnp.isfinite(value) & (value > 0)), message)


def check_sigma(owner: str, sigma: ArrayLike, d: int, dtype: Any) -> Array:
    """The volatility as an array of shape `()` (scalar) or `(d,)` (diagonal), > 0."""
    sigma = check_positive(
        owner,
        "sigma",
        sigma,
        "it is the constant (scalar or diagonal) volatility of dX = mu dt + sigma dW. "
        "State-dependent volatilities enter through a Lamperti transform to constant sigma.",
    ).astype(dtype)
    if sigma.shape not in ((), (d,)):
        raise ValueError(
            f"`{owner}`: `sigma` must be a scalar or have shape (d,) = ({d},) for a diagonal "
            f"volatility; got shape {sigma.shape}."
        )
    return sigma


def check_function_shape(
    owner: str,
    name: str,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    expected: tuple[int, ...],
    signature: str,
) -> None:
    """Trace `fn(*args)` abstractly and raise a `ValueError` if its output shape is wrong."""
    if not callable(fn):
        raise TypeError(f"`{owner}`: `{name}` must be callable as {signature}; got {fn!r}.")
    out = jax.eval_shape(fn, *args)
    shape = getattr(out, "shape", None)
    if shape != expected:
        raise ValueError(
            f"`{owner}`: `{name}` must be callable as {signature}, returning shape "
            f"{expected}; it returned {shape if shape is not None else type(out).__name__}. "
            + (
                "Return one drift component per dimension of `x` (for d = 1 wrap a scalar "
                "as `jnp.array([value])` or `value * jnp.ones_like(x)`)."
                if name == "drift"
                else "Return a scalar per point (e.g. reduce with `jnp.sum` or index `[0]`)."
            )
        )
