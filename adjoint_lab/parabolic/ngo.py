"""The Neural Girsanov Operator (NGO): a learned, non-negative path weight that stands in for
the Girsanov likelihood ratio of a drift against the Brownian base paths.

The exact weight is a function of the per-step features of a base path,

    log L = sum_k theta_k . dW_k - 1/2 sum_k |theta_k|^2 h,   theta_k = mu(t_k, X_k) / sigma,

with theta taken at the LEFT end of each step (Ito). The NGO keeps that structure and learns
the per-step terms: every step's features (theta_k, dW_k, h and the two per-step Ito terms)
go through an MLP, causal convolutions mix them along time, a head gives a per-step
log-increment a_k, and the path weight is exp(sum_k a_k) > 0.

Two things the paper's code gets wrong are done right here (see the module notes of
`adjoint_lab.parabolic.girsanov`): features keep their meaning (the code reshapes the
(time, path, point, channel) tensor instead of permuting it, scrambling channels across
paths), and steps are mixed along time (the code's kernel-1 convolutions never do). The
convolutions are causal, so a_k depends on dW up to step k only: a non-causal window would
let the weight see X_{k+1}, which is the right-point bias of the code's exponent.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .estimate import Estimate, importance_estimate
from .girsanov import drift_on_paths, girsanov_step_terms
from .integrand import Drift, Rate, Scalar, check_coefficients, integrand_on_paths
from .paths import BasePaths

__all__ = ["INITS", "NeuralGirsanovOperator", "ngo_expectation", "path_features"]

INITS = ("zero", "girsanov")


def path_features(
    drift: Drift, paths: BasePaths
) -> tuple[Float[Array, "m n_paths n_steps d"], Float[Array, ""]]:
    """theta_k = drift(t_k, X_k) / sigma on every stored path (left end of each step) and
    the step h; with `paths.increments` these are the NGO's inputs (`drift_on_paths`)."""
    return drift_on_paths(drift, paths)


class NeuralGirsanovOperator(eqx.Module):
    """A learned path weight w = exp(sum_k a_k) for drifts in `d` dimensions.

    Per step k the input is z_k = (theta_k, dW_k / sqrt(h), sqrt(h), theta_k . dW_k,
    |theta_k|^2 h / 2) with theta_k = mu(t_k, X_k) / sigma: the drift on the stored path,
    the increment, the step, and the two Ito terms whose difference is the exact
    log-increment. The increment is scaled by sqrt(h) and the step enters as sqrt(h) so that
    every input is O(1) whatever the horizon.

    **Fields:** `encoder` (per-step MLP), `mixers` (causal `Conv1d`s along time, residual),
    `head` and `skip` (per-step read-outs of the mixed and raw features), `d`, `kernel`,
    `clip` (|log w| is clipped to it, so that a badly trained operator cannot overflow).

    `init` chooses the starting point: `"zero"` (the paper's: zero read-outs, weight 1 on
    every path, the drift ignored until trained) or `"girsanov"` (the skip read-out set to
    the exact Ito log-increment theta_k . dW_k - |theta_k|^2 h / 2: untrained, the operator
    IS the direct Girsanov estimator, and training learns a correction to it).

    Construct with `NeuralGirsanovOperator(d, key=key)`; train with `train_ngo`; use with
    `ngo_expectation` or `feynman_kac(..., method="ngo", operator=...)`.
    """

    encoder: eqx.nn.MLP
    mixers: tuple[eqx.nn.Conv1d, ...]
    head: eqx.nn.Linear
    skip: eqx.nn.Linear
    d: int = eqx.field(static=True)
    kernel: int = eqx.field(static=True)
    clip: float = eqx.field(static=True)

    def __init__(
        self,
        d: int,
        *,
        width: int = 32,
        depth: int = 2,
        n_mixers: int = 2,
        kernel: int = 3,
        clip: float = 30.0,
        init: str = "zero",
        key: PRNGKeyArray,
    ):
        if not isinstance(d, int | np.integer) or d < 1:
            raise ValueError(f"`NeuralGirsanovOperator(d={d!r})`: `d` must be an int >= 1.")
        if init not in INITS:
            raise ValueError(f"`NeuralGirsanovOperator(init={init!r})`: choose one of {INITS}.")
        keys = jax.random.split(key, n_mixers + 3)
        n_in = 2 * d + 3
        self.encoder = eqx.nn.MLP(
            n_in, width, width, depth, activation=jax.nn.softplus, key=keys[0]
        )
        # Left padding only: output k sees steps k - kernel + 1 .. k (causal).
        self.mixers = tuple(
            eqx.nn.Conv1d(width, width, kernel, padding=((kernel - 1, 0),), key=k) for k in keys[3:]
        )
        # Zero read-outs: an untrained operator gives weight 1 on every path, i.e. the plain
        # Monte-Carlo mean of the base process, which ignores the drift.
        head = eqx.nn.Linear(width, "scalar", key=keys[1])
        skip = eqx.nn.Linear(n_in, "scalar", key=keys[2])
        self.head = eqx.tree_at(lambda lin: (lin.weight, lin.bias), head, replace_fn=jnp.zeros_like)
        self.skip = eqx.tree_at(lambda lin: (lin.weight, lin.bias), skip, replace_fn=jnp.zeros_like)
        if init == "girsanov":
            # The last two step features are theta . dW and |theta|^2 h / 2 (`step_features`).
            exact = self.skip.weight.at[..., -2].set(1.0).at[..., -1].set(-1.0)
            self.skip = eqx.tree_at(lambda lin: lin.weight, self.skip, exact)
        self.d = int(d)
        self.kernel = int(kernel)
        self.clip = float(clip)

    def step_features(
        self,
        theta: Float[Array, "n_steps d"],
        increments: Float[Array, "n_steps d"],
        h: Float[Array, ""],
    ) -> Float[Array, "n_steps 2*d+3"]:
        root = jnp.sqrt(h)
        ito, compensator = girsanov_step_terms(theta, increments, h)
        ito, compensator = ito[:, None], compensator[:, None]
        step = jnp.broadcast_to(root, ito.shape)
        return jnp.concatenate([theta, increments / root, step, ito, compensator], axis=-1)

    def log_increments(
        self,
        theta: Float[Array, "n_steps d"],
        increments: Float[Array, "n_steps d"],
        h: Float[Array, ""],
    ) -> Float[Array, " n_steps"]:
        """The per-step log-increments a_k of one path (a_k uses steps <= k only)."""
        z = self.step_features(theta, increments, h)
        hidden = jax.vmap(self.encoder)(z).T  # (width, n_steps): channels first for Conv1d
        for mixer in self.mixers:
            hidden = hidden + jax.nn.softplus(mixer(hidden))
        # The exact log-increment is O(sqrt(h)); scaling the learned part the same way keeps
        # the sum over n_steps O(1) for any grid.
        return jnp.sqrt(h) * jax.vmap(self.head)(hidden.T) + jax.vmap(self.skip)(z)

    def log_weight(
        self,
        theta: Float[Array, "n_steps d"],
        increments: Float[Array, "n_steps d"],
        h: Float[Array, ""],
    ) -> Float[Array, ""]:
        """log w of one path: the sum of the per-step log-increments, clipped to
        [-clip, clip] (a guard against overflow, inactive for sensible weights)."""
        return jnp.clip(jnp.sum(self.log_increments(theta, increments, h)), -self.clip, self.clip)

    def __call__(
        self,
        theta: Float[Array, "n_steps d"],
        increments: Float[Array, "n_steps d"],
        h: Float[Array, ""],
    ) -> Float[Array, ""]:
        """The (non-negative) weight of one path."""
        return jnp.exp(self.log_weight(theta, increments, h))


