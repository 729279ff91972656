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
    assert run["seeds"] == [0]


@pytest.mark.slow
def test_accuracy_target_is_a_paired_comparison(tmp_path):
    from experiments import cnode_accuracy

    argv = ["--profile", "quick", "--models", "node,cnode", "--seeds", "2"]
    md = cnode_accuracy.main([*argv, "--out", str(tmp_path), "--data-dir", str(tmp_path)])
    stored = json.loads((tmp_path / "cnode_accuracy.json").read_text())
    by = {r["model"]: r for r in stored["runs"]}
    _check_paired(
        stored["paired_cnode_minus_node"],
        by["cnode"]["test_accuracy"],
        by["node"]["test_accuracy"],
    )
    assert "Paired by seed, C-NODE − NODE" in md.read_text()


def test_trained_cnode_fits_the_crossing_map_and_node_cannot():
    """The small default version of the crossing experiment: four Heun steps, 120 Adam steps.

    A NODE's flow on the line is increasing, so its best is sending both points to one value
    (MSE 1); C-NODE's velocity sees the input, so its trajectories may cross.
    """
    from adjoint_lab.config import OptimConfig
    from adjoint_lab.train import TrainState, make_optimizer, train_step, value_and_grad_of

    heun = cnode.Integrator(
        solver=diffrax.Heun(),
        controller=diffrax.ConstantStepSize(),
        dt0=0.25,
        gradient=CheckpointedBackprop(max_steps=4),
    )
    x, y = data.crossing_map()
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    models = {
        "cnode": cnode.CNODE((1,), None, width=16, k=1, path_width=16, integrator=heun, key=k1),
        "node": cnode.NODE((1,), None, width=16, integrator=heun, key=k2),
    }
    config = OptimConfig(name="adam", lr=1e-2, schedule="warmup_cosine", warmup_steps=5)
    out = {}
    for name, model in models.items():
        params, static = eqx.partition(model, eqx.is_inexact_array)
        steps = 120 if name == "cnode" else 40
        optimizer = make_optimizer(config, steps)

        def loss(p, batch, key, static=static):
            return jnp.mean((eqx.combine(p, static)(batch[0]) - batch[1]) ** 2), {}

        step = jax.jit(train_step(value_and_grad_of(loss), optimizer))
        state = TrainState.create(params, optimizer)
        for _ in range(steps):
            state, _, _ = step(state, (x, y), jax.random.PRNGKey(0))
        out[name] = np.asarray(eqx.combine(state.params, static)(x))[:, 0]
    mse = {name: float(np.mean((u - y[:, 0]) ** 2)) for name, u in out.items()}
    assert mse["cnode"] < 1e-3, mse
    assert mse["node"] > 0.99 and out["node"][0] < out["node"][1], (mse, out["node"])


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


def _scripted_clock(*durations):
    """A clock whose successive intervals (start, stop pairs) last `durations` seconds."""
    ticks, now = [], 0.0
    for duration in durations:
        ticks += [now, now + duration]
        now += duration + 1.0
    return iter(ticks).__next__


def test_speed_measure_times_the_median_step_after_the_compiling_one(small_cnode, monkeypatch):
    from experiments import cnode_speed

    # Compilation 10 s, then steps of 3, 1 and 1.5 s: the median is 1.5 (the mean 1.83).
    monkeypatch.setattr(cnode_speed, "clock", _scripted_clock(10.0, 3.0, 1.0, 1.5))
    x = jax.random.uniform(jax.random.PRNGKey(2), (3, 1, 4, 4))
    measured = cnode_speed.measure(small_cnode, x, jnp.array([0, 1, 3]), repeats=3)
    assert measured["compile_s"] == 10.0 and measured["step_s"] == 1.5
    # Two Euler steps: two forward evaluations; backward at least one VJP per evaluation.
    assert measured["nfe_forward"] == 2 and measured["nfe_backward"] >= 2


@pytest.mark.slow
def test_speed_quick_profile_reports_ratios_to_node(tmp_path, monkeypatch):
    from experiments import cnode_speed

    # Two steps per model after compiling: NODE's median 3 s, C-NODE's 1.5 s: ratio 0.5.
    clock = _scripted_clock(5.0, 2.0, 4.0, 7.0, 1.0, 2.0)
    monkeypatch.setattr(cnode_speed, "clock", clock)
    cnode_speed.main(["--profile", "quick", "--out", str(tmp_path)])
    rows = {r["model"]: r for r in json.loads((tmp_path / "cnode_speed.json").read_text())["rows"]}
    assert rows["node"]["step s"] == 3.0 and rows["cnode"]["step s"] == 1.5
    assert rows["node"]["step / NODE"] == 1 and rows["cnode"]["step / NODE"] == 0.5
    assert rows["cnode"]["compile s"] == 7.0
    # One Euler step: one forward evaluation per model.
    assert rows["node"]["NFE fwd"] == rows["cnode"]["NFE fwd"] == 1
    assert rows["node"]["params"] == 115_444  # the authors' CIFAR-10 NODE (paper notes)


