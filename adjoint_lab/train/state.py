"""The training state: everything a checkpoint must hold to continue a run exactly."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
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


# Kernels that run once need little of XLA's backend optimisation. The C-NODE digits model's
# jitted initialisation compiled in 6.8 s at the default level (2) and in 1.9 s at level 1;
# either way it ran in about 1 ms. (Level 0 took 1.3 s.)
_ONCE: dict[str, str | bool] = {"xla_backend_optimization_level": "1"}


def compile_unoptimized(f: Callable[..., Any], *example: Any) -> Callable[..., Any]:
    """`f` traced as one program at the shapes of `example` and compiled with little of XLA's
    backend optimisation: for what runs once or a few times, a model's initialisation above all.

    Eagerly, each parameter's random draw compiles its own kernel; jitted with full
    optimisation, the unrolled threefry kernels of a whole model take seconds to compile. The
    values are `f`'s, to floating-point rounding (an optimisation level may contract a
    multiply-add differently). Each call compiles anew: keep the result to reuse it.

    **Returns:**

    The compiled function, callable on arguments of `example`'s shapes and dtypes.
    """
    # Under jax_disable_most_optimizations (level 0 already; the test suite sets it) the
    # level-1 request would only slow the compile down.
    fast = jax.config.read("jax_disable_most_optimizations")
    return jax.jit(f).lower(*example).compile(compiler_options=None if fast else _ONCE)
