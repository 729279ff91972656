"""Parameter counts: the authors' architectures exactly, the paper's ranges, width matching."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import pytest

from adjoint_lab import cnode

# Counted from the official code's layer shapes (see /work/shared/papers/cnode.md, Sec. 3.2).
AUTHORS = {
    "cifar10": {
        "node": 115_444,
        "cnode": 113_851,
        "anode": 112_234,
        "canode": 112_276,
        "ilnode": 113_368,
        "cilnode": 113_752,
        "ilanode": 112_801,
        "cilanode": 112_843,
    },
    "mnist": {
        "node": 85_468,
        "cnode": 83_041,
        "anode": 89_408,
        "ilnode": 89_597,
        "ilanode": 89_552,
        "canode": 88_321,
        "cilnode": 88_510,
        "cilanode": 88_465,
    },
}
RANGES = {"cifar10": (112_000, 115_500), "svhn": (112_000, 115_500), "mnist": (83_000, 89_600)}


@pytest.mark.parametrize("dataset", ["cifar10", "svhn", "mnist"])
def test_paper_architectures_match_the_paper_budgets(dataset):
    counts = cnode.paper_parameter_counts(dataset)
    assert set(counts) == set(cnode.MODELS)
    low, high = RANGES[dataset]
    assert all(low <= n <= high for n in counts.values()), counts
    for name, expected in AUTHORS.get(dataset, AUTHORS["cifar10"]).items():
        assert counts[name] == expected, name
    table = cnode.format_parameter_counts(counts, dataset)
    assert "| cnode |" in table and f"{counts['cnode']:,}" in table


def test_paper_model():
    key = jax.random.PRNGKey(0)
    model = eqx.filter_eval_shape(lambda: cnode.paper_model("cnode", "mnist", key=key))
    assert isinstance(model, cnode.ODEClassifier) and cnode.count_parameters(model) == 83_041
    assert isinstance(model.field, cnode.CharacteristicField)
    logits = eqx.filter_eval_shape(model, jax.ShapeDtypeStruct((2, 1, 28, 28), jnp.float32))
    assert logits.shape == (2, 10)
    with pytest.raises(ValueError, match="choose one of"):
        cnode.paper_model("cnode", "imagenet", key=key)


def test_matched_width_recovers_the_authors_widths():
    key = jax.random.PRNGKey(0)

    def node(width):
        return cnode.NODE((1, 28, 28), width=width, pool=8, key=key)

    assert cnode.matched_width(node, 85_468) == 95
    cifar = dict(style="cifar", pool=4, key=key)

    def c_node(width):
        return cnode.CNODE((3, 32, 32), width=width, k=3, path_width=8, **cifar)

    assert cnode.matched_width(c_node, 113_851) == 60
    # Between two widths, the closer count wins.
    assert cnode.matched_width(node, 85_468 + 10) == 95
    with pytest.raises(ValueError, match="`budget` must be an int >= 1"):
        cnode.matched_width(node, 0)
