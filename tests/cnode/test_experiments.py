"""The experiment helpers and the quick profiles of `experiments/cnode_*.py`.

References are independent of the code under test: closed forms (linear flows, the crossing
construction), parameter counts from the paper notes, accuracies recomputed from the returned
parameters, and the NODE bound (no ODE on the line beats MSE 1 on the crossing map).
"""

from __future__ import annotations

import json

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adjoint_lab import cnode
from adjoint_lab.cnode import data, flows, runs
from adjoint_lab.core import CheckpointedBackprop

EULER2 = cnode.Integrator(
    solver=diffrax.Euler(),
    controller=diffrax.ConstantStepSize(),
    dt0=0.5,
    gradient=CheckpointedBackprop(max_steps=2),
)


def test_two_circles_lie_on_the_two_radii():
    x = data.two_circles(1000, noise=0.0, factor=0.5, seed=3)
    radii = np.sort(np.linalg.norm(x, axis=1))
    np.testing.assert_allclose(radii[:500], 0.5, atol=1e-6)
    np.testing.assert_allclose(radii[500:], 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="0 < factor < 1"):
        data.two_circles(10, factor=1.5)


class _Linear(eqx.Module):
    matrix: jax.Array

    def __call__(self, z):
        return self.matrix @ z


def test_cnf_log_likelihood_matches_the_linear_flow_in_closed_form():
    # dz/ds = A z: z(S) = expm(A S) x and the trace integral is S tr(A).
    a = jnp.array([[-0.5, 1.0], [-0.3, 0.2]])
    x = jnp.array([[0.3, -1.0], [1.2, 0.4], [0.0, 0.0]])
    horizon = 1.5
    log_p, nfe = flows.log_likelihood(_Linear(a), x, horizon=horizon)
    z = x @ jax.scipy.linalg.expm(a * horizon).T
    expected = -0.5 * jnp.sum(z**2, 1) - jnp.log(2 * jnp.pi) + horizon * jnp.trace(a)
    np.testing.assert_allclose(log_p, expected, rtol=1e-4, atol=1e-4)
    assert int(nfe) > 0


def test_cnf_velocities_have_the_authors_parameter_counts():
    key = jax.random.PRNGKey(0)
    # The paper notes (section 1.5): C-NODE CNF 2,136 parameters, NODE CNF 5,034.
    assert cnode.count_parameters(flows.CNODEVelocity(key=key)) == 2136
    assert cnode.count_parameters(flows.NODEVelocity(key=key)) == 5034
    z = jnp.array([0.2, -0.7])
    assert flows.CNODEVelocity(key=key)(z).shape == (2,)


def test_exact_crossing_construction_sends_z_to_minus_z():
    from experiments.cnode_crossing import S, exact_trajectories

    starts = np.array([-1.0, -0.3, 0.5, 1.0])
    paths = exact_trajectories(starts)
    np.testing.assert_allclose(paths, starts[None] * (1 - 2 * S[:, None]), atol=1e-5)
    np.testing.assert_allclose(paths[-1], -starts, atol=1e-5)


@pytest.mark.slow
def test_train_classifier_reports_the_accuracy_of_its_parameters():
    digits = runs.digits_data()
    digits = digits._replace(train=runs.Split(*(a[:128] for a in digits.train)))
    spec = runs.digits_spec("cnode", EULER2, width=3, pool=2)
    settings = runs.TrainSettings(epochs=2, lr=1e-2, warmup_steps=1, eval_batch_size=100)
    (result,) = runs.train_classifier(spec, digits, [0], settings)
    _, static = eqx.partition(spec.make(jax.random.PRNGKey(0)), eqx.is_inexact_array)
    model = eqx.combine(result.params, static)
    # Constant steps: the whole test set in one batch gives the same logits as chunks of 100.
    x, y = digits.test
    expected = float(np.mean(np.argmax(np.asarray(model(x)), -1) == y))
    assert result.test_accuracy == pytest.approx(expected, abs=1e-9)
    assert len(result.losses) == 2 and len(result.epoch_seconds) == 1
    assert result.train_nfe == 2  # two Euler steps
    forward, backward = runs.evaluation_counts(model, x[:16], y[:16])
    assert forward == 2 and backward >= 2  # one VJP per evaluation at least


