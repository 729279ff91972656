"""Synthetic data sets of the C-NODE paper's toy experiments (generated, never downloaded).

- `crossing_map`: -1 -> +1 and +1 -> -1, the map no NODE can represent (the time-1 map of
  an ODE on R is increasing) and C-NODE represents exactly.
- `annuli`: a disc inside an annulus (Dupont et al.'s concentric spheres), separable by a
  continuous map only if trajectories may cross or the state is augmented.
- `interleaved_spirals`: two noisy spirals.
- `shifted_sines`: two sine curves shifted up and down.
- `two_circles`: unlabelled points on two noisy concentric circles, the density of the
  paper's continuous-normalizing-flow toy (scikit-learn's `make_circles(noise=0.05,
  factor=0.5)`, with random angles).

Image data sets (MNIST, SVHN, CIFAR-10, scikit-learn's digits) are in
`adjoint_lab.data.images`.
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Float, Int

__all__ = ["annuli", "crossing_map", "interleaved_spirals", "shifted_sines", "two_circles"]


def crossing_map() -> tuple[Float[np.ndarray, "2 1"], Float[np.ndarray, "2 1"]]:
    """The two-point regression task z -> -z on z in {-1, +1}.

    **Returns:**

    `(inputs [[-1], [1]], targets [[1], [-1]])`. Any NODE maps them monotonically, so its
    mean squared error is at least 1 (reached by sending both to 0); C-NODE with
    a(s, z) = -2z, T = 1 reaches 0.
    """
    inputs = np.array([[-1.0], [1.0]], np.float32)
    return inputs, -inputs


def annuli(
    n_inner: int = 1000,
    n_outer: int = 2000,
    *,
    inner_radius: float = 0.5,
    outer_radii: tuple[float, float] = (1.0, 1.5),
    dim: int = 2,
    seed: int = 0,
) -> tuple[Float[np.ndarray, "n dim"], Int[np.ndarray, " n"]]:
    """Points in a ball (label 0) and in a surrounding shell (label 1).

    Directions are uniform on the sphere and radii uniform in [0, inner_radius] or
    `outer_radii`, as in Dupont et al.'s `ConcentricSphere` (the paper's settings are the
    defaults).

    **Arguments:**

    - `n_inner`, `n_outer`: points per class.
    - `inner_radius`: the radius of the ball.
    - `outer_radii`: the inner and outer radius of the shell.
    - `dim`: the dimension.
    - `seed`: the random seed.

    **Returns:**

    `(points [n_inner + n_outer, dim], labels)`, shuffled.
    """
    r_low, r_high = outer_radii
    if not 0 < inner_radius < r_low < r_high:
        raise ValueError(
            f"`annuli(inner_radius={inner_radius}, outer_radii={outer_radii})`: need "
            "0 < inner_radius < outer_radii[0] < outer_radii[1], so the classes are apart."
        )
    rng = np.random.default_rng(seed)

    def shell(n: int, low: float, high: float) -> np.ndarray:
        direction = rng.standard_normal((n, dim))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        return direction * rng.uniform(low, high, (n, 1))

    points = np.concatenate([shell(n_inner, 0.0, inner_radius), shell(n_outer, r_low, r_high)])
    labels = np.concatenate([np.zeros(n_inner, np.int32), np.ones(n_outer, np.int32)])
    order = rng.permutation(len(labels))
    return points[order].astype(np.float32), labels[order]


def interleaved_spirals(
    n_per_class: int = 3000, *, noise: float = 0.1, seed: int = 0
) -> tuple[Float[np.ndarray, "n 2"], Int[np.ndarray, " n"]]:
    """Two interleaved spirals: (phi cos phi, phi sin phi) and (phi cos 2phi, phi sin 2phi).

    phi ~ U(-2 pi, 0), plus Gaussian noise of standard deviation `noise` (the settings of
    the authors' toy experiment).

    **Arguments:**

    - `n_per_class`: points per class.
    - `noise`: the noise standard deviation.
    - `seed`: the random seed.

    **Returns:**

    `(points [2 n_per_class, 2], labels)` with label 1 for the first spiral, shuffled.
    """
    rng = np.random.default_rng(seed)
    phi = rng.uniform(-2 * np.pi, 0.0, (2, n_per_class))
    first = np.stack([phi[0] * np.cos(phi[0]), phi[0] * np.sin(phi[0])], axis=1)
    second = np.stack([phi[1] * np.cos(2 * phi[1]), phi[1] * np.sin(2 * phi[1])], axis=1)
    points = np.concatenate([first, second]) + noise * rng.standard_normal((2 * n_per_class, 2))
    labels = np.concatenate([np.ones(n_per_class, np.int32), np.zeros(n_per_class, np.int32)])
    order = rng.permutation(len(labels))
    return points[order].astype(np.float32), labels[order]


def shifted_sines(
    n_per_class: int = 1500, *, shift: float = 1.4, noise: float = 0.1, seed: int = 0
) -> tuple[Float[np.ndarray, "n 2"], Int[np.ndarray, " n"]]:
    """Points (x, sin(pi x) + shift/2) (label 1) and (x, sin(pi x) - shift/2) (label 0).

    x ~ U(-1, 1), plus Gaussian noise on the second coordinate.

    **Arguments:**

    - `n_per_class`: points per class.
    - `shift`: the vertical distance between the two curves.
    - `noise`: the noise standard deviation.
    - `seed`: the random seed.

    **Returns:**

    `(points [2 n_per_class, 2], labels)`, shuffled.
    """
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, (2, n_per_class))
    offset = np.array([[shift / 2], [-shift / 2]])
    y = np.sin(np.pi * x) + offset + noise * rng.standard_normal(x.shape)
    points = np.stack([x.ravel(), y.ravel()], axis=1)
    labels = np.concatenate([np.ones(n_per_class, np.int32), np.zeros(n_per_class, np.int32)])
    order = rng.permutation(len(labels))
    return points[order].astype(np.float32), labels[order]


def two_circles(
    n: int = 1024, *, noise: float = 0.05, factor: float = 0.5, seed: int = 0
) -> Float[np.ndarray, "n 2"]:
    """Points on the unit circle and on a circle of radius `factor`, half each, plus noise.

    **Arguments:**

    - `n`: the number of points.
    - `noise`: the standard deviation of the Gaussian noise added to both coordinates.
    - `factor`: the radius of the inner circle.
    - `seed`: the random seed.

    **Returns:**

    `points [n, 2]`, shuffled.
    """
    if not 0 < factor < 1:
        raise ValueError(f"`two_circles(factor={factor})`: need 0 < factor < 1.")
    rng = np.random.default_rng(seed)
    angle = rng.uniform(0.0, 2 * np.pi, n)
    radius = np.where(np.arange(n) < n // 2, 1.0, factor)
    points = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    points += noise * rng.standard_normal((n, 2))
    return points[rng.permutation(n)].astype(np.float32)
