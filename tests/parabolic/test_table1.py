"""The Table 1 pieces: the FNO's spectral layer against a direct DFT, its parameter count
against the closed form and the paper's counts, a tiny training against exact targets, the
all-times estimators against the single-time ones, and (slow) the quick profile."""

from __future__ import annotations

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adjoint_lab import parabolic
from adjoint_lab.parabolic.fno import FNO, SpectralConv, fno_parameter_count, parameter_count
from experiments import parabolic_table1 as table1


def _direct_spectral(h, w, kx, ky, n0, n1):
    """Direct-DFT reference of a spectral conv: the forward DFT at the kept frequencies
    (kx over a full axis, ky over the half axis), the per-frequency channel mix, and the real
    inverse of a half spectrum, y = 1/(n0 n1) sum c_ky Re(Y e^{+i...}), c = 1 at ky = 0
    and 2 otherwise."""
    a, b = np.arange(n0), np.arange(n1)
    phase = np.exp(
        -2j
        * np.pi
        * (
            kx[:, None, None, None] * a[None, None, :, None] / n0
            + ky[None, :, None, None] * b[None, None, None, :] / n1
        )
    )  # (kx, ky, a, b)
    h_hat = np.einsum("iab,xyab->ixy", h, phase)
    y_hat = np.einsum("ixy,ioxy->oxy", h_hat, w)
    c = np.where(ky == 0, 1.0, 2.0)
    return np.einsum("oxy,y,xyab->oab", y_hat, c, np.conj(phase)).real / (n0 * n1)


def test_spectral_conv_1d_matches_direct_dft():
    layer = SpectralConv(3, 2, (5,), key=jax.random.PRNGKey(0))
    h = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (3, 16)), np.float64)
    w = np.asarray(layer.real[0], np.float64) + 1j * np.asarray(layer.imag[0], np.float64)
    # A 1-d grid is a 2-d grid with one row and only kx = 0.
    ref = _direct_spectral(h[:, None, :], w[:, :, None, :], np.array([0]), np.arange(5), 1, 16)
    got = np.asarray(layer(jnp.asarray(h, jnp.float32)))
    np.testing.assert_allclose(got, ref[:, 0], atol=1e-5)


def test_spectral_conv_2d_matches_direct_dft():
    m0, m1, n0, n1 = 3, 4, 10, 12
    layer = SpectralConv(2, 3, (m0, m1), key=jax.random.PRNGKey(2))
    h = np.asarray(jax.random.normal(jax.random.PRNGKey(3), (2, n0, n1)), np.float64)
    w = np.asarray(layer.real, np.float64) + 1j * np.asarray(layer.imag, np.float64)
    # The two blocks: kx = 0..m0-1 and kx = n0-m0..n0-1 (the negative frequencies).
    kx = np.concatenate([np.arange(m0), np.arange(n0 - m0, n0)])
    ref = _direct_spectral(h, np.concatenate([w[0], w[1]], axis=2), kx, np.arange(m1), n0, n1)
    got = np.asarray(layer(jnp.asarray(h, jnp.float32)))
    np.testing.assert_allclose(got, ref, atol=1e-5)


@pytest.mark.parametrize(
    "cin, cout, modes, width, projection",
    [(3, 40, 6, 8, 16), (5, 1, 16, 16, 128), (5, 40, (3, 4), 6, 32)],
)
def test_parameter_count_formula(cin, cout, modes, width, projection):
    # Abstract construction: shapes only, no initialisation work.
    model = eqx.filter_eval_shape(
        FNO, cin, cout, modes=modes, width=width, projection=projection, key=jax.random.PRNGKey(0)
    )
    kw = dict(modes=modes, width=width, projection=projection)
    assert parameter_count(model) == fno_parameter_count(cin, cout, **kw)
    # Complex weights once: the spectral weights are half of their real count.
    spectral = sum(np.prod(layer.real.shape) for layer in model.spectral)
    assert (
        fno_parameter_count(cin, cout, complex_once=True, **kw) == parameter_count(model) - spectral
    )


def test_parameter_count_reproduces_the_papers_fnos():
    """Table 1's 19.9K (1-d: 4 layers, 16 modes, width 16, 5 inputs, 16->128->1) and 2.0M
    (2-d: modes (40, 6), width 32, 7 inputs), counting a complex weight once."""
    one = fno_parameter_count(5, 1, modes=16, width=16, projection=128, complex_once=True)
    two = fno_parameter_count(7, 1, modes=(40, 6), width=32, projection=128, complex_once=True)
    assert one == 19_873
    assert round(two / 1e6, 2) == 1.97


