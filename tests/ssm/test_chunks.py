"""Time chunks that do not divide the context: the chunked forward pass and the exact
adjoint's chunked backward pass handle the last partial chunk (no token is dropped)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from adjoint_lab.core import relative_error
from adjoint_lab.ssm.adjoint import exact_layer_backward
from adjoint_lab.ssm.model import layer_forward, layer_forward_chunked

T, B, P, N, EPS = 7, 2, 4, 3, 1e-6


def _layer(seed: int = 0):
    keys = jax.random.split(jax.random.PRNGKey(seed), 8)
    normal = lambda k, shape, std: std * jax.random.normal(k, shape, jnp.float64)  # noqa: E731
    w = {
        "norm": 1 + normal(keys[0], (P,), 0.1),
        "a_kernel": normal(keys[1], (P, N), 0.3),
        "a_bias": jnp.full((N,), 2.0, jnp.float64),
        "b_kernel": normal(keys[2], (P, N), 0.5),
        "b_bias": normal(keys[3], (N,), 0.1),
        "c_kernel": normal(keys[4], (P, N), 0.5),
        "c_bias": jnp.ones((N,), jnp.float64),
        "out_kernel": normal(keys[5], (N, P), 0.5),
    }
    r = normal(keys[6], (T, B, P), 1.0)
    G = normal(keys[7], (T, B, P), 1.0)
    h0 = normal(jax.random.PRNGKey(seed + 1), (B, N), 1.0)
    return w, r, G, h0


@jax.jit
def _chunked_runs(w, r, G, h0, mu_end):
    """The forward pass and the exact layer backward with chunks of 3 (T = 7: a partial
    last chunk) and of T (one chunk), and `jax.vjp` through the unchunked layer."""
    out3 = layer_forward_chunked(w, r, h0, EPS, 3)
    out7 = layer_forward(w, r, h0, EPS)
    r_out, (a, c, h) = out7
    back3 = exact_layer_backward(w, a, c, h, r_out, G, eps=EPS, chunk=3, h0=h0, mu_end=mu_end)
    back7 = exact_layer_backward(w, a, c, h, r_out, G, eps=EPS, chunk=T, h0=h0, mu_end=mu_end)
    _, vjp = jax.vjp(lambda w, r, h0: layer_forward(w, r, h0, EPS)[0], w, r, h0)
    return out3, out7, back3, back7, vjp(G)


@pytest.mark.parametrize("with_carry", [False, True])
def test_a_partial_last_chunk_is_computed_not_dropped(with_carry):
    w, r, G, h0 = _layer()
    # The carry from steps after the context (as the sequence layout hands it back) reaches
    # the last real token, also through a partial chunk.
    mu_end = jnp.ones((B, N), jnp.float64) if with_carry else jnp.zeros((B, N), jnp.float64)
    out3, out7, back3, back7, (dw, dr, dh0) = _chunked_runs(w, r, G, h0, mu_end)
    assert relative_error(out3, out7) < 1e-14
    assert relative_error(back3, back7) < 1e-12
    dw3, r_prev, G_prev, mu_start = back3
    assert relative_error(r_prev, r) < 1e-12  # the layer inverted: r_{k-1} = r_k - z_k
    if not with_carry:  # jax.vjp of the layer alone has no carry from after the context
        assert relative_error(dw3, dw) < 1e-12
        assert relative_error(G_prev, dr) < 1e-12  # dr includes the residual identity
        assert relative_error(mu_start, dh0) < 1e-12
