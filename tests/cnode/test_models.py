"""The models: output shapes, NFE, input checks, layers against references, invariants.

Model initialisation compiles a random kernel per parameter shape, which is slow on a busy
CPU; so shape and error checks build abstract models (`equinox.filter_eval_shape`) and only a
few tests build real ones.
"""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adjoint_lab import cnode
from adjoint_lab.cnode._layers import Conv, ConvHead, GroupNorm
from adjoint_lab.core import solve
from tests.cnode.conftest import EULER

EXTRA = {
    "node": {},
    "anode": {"augment": 2},
    "ilnode": {"lift": 3},
    "ilanode": {"lift": 2, "augment": 1},
    "sonode": {"lift": 2},
    "cnode": {"k": 2, "path_width": 3},
    "canode": {"augment": 2, "k": 2, "path_width": 3},
    "cilnode": {"lift": 3, "k": 2, "path_width": 3},
    "cilanode": {"lift": 2, "augment": 1, "k": 3, "path_width": 3},
}


def make(name, shape, num_classes=10, integrator=EULER, seed=0, **kwargs):
    options = {"width": 4, **EXTRA[name], **kwargs}
    return cnode.MODELS[name](
        shape, num_classes, integrator=integrator, key=jax.random.PRNGKey(seed), **options
    )


def abstract(name, shape, num_classes=10, **kwargs):
    return eqx.filter_eval_shape(lambda: make(name, shape, num_classes, **kwargs))


def spec(*shape):
    return jax.ShapeDtypeStruct(shape, jnp.float32)


@pytest.mark.parametrize("name", list(cnode.MODELS))
def test_output_shapes(name):
    cases = [((1, 8, 8), 10, {}), ((2,), 3, {})]
    if name in ("node", "cnode"):
        cases.append(((1, 8, 8), 10, {"style": "cifar", "pool": 2}))
    for shape, classes, kwargs in cases:
        model = abstract(name, shape, classes, **kwargs)
        assert isinstance(model, cnode.ODEClassifier)
        logits, stats = eqx.filter_eval_shape(model.logits_and_stats, spec(5, *shape))
        assert logits.shape == (5, classes) and stats["nfe"].shape == ()
        assert eqx.filter_eval_shape(model, spec(*shape)).shape == (classes,)
    # Without a head the output has the input's shape (for SONODE: of the position x).
    headless = abstract(name, (1, 8, 8), None)
    assert eqx.filter_eval_shape(headless, spec(2, 1, 8, 8)).shape == (2, 1, 8, 8)
    headless = abstract(name, (2,), None, **({"lift": 2} if "lift" in EXTRA[name] else {}))
    assert eqx.filter_eval_shape(headless, spec(4, 2)).shape == (4, 2)


@pytest.mark.parametrize("name", list(cnode.MODELS))
def test_wrong_input_shapes_are_explained(name):
    model = abstract(name, (1, 8, 8))
    for shape, match in [
        ((2, 3, 8, 8), r"channel count 3 differs from the model's 1"),
        ((2, 8, 8, 1), r"channels-last"),
        ((2, 1, 28, 28), r"input_shape=\(1, 28, 28\)"),
        ((2, 2, 1, 8, 8), r"built for images of shape \(1, 8, 8\)"),
    ]:
        with pytest.raises(ValueError, match=match):
            eqx.filter_eval_shape(model, spec(*shape))
    with pytest.raises(ValueError, match=r"built for inputs of shape \(2,\)"):
        eqx.filter_eval_shape(abstract(name, (2,)), spec(4, 3))


ILL_TYPED = pytest.mark.untyped("ill-typed arguments on purpose: the hook refuses them first")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param(
            {"style": "resnet"},
            r"`style` must be one of \('mnist', 'cifar'\)",
            marks=ILL_TYPED,
        ),
        ({"pool": 9}, r"choose pool <= 8"),
        ({"width": 0}, r"`width` must be an int >= 1"),
        ({"k": 0}, r"`k` must be an int >= 1"),
    ],
)
def test_bad_constructor_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        abstract("cnode", (1, 8, 8), **kwargs)
    with pytest.raises(ValueError, match=r"`input_shape` must be the shape of one example"):
        abstract("node", (8, 8))


@eqx.filter_jit
def _outputs(model, x):
    logits, stats = model.logits_and_stats(x)
    return logits, stats["nfe"], model(x[0])


