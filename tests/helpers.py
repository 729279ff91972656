"""Small tasks for testing the training loop quickly (no ODE solves)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from adjoint_lab.train import Task


def regression_task(batch_size: int = 8, nan_at: int | None = None, width: int = 3) -> Task:
    """Noisy linear regression y = x·w* with a two-leaf parameter pytree.

    With `nan_at=k` the batch of step k carries a NaN, so the loss turns NaN at that step.
    """
    w_true = np.linspace(-1.0, 1.0, width)

    def init(key):
        k1, k2 = jax.random.split(key)
        return {"w": jax.random.normal(k1, (width,)), "b": jax.random.normal(k2, ())}

    def loss(params, batch, key):
        x, y = batch
        noise = 1e-3 * jax.random.normal(key, y.shape)  # exercises per-step keys
        residual = x @ params["w"] + params["b"] - y + noise
        return jnp.mean(residual**2), {"abs_b": jnp.abs(params["b"])}

    def batch(step):
        rng = np.random.default_rng([7, step])
        x = rng.standard_normal((batch_size, width))
        y = x @ w_true + 0.5
        if nan_at is not None and step == nan_at:
            y[0] = np.nan
        return x, y

    def evaluate(params):
        return {"w_error": float(jnp.linalg.norm(params["w"] - w_true))}

    return Task(
        name="regression",
        init=init,
        loss=loss,
        batch=batch,
        batch_size=batch_size,
        evaluate=evaluate,
    )