def test_adaptive_solve_hitting_max_steps_names_tolerances_and_budget(small_cnode):
    tight = cnode.Integrator(
        solver=diffrax.Tsit5(),
        controller=diffrax.PIDController(rtol=1e-9, atol=1e-9),
        dt0=0.5,
        gradient=CheckpointedBackprop(max_steps=2),
    )
    model = eqx.tree_at(lambda m: m.integrator, small_cnode, tight)
    x = jax.random.uniform(jax.random.PRNGKey(1), (3, 1, 4, 4))
    with pytest.raises(Exception, match=r"max_steps=2") as info:
        model(x)
    assert "rtol=1e-09" in str(info.value) and "atol=1e-09" in str(info.value)


def test_wrong_channel_count_names_expected_and_got(small_cnode):
    with pytest.raises(ValueError, match=r"\(1, 4, 4\).*got shape \(2, 3, 4, 4\)"):
        small_cnode(jnp.zeros((2, 3, 4, 4)))


@pytest.mark.slow
def test_accuracy_quick_profile_writes_the_table(tmp_path):
    from experiments import cnode_accuracy

    argv = ["--profile", "quick", "--models", "node", "--seeds", "1"]
    md = cnode_accuracy.main([*argv, "--out", str(tmp_path), "--data-dir", str(tmp_path)])
    rows = json.loads((tmp_path / "cnode_accuracy.json").read_text())["rows"]
    (digits,) = [r for r in rows if r["dataset"] == "digits"]
    (run,) = json.loads((tmp_path / "cnode_accuracy.json").read_text())["runs"]
    built = cnode.NODE((1, 8, 8), 10, width=run["width"], key=jax.random.PRNGKey(0))
    assert digits["params"] == cnode.count_parameters(built)
    assert abs(digits["params"] - 1500) < 300  # matched to the quick budget
    assert 0 <= run["test_accuracy"][0] <= 1
    assert digits["NFE fwd"] == 2 and digits["NFE bwd"] >= 2  # the quick profile: 2 Euler steps
    # The NODE reference column is the authors' MNIST log from the notes.
    assert digits["authors' logs [L] test %"] == "97.09 ± 0.05"
    text = md.read_text()
    assert text.count("| not found |") == 3 and "train_32x32.mat" in text


@pytest.mark.slow
def test_crossing_quick_profile_cnode_fits_and_node_cannot(tmp_path):
    from experiments import cnode_crossing

    cnode_crossing.main(["--profile", "quick", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "cnode_crossing.json").read_text())["trained"]
    mse = {r["model"]: r["MSE"] for r in rows}
    assert mse["C-NODE"] < 1e-3
    assert mse["NODE"] > 0.99  # an increasing map of the line cannot beat MSE 1
    assert (tmp_path / "cnode_crossing.png").exists()


@pytest.mark.slow
@pytest.mark.parametrize("module", ["cnode_k_ablation", "cnode_param_sweep", "cnode_cnf"])
def test_plot_modules_quick_profiles(tmp_path, module):
    import importlib

    importlib.import_module(f"experiments.{module}").main(
        ["--profile", "quick", "--out", str(tmp_path)]
    )
    assert (tmp_path / f"{module}.png").stat().st_size > 1000
    rows = json.loads((tmp_path / f"{module}.json").read_text())["rows"]
    assert len(rows) >= 2


@pytest.mark.slow
def test_speed_quick_profile_ratios_are_to_node(tmp_path):
    from experiments import cnode_speed

    cnode_speed.main(["--profile", "quick", "--out", str(tmp_path)])
    rows = {r["model"]: r for r in json.loads((tmp_path / "cnode_speed.json").read_text())["rows"]}
    assert rows["node"]["step / NODE"] == 1
    assert rows["cnode"]["step / NODE"] == pytest.approx(
        rows["cnode"]["step s"] / rows["node"]["step s"], rel=0.05
    )
    # One Euler step: one forward evaluation per model.
    assert rows["node"]["NFE fwd"] == rows["cnode"]["NFE fwd"] == 1
    assert rows["node"]["params"] == 115_444  # the authors' CIFAR-10 NODE (paper notes)
