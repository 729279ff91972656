"""The Figure 4 experiment: its metrics, its rainbow reference against Black-Scholes, and
(slow) the quick profile end to end."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adjoint_lab.parabolic import problems
from experiments import parabolic_figure4 as fig4


def test_metrics():
    u, ref = np.array([1.0, 2.0]), np.array([1.5, 2.0])
    assert fig4.normalized_error(u, ref) == pytest.approx(0.125 / 1.75)
    assert fig4.relative_l2(u, ref) == pytest.approx(0.5 / np.sqrt(6.25))


def test_rainbow_reference_is_black_scholes_in_one_dimension():
    """With one asset the best-of call is a plain call: the exact-sampling reference must
    agree with the Black-Scholes formula within its own standard error."""
    rainbow = fig4.RainbowCall(r=0.1, sigma=0.5, strike=0.3)
    x = jnp.log(jnp.array([[0.2], [0.3], [0.5]]))
    mean, stderr = rainbow.reference(0.25, x, 1 << 16, jax.random.PRNGKey(0))
    exact = problems.BlackScholesCall(r=0.1, sigma=0.5, strike=0.3).exact(0.25, x)
    assert np.all(np.abs(mean - exact) < 4 * stderr), (mean, exact, stderr)


@pytest.mark.slow
def test_quick_profile(tmp_path):
    fig4.main(["--profile", "quick", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "parabolic_figure4.json").read_text())
    assert (tmp_path / "parabolic_figure4.md").exists()
    family = {row["method"]: row for row in data["family"]}
    assert set(family) == {"NGO", "NGO (Girsanov init)", "Girsanov", "Euler-Maruyama"}
    # The unlearned estimators against the exact solution: 200 paths, ~1/sqrt(200) noise.
    assert family["Girsanov"]["rel L2"] < 0.2 and family["Euler-Maruyama"]["rel L2"] < 0.2
    canonical = {(row["PDE"], row["method"]): row for row in data["canonical"]}
    assert canonical[("BSB", "Euler-Maruyama")]["rel L2"] < 0.02
    assert len(canonical) == 16