def test_forward_values_nfe_and_parameters(small_cnode, getkey):
    x = jax.random.uniform(getkey(), (3, 1, 4, 4))
    logits, nfe, single = _outputs(small_cnode, x)
    assert int(nfe) == 2  # two Euler steps of 0.5
    assert np.all(np.isfinite(logits))
    # Constant steps: an example alone gives what it gives in its batch.
    np.testing.assert_allclose(single, logits[0], rtol=1e-10)
    # The integrator holds no parameters.
    params, static = eqx.partition(small_cnode, eqx.is_inexact_array)
    assert all(isinstance(leaf, jax.Array) for leaf in jax.tree_util.tree_leaves(params))
    assert eqx.tree_equal(eqx.combine(params, static), small_cnode)
    total = sum(leaf.size for leaf in jax.tree_util.tree_leaves(params))
    assert cnode.count_parameters(small_cnode) == total == 479


def test_a_batch_is_one_solve_and_vmap_solves_examples_alone(small_cnode, getkey):
    model = eqx.tree_at(lambda m: m.integrator, small_cnode, cnode.Integrator())
    x = jax.random.uniform(getkey(), (4, 1, 4, 4))
    batch, alone = eqx.filter_jit(lambda m, x: (m(x), jax.vmap(m)(x)))(model, x)
    np.testing.assert_allclose(batch, alone, rtol=1e-2, atol=1e-3)  # within the tolerance


@jax.jit
def _layer_references(key):
    k1, k2, k3, k4 = jax.random.split(key, 4)
    x = jax.random.normal(k1, (5, 7, 6))
    out = {}
    for size in (1, 3):
        conv = Conv(6, 4, size, key=k2)
        reference = jax.lax.conv_general_dilated(
            x[None], conv.weight, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )[0]
        out[f"conv{size}"] = (conv(x), reference + conv.bias)
    for groups in (1, 2, 6):
        theirs = eqx.nn.GroupNorm(groups, 6)(jnp.moveaxis(x, -1, 0))
        out[f"norm{groups}"] = (GroupNorm(groups, 6)(x), jnp.moveaxis(theirs, 0, -1))
    head = ConvHead(6, 2, 3, key=k3)
    h = head.conv(x)
    # PyTorch's AdaptiveAvgPool windows: 5 -> 3: [0, 2), [1, 4), [3, 5); 7 -> 3: [0, 3),
    # [2, 5), [4, 7).
    rows, cols = [(0, 2), (1, 4), (3, 5)], [(0, 3), (2, 5), (4, 7)]
    pooled = jnp.stack(
        [jnp.stack([h[a:b, c:d].mean(axis=(0, 1)) for c, d in cols]) for a, b in rows]
    )
    out["head"] = (head(x), head.linear(pooled.ravel()))
    del k4
    return out


def test_layers_match_references(getkey):
    for name, (ours, reference) in _layer_references(getkey()).items():
        np.testing.assert_allclose(ours, reference, rtol=1e-8, atol=1e-10, err_msg=name)


def test_second_order_field_crosses_on_the_line():
    """x'' = -pi^2 x with v(0) = 0 maps x(0) to -x(0): SONODE can represent the crossing map."""
    field = cnode.SecondOrderField(lambda u: -(jnp.pi**2) * u[..., :1])
    u0 = jnp.array([[-1.0, 0.0], [1.0, 0.0]])
    controller = diffrax.PIDController(rtol=1e-9, atol=1e-9)
    sol = solve(cnode.BatchedField(field), 0.0, 1.0, u0, u0, controller=controller, dt0=0.1)
    np.testing.assert_allclose(sol.ys[-1][:, 0], [1.0, -1.0], atol=1e-7)


def test_losses():
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    labels = np.array([0, 2])
    expected = np.mean([-np.log(np.exp(2) / (np.exp(2) + 1 + np.exp(-1))), np.log(3.0)])

    @jax.jit
    def losses(logits, labels):
        return (
            cnode.cross_entropy(logits, labels),
            cnode.double_softmax_cross_entropy(logits, labels),
            cnode.cross_entropy(jax.nn.softmax(logits), labels),
            cnode.double_softmax_cross_entropy(jnp.array([[50.0, 0.0, 0.0]]), jnp.array([0])),
            cnode.accuracy(logits, labels),
        )

    plain, double, reference, confident, accuracy = losses(logits, labels)
    np.testing.assert_allclose(plain, expected, rtol=1e-12)
    np.testing.assert_allclose(double, reference, rtol=1e-12)
    # Bounded below away from 0: a confident right answer still costs log(e + 2) - 1.
    np.testing.assert_allclose(confident, np.log(np.e + 2) - 1, rtol=1e-6)
    assert accuracy == 0.5
