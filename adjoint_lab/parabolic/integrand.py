"""The Feynman-Kac integrand p0(X_T) exp(-int_0^T r(s, X_s) ds) on discretised paths.

Shared by the Girsanov and the Euler-Maruyama estimators, with the checks of the
user-supplied `drift`, `p0` and `rate` that both need.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .validation import check_function_shape

__all__ = ["Drift", "Rate", "Scalar", "check_coefficients", "integrand_on_paths"]

Drift = Callable[[Float[Array, ""], Float[Array, " d"]], Float[Array, " d"]]
Scalar = Callable[[Float[Array, " d"]], Float[Array, ""]]
Rate = Callable[[Float[Array, ""], Float[Array, " d"]], Float[Array, ""]]


def check_coefficients(
    owner: str, drift: Drift | None, p0: Scalar, rate: Rate | None, d: int, dtype
) -> None:
    """Check at trace time that `drift -> (d,)`, `p0 -> ()` and `rate -> ()`."""
    t = jax.ShapeDtypeStruct((), dtype)
    x = jax.ShapeDtypeStruct((d,), dtype)
    if drift is not None:
        check_function_shape(owner, "drift", drift, (t, x), (d,), "`drift(t, x)`")
    check_function_shape(owner, "p0", p0, (x,), (), "`p0(x)`")
    if rate is not None:
        check_function_shape(owner, "rate", rate, (t, x), (), "`rate(t, x)`")


def _path_integrand(
    p0: Scalar, rate: Rate | None, times: Float[Array, " k"], path: Float[Array, "k d"]
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    terminal = p0(path[-1])
    if rate is None:
        return terminal, terminal
    # Left-point (Ito) rule, like the Girsanov sums.
    rates = jax.vmap(rate)(times[:-1], path[:-1])
    return terminal, terminal * jnp.exp(-jnp.sum(rates * jnp.diff(times)))


def integrand_on_paths(
    p0: Scalar,
    rate: Rate | None,
    times: Float[Array, " n_times"],
    paths: Float[Array, "m n_paths n_times d"],
) -> Float[Array, "m n_paths"]:
    """p0(X_T) exp(-sum_k r(t_k, X_k) dt_k) on every path.

    **Arguments:**

    - `p0`: `p0(x) -> ()`.
    - `rate`: `rate(t, x) -> ()` or `None` for no discount.
    - `times`: the time grid t_0 = 0 < ... < t_K = T.
    - `paths`: the paths on that grid, shape `(m, n_paths, K + 1, d)`.

    **Returns:**

    The integrand, shape `(m, n_paths)`. Raises at run time if `p0` is not finite on
    some path.
    """
    per_path = jax.vmap(jax.vmap(_path_integrand, (None, None, None, 0)), (None, None, None, 0))
    terminal, values = per_path(p0, rate, times, paths)
    return eqx.error_if(
        values,
        ~jnp.all(jnp.isfinite(terminal)),
        "`p0` returned a non-finite value (inf or nan) at the end of some path. The "
        "Feynman-Kac expectation needs p0 finite on all of R^d (within reach of the paths): "
        "clip or regularise `p0`, e.g. `jnp.log(jnp.maximum(y, tiny))` instead of `jnp.log(y)`.",
    )
