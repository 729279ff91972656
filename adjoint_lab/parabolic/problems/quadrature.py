"""Gauss rules for expectations of smooth functions of Gaussian and Gamma variables, used by
problems whose exact solution is a low-dimensional integral."""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["gamma_rule", "normal_rule"]


@functools.lru_cache(maxsize=32)
def normal_rule(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights (summing to 1) with sum w f(z) ~ E[f(Z)], Z ~ N(0, 1)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(n)
    return nodes, weights / weights.sum()


@functools.lru_cache(maxsize=32)
def gamma_rule(shape: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights (summing to 1) with sum w f(g) ~ E[f(G)], G ~ Gamma(shape, 1).

    Generalised Gauss-Laguerre for the weight g^(shape-1) e^-g by Golub-Welsch: the
    eigenvalues of the Jacobi matrix of the monic recurrence
    p_{k+1} = (g - (2k + alpha + 1)) p_k - k (k + alpha) p_{k-1}, alpha = shape - 1,
    and the squared first components of its eigenvectors.
    """
    if shape <= 0:
        raise ValueError(f"`gamma_rule(shape={shape!r})`: `shape` must be > 0.")
    alpha = shape - 1.0
    k = np.arange(n, dtype=np.float64)
    diagonal = 2 * k + alpha + 1
    off = np.sqrt(k[1:] * (k[1:] + alpha))
    jacobi = np.diag(diagonal) + np.diag(off, 1) + np.diag(off, -1)
    nodes, vectors = np.linalg.eigh(jacobi)
    weights = vectors[0] ** 2
    return nodes, weights / weights.sum()