def test_tiny_fno_training_beats_untrained():
    coords = table1.grid_axes(1, 24)
    model = FNO(
        3, table1.N_TIMES, modes=6, width=8, projection=16, padding=4, key=jax.random.PRNGKey(0)
    )
    batch = 4
    held_out = jax.random.PRNGKey(123)
    loss = eqx.filter_jit(table1.fno_loss)
    before = float(loss(model, coords, 16, held_out))
    trained, losses = table1._fit(
        model, lambda m, k: table1.fno_loss(m, coords, batch, k), 40, 1e-2, jax.random.PRNGKey(1)
    )
    after = float(loss(trained, coords, 16, held_out))
    assert np.all(np.isfinite(losses))
    assert after < 0.3 * before, (before, after)


def test_girsanov_all_times_ends_at_the_single_time_estimate():
    """The cumulative weights at the last time are the full-path weights."""
    x = jnp.array([[0.2], [0.5]])
    paths = parabolic.BasePaths.sample(jax.random.PRNGKey(0), x, T=0.1, n_paths=16, n_steps=8)
    drift = parabolic.RandomBasisDrift(jnp.array([0.5, 0.3, 0.0]))
    p0 = parabolic.SineInitial(np.pi, 0.4)
    gir = eqx.filter_jit(table1.girsanov_all_times)(paths, drift, p0)
    assert gir.shape == (8, 2)
    np.testing.assert_allclose(gir[-1], paths.expectation(drift, p0).value, rtol=1e-5)


@pytest.mark.slow
def test_ngo_all_times_ends_at_the_single_time_estimate():
    x = jnp.array([[0.2], [0.5]])
    paths = parabolic.BasePaths.sample(jax.random.PRNGKey(0), x, T=0.1, n_paths=16, n_steps=8)
    drift = parabolic.RandomBasisDrift(jnp.array([0.5, 0.3, 0.0]))
    p0 = parabolic.SineInitial(np.pi, 0.4)
    operator = parabolic.NeuralGirsanovOperator(1, width=4, key=jax.random.PRNGKey(1))
    ngo = eqx.filter_jit(table1.ngo_all_times)(operator, paths, drift, p0)
    single = parabolic.ngo_expectation(operator, paths, drift, p0).value
    np.testing.assert_allclose(ngo[-1], single, rtol=1e-5)


@pytest.mark.slow
def test_quick_profile(tmp_path):
    table1.main(["--profile", "quick", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "parabolic_table1.json").read_text())["table1"]
    assert {(r["d"], r["model"]) for r in rows} == {
        (d, m) for d in (1, 2) for m in ("NGO", "FNO", "FNO (MC targets)", "DeepONet", "GIR")
    }
    assert all(np.isfinite(r["NE"]) for r in rows)


def test_aggregate_runs_mean_std_stderr():
    """NE over training runs: mean, standard deviation (ddof 1) and standard error; one run
    gives NaN spread; the other measures are averaged and the paper's columns kept."""

    def row(ne, inference):
        return {
            "d": 1, "model": "NGO", "params": 10, "NE": ne, "NE stderr": 0.1, "NE at T": 2 * ne,
            "rel L2": 0.5, "train s": 3.0, "inference s": inference,
            "train loss first->last": "1 -> 0.5", "paper NE": 0.045,
        }  # fmt: skip

    runs = [[row(ne, t)] for ne, t in ((1.0, 0.1), (2.0, 0.3), (3.0, 0.2), (6.0, 9.0))]
    (out,) = table1.aggregate_runs(runs)
    assert out["runs"] == 4
    assert out["NE"] == pytest.approx(3.0)
    assert out["NE std (runs)"] == pytest.approx(np.std([1, 2, 3, 6], ddof=1))
    assert out["NE stderr (runs)"] == pytest.approx(np.std([1, 2, 3, 6], ddof=1) / 2)
    assert out["NE at T"] == pytest.approx(6.0)
    assert out["inference s"] == pytest.approx(0.25)  # the median
    assert out["paper NE"] == 0.045
    (single,) = table1.aggregate_runs(runs[:1])
    assert single["NE"] == 1.0 and np.isnan(single["NE std (runs)"])