def _check_operator(owner: str, operator: object, d: int) -> NeuralGirsanovOperator:
    if operator is None:
        raise ValueError(
            f"`{owner}`: `operator` is required: pass a trained `NeuralGirsanovOperator` "
            "(build one with `NeuralGirsanovOperator(d, key=...)` and train it with "
            "`train_ngo`)."
        )
    if not isinstance(operator, NeuralGirsanovOperator):
        raise TypeError(
            f"`{owner}`: `operator` must be a `NeuralGirsanovOperator`; got "
            f"{type(operator).__name__}."
        )
    if operator.d != d:
        raise ValueError(
            f"`{owner}`: `operator` was built for d = {operator.d} dimensions but the points "
            f"`x` have d = {d}; train an operator for d = {d}."
        )
    return operator


@eqx.filter_jit
def _ngo_expectation(operator, paths, drift, p0, rate) -> Estimate:
    theta, h = path_features(drift, paths)
    per_path = jax.vmap(operator.log_weight, (0, 0, None))
    log_weights = jax.vmap(per_path, (0, None, None))(theta, paths.increments, h)
    values = integrand_on_paths(p0, rate, paths.times, paths.positions())
    return importance_estimate(values, log_weights)


def ngo_expectation(
    operator: NeuralGirsanovOperator,
    paths: BasePaths,
    drift: Drift,
    p0: Scalar,
    rate: Rate | None = None,
) -> Estimate:
    """p(T, x) = E[p0(X_T) exp(-int r)] under `drift`, as the mean over the stored base
    paths of p0(X_T) exp(-int r) times the NGO weight: zero-shot in the drift (one forward
    pass, no re-simulation). Jit-compiled; usable under `jax.vmap` over drifts.

    **Arguments:**

    - `operator`: a trained `NeuralGirsanovOperator` for `d` dimensions.
    - `paths`: the `BasePaths` (points, increments, T, sigma).
    - `drift`, `p0`, `rate`: as for `BasePaths.expectation`.

    **Returns:**

    An `Estimate` of shape `(m,)`; `ess` is Kish's effective sample size of the NGO weights.
    """
    d = paths.x.shape[1]
    operator = _check_operator("ngo_expectation", operator, d)
    check_coefficients("ngo_expectation", drift, p0, rate, d, paths.x.dtype)
    return _ngo_expectation(operator, paths, drift, p0, rate)