def test_paired_comparison_matches_scipy():
    import scipy.stats

    from experiments.cnode_common import describe_paired, paired

    treated = {0: 0.91, 1: 0.93, 2: 0.88, 3: 0.95, 7: 0.5}
    baseline = {0: 0.90, 1: 0.89, 2: 0.89, 3: 0.90, 5: 0.1}
    out = paired(treated, baseline)  # seeds 5 and 7 have no partner
    a, b = np.array([0.91, 0.93, 0.88, 0.95]), np.array([0.90, 0.89, 0.89, 0.90])
    reference = scipy.stats.ttest_rel(a, b)
    assert out["seeds"] == [0, 1, 2, 3] and out["n"] == 4
    np.testing.assert_allclose(out["differences"], 100 * (a - b), rtol=1e-12)
    np.testing.assert_allclose(out["mean"], 100 * np.mean(a - b), rtol=1e-12)
    np.testing.assert_allclose(out["t"], reference.statistic, rtol=1e-10)
    np.testing.assert_allclose(out["p"], reference.pvalue, rtol=1e-8)
    assert f"paired t = {reference.statistic:.2f}" in describe_paired(out, "x")
    assert paired({0: 0.9}, {0: 0.8})["t"] is None  # one seed: no spread, no t


def _check_paired(entry, treated, baseline):
    import scipy.stats

    reference = scipy.stats.ttest_rel(treated, baseline)
    np.testing.assert_allclose(entry["t"], reference.statistic, rtol=1e-8)
    np.testing.assert_allclose(entry["mean"], 100 * np.mean(np.subtract(treated, baseline)))


@pytest.mark.slow
def test_sweeps_store_per_seed_values_and_paired_comparisons(tmp_path):
    from experiments import cnode_k_ablation, cnode_param_sweep

    cnode_param_sweep.main(["--profile", "quick", "--seeds", "2", "--out", str(tmp_path)])
    data_ = json.loads((tmp_path / "cnode_param_sweep.json").read_text())
    by = {(r["model"], r["budget"]): r for r in data_["runs"]}
    assert all(r["seeds"] == [0, 1] and len(r["test"]) == 2 for r in data_["runs"])
    for entry in data_["paired"]:
        c, n = by["cnode", entry["budget"]], by["node", entry["budget"]]
        _check_paired(entry, c["test"], n["test"])
    cnode_k_ablation.main(["--profile", "quick", "--seeds", "2", "--out", str(tmp_path)])
    data_ = json.loads((tmp_path / "cnode_k_ablation.json").read_text())
    first, second = data_["runs"]
    (entry,) = data_["paired"]
    assert entry["k"] == second["k"] and second["seeds"] == [0, 1]
    _check_paired(entry, second["test"], first["test"])


@pytest.mark.slow
def test_fashion_mnist_quick_profile_reports_accuracy_pairs_and_speed(tmp_path, monkeypatch):
    from experiments import cnode_fashion_mnist as module

    module.main(["--profile", "quick", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "cnode_fashion_mnist.json").read_text())
    train = report["train"]
    for name in ("node", "cnode"):
        seeds = train[name]["per_seed"]
        assert len(seeds) == 2
        for run in seeds.values():
            # One Euler step: one forward evaluation per training step, measured in training.
            assert run["train_nfe"] == 1 and len(run["epoch_test_accuracy"]) == 1
            assert run["test_accuracy"] == run["epoch_test_accuracy"][-1]
    pair = report["paired_cnode_node"]
    differences = [
        100 * (train["cnode"]["per_seed"][s]["test_accuracy"] - v["test_accuracy"])
        for s, v in train["node"]["per_seed"].items()
    ]
    np.testing.assert_allclose(pair["differences"], differences)
    speed = report["speed"]
    assert {"cnode today", "cnode new", "node today", "node new"} <= set(speed["steps"])
    ratio = speed["steps"]["cnode new"] / speed["steps"]["cnode today"]
    assert speed["ratio_new_today"]["cnode"] == pytest.approx(ratio)
    assert all(v > 0 for v in speed["parts"].values())


def test_todays_norms_in_the_speed_baseline_compute_what_group_norm_computes():
    # The speed section times today's code path with its norms (`with_axes_norms`): for the
    # comparison to be fair, they must compute the same model, forward and backward.
    from experiments import cnode_fashion_mnist as module

    model = module.spec("cnode", (1, 6, 6), cnode.Im2colConv(), module.TODAY[1], 4).make(
        jax.random.PRNGKey(0)
    )
    today = module.with_axes_norms(model)
    kinds = lambda m: [  # noqa: E731
        type(n).__name__
        for n in jax.tree_util.tree_leaves(m, is_leaf=lambda n: isinstance(n, cnode.GroupNorm))
        if isinstance(n, cnode.GroupNorm)
    ]
    assert kinds(model) and set(kinds(model)) == {"GroupNorm"}
    assert set(kinds(today)) == {"_AxesGroupNorm"} and len(kinds(today)) == len(kinds(model))
    x = jax.random.uniform(jax.random.PRNGKey(1), (3, 1, 6, 6), jnp.float64)

    def loss(m, x):
        return jnp.sum(jnp.sin(m(x)))

    (g_new, x_new), (g_old, x_old) = (
        eqx.filter_grad(lambda mx: loss(*mx))((m, x)) for m in (model, today)
    )
    np.testing.assert_allclose(loss(model, x), loss(today, x), rtol=1e-12)
    np.testing.assert_allclose(x_new, x_old, rtol=1e-9, atol=1e-12)
    leaves = jax.tree_util.tree_leaves
    for a, b in zip(leaves(g_new), leaves(g_old), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
