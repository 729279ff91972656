"""Finite differences, closeness and relative errors over pytrees."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxtyping import TypeCheckError

from adjoint_lab.core import (
    assert_tree_allclose,
    finite_difference_grad,
    relative_error,
    tree_allclose,
)

X = {"w": jnp.array([[0.3, -1.2], [2.0, 0.5]]), "b": (jnp.array(0.7), 3)}


def _f(x):
    w, (b, n) = x["w"], x["b"]
    return jnp.sum(jnp.sin(w) * w**2) * jnp.exp(b) + n * b**3


@pytest.fixture(scope="module")
def exact():
    return jax.grad(lambda d: _f({"w": d[0], "b": (d[1], 3)}))((X["w"], X["b"][0]))


@pytest.mark.parametrize("scheme, tol", [("central", 1e-9), ("forward", 1e-5)])
def test_finite_difference_grad_matches_autodiff(scheme, tol, exact):
    fd = finite_difference_grad(_f, X, scheme=scheme)
    # Same structure as x; the integer leaf has no gradient.
    assert jax.tree.structure(fd, is_leaf=lambda v: v is None) == jax.tree.structure(
        {"w": 0, "b": (0, None)}, is_leaf=lambda v: v is None
    )
    assert fd["b"][1] is None
    error = relative_error((fd["w"], fd["b"][0]), exact)
    assert error < tol
    if scheme == "forward":
        # First-order: measurably worse than central differences.
        assert error > 1e-9


def test_finite_difference_grad_without_vmap():
    calls = []

    def f(x):
        calls.append(1)  # Python side effect: not vmappable into one call
        return float(_f(x))

    fd = finite_difference_grad(f, X, scheme="forward", vmap=False)
    assert len(calls) == 5 + 1  # n perturbations plus the base point
    assert np.isfinite(fd["w"]).all()


def test_finite_difference_grad_validates():
    # Under ADJOINT_LAB_TYPECHECK=1 the annotation (a Literal) refuses the scheme first.
    typechecked = os.environ.get("ADJOINT_LAB_TYPECHECK") == "1"
    refused = (ValueError, TypeCheckError) if typechecked else ValueError
    with pytest.raises(refused, match=r"(?s)scheme.*backward.*central"):
        finite_difference_grad(_f, X, scheme="backward")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"eps"):
        finite_difference_grad(_f, X, eps=0.0)
    with pytest.raises(ValueError, match=r"x\['w'\].*float32.*float64"):
        finite_difference_grad(_f, {"w": X["w"].astype(jnp.float32), "b": X["b"]})
    with pytest.raises(ValueError, match="scalar"):
        finite_difference_grad(lambda x: x["w"], X)


def test_tree_allclose():
    a = {"x": np.array([1.0, 2.0]), "y": (np.array(np.nan),)}
    assert tree_allclose(a, {"x": np.array([1.0, 2.0 + 1e-9]), "y": (np.array(np.nan),)})
    assert not tree_allclose(a, {"x": np.array([1.0, 2.1]), "y": (np.array(np.nan),)})
    assert tree_allclose(a, {"x": np.array([1.0, 2.1]), "y": (np.nan,)}, rtol=0.1)
    assert not tree_allclose(a, {"x": np.array([1.0, 2.0]), "z": (np.nan,)})  # structure
    assert not tree_allclose(a, {"x": np.array([1.0, 2.0, 3.0]), "y": (np.nan,)})  # shape


def test_relative_error():
    a = {"p": np.array([3.0, 0.0]), "q": np.array([[1.0]])}
    b = {"p": np.array([0.0, 0.0]), "q": np.array([[2.0]])}
    # ||a - b|| = sqrt(9 + 1), ||b|| = 2: all leaves form one vector.
    assert relative_error(a, b) == pytest.approx(np.sqrt(10.0) / 2.0, rel=1e-15)
    assert relative_error(b, b) == 0.0
    assert relative_error(np.zeros(3), np.zeros(3)) == 0.0
    assert relative_error(np.ones(1), np.zeros(1)) > 1e300
    with pytest.raises(ValueError, match="structures"):
        relative_error(a, {"p": b["p"]})
    with pytest.raises(ValueError, match=r"\['q'\].*\(1, 1\).*\(1,\)"):
        relative_error(a, {"p": b["p"], "q": np.array([2.0])})


def test_assert_tree_allclose_names_the_worst_leaf():
    expected = {"small": np.array([1.0, 2.0]), "big": np.array([[1.0, 2.0], [3.0, 4.0]])}
    actual = {"small": np.array([1.0, 2.0001]), "big": np.array([[1.0, 2.0], [3.0, 5.0]])}
    assert_tree_allclose(expected, expected)
    with pytest.raises(AssertionError) as info:
        assert_tree_allclose(actual, expected, rtol=1e-6, err_msg="gradient of A")
    message = str(info.value)
    assert message.startswith("gradient of A\n")
    assert "worst leaf ['big']" in message
    assert "1 of 4 elements differ" in message
    assert "worst element [1, 1]: actual 5.0, expected 4.0" in message
    assert "max abs error 1.000e+00, max rel error 2.500e-01" in message
    assert "relative_error over all leaves" in message
    with pytest.raises(AssertionError, match="different structures"):
        assert_tree_allclose(actual, {"small": 1.0})
    with pytest.raises(AssertionError, match=r"\['x'\]: shape \(2,\).*\(3,\)"):
        assert_tree_allclose({"x": np.ones(2)}, {"x": np.ones(3)})
    with pytest.raises(AssertionError, match="actual nan"):
        assert_tree_allclose(np.array([np.nan, 1.0]), np.array([0.0, 1.0]))
