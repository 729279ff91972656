"""The ode_adjoints benchmark (issue 14) at small sizes: its targets, one test each.

Each test runs the experiment's own functions on a small problem and asserts the target the
`quick` and `cpu` profiles report; the whole quick profile runs under `-m slow`. The targets
that the benchmark reports as FAIL (reversible memory against checkpointed, reversible time)
are not asserted here; `evaluate_targets` is tested on
rows with known verdicts instead.
"""

from __future__ import annotations

import functools as ft
import json

import equinox as eqx
import jax.numpy as jnp
import pytest

from experiments import ode_adjoints as ex

P = {
    "width": 8,
    "spiral_t1": 1.0,
    "lotka_periods": 1,
    "cnode_batch": 1,
    "repeats": 1,
    "max_steps": 512,
}


@ft.cache
def _spiral():
    problem = ex.spiral(P)
    return problem, ex.reference(problem)


def _verdicts(acc=(), mem=(), wp=()):
    return {t[0]: t[3] for t in ex.evaluate_targets(list(acc), list(mem), list(wp))}


def test_reversible_equals_backprop_through_the_same_solve():
    problem = ex.spiral(P)
    # Only the comparison with the same solve is asserted: skip the reference solve.
    shapes = (problem.field, problem.args, problem.y0)
    rows = ex.accuracy_rows(problem, P, ["reversible"], ref=shapes, cost=False)
    assert rows[0]["error_vs_same_solve_backprop"] <= 1e-10
    assert _verdicts(acc=rows)["reversible = same-solve backprop (spiral)"] == "PASS"


def test_reversible_memory_does_not_grow_with_steps():
    problem = ex.spiral(P)
    rows = ex.memory_rows(problem, [64, 1024], ["reversible"])
    assert _verdicts(mem=rows)["reversible memory 1024 / 64 steps (spiral)"] == "PASS"


def test_checkpointed_interpolant_memory_is_below_the_whole_interpolant():
    problem = ex.spiral(P)
    rows = ex.memory_rows(problem, [2048], ["interpolating", "interpolating-ckpt"])
    name = "interpolating checkpointed / whole interpolant memory at 2048 (spiral)"
    assert _verdicts(mem=rows)[name] == "PASS"


# Gauss and quadrature: in the NFE test below, from the same gradients.
@pytest.mark.parametrize("method", ["interpolating", "interpolating-ckpt"])
def test_continuous_adjoints_error_at_rtol_1e8(method):
    problem, ref = _spiral()
    rows = ex.accuracy_rows(problem, P, [method], ref=ref, cost=False)
    assert rows[0]["rel_error"] <= 1e-5
    assert _verdicts(acc=rows)[f"{method} error (spiral, rtol 1e-8)"] == "PASS"


def test_gauss_and_quadrature_error_and_fewer_backward_evaluations_than_backsolve():
    """At rtol 1e-8 (atol 1e-10, as the accuracy rows) on the spiral with 10 saved times:
    both are within 1e-5 of the reference and reach backsolve's error with fewer backward
    NFE. Each backward piece between saved times starts from the step the last one proposed;
    restarted from diffrax's initial-step heuristic, they needed more than backsolve (the cpu
    profile: 686 against 608)."""
    problem, ref = _spiral()
    rows = ex.work_precision_rows(problem, [1e-8], ref, ["backsolve", "quadrature", "gauss"])
    nfe = {r["method"]: r["nfe_backward"] for r in rows}
    verdicts = _verdicts(acc=[r for r in rows if r["method"] != "backsolve"], wp=rows)
    level = next(r["rel_error"] for r in rows if r["method"] == "backsolve")
    for method in ("gauss", "quadrature"):
        assert verdicts[f"{method} error (spiral, rtol 1e-8)"] == "PASS"
        name = f"{method} backward NFE < backsolve's at equal error {level:.1e} (spiral)"
        assert verdicts[name] == "PASS", (name, nfe)


def test_interpolating_succeeds_where_backsolve_fails():
    rows = ex.accuracy_rows(ex.dissipative(P), P, ["backsolve", "interpolating"], cost=False)
    assert _verdicts(acc=rows)["dissipative: backsolve fails, interpolating succeeds"] == "PASS"


@pytest.mark.parametrize("method", ["gauss", "quadrature"])
def test_quadrature_adjoints_on_the_stiff_problem(method):
    rows = ex.accuracy_rows(ex.stiff(P), P, [method], cost=False)
    assert _verdicts(acc=rows)[f"{method} error (stiff, rtol 1e-8)"] == "PASS"


def test_targets_are_evaluated_from_the_rows():
    acc = [
        {"problem": "spiral", "method": "reversible", "rel_error": 1e-9,
         "error_vs_same_solve_backprop": 1e-8, "time_ratio": 1.5},
        {"problem": "spiral", "method": "gauss", "rel_error": 1e-4},
    ]  # fmt: skip
    mem = [
        {"problem": "spiral", "method": m, "steps": n, "bytes": b}
        for m, n, b in [("reversible", 64, 100), ("reversible", 4096, 110),
                        ("checkpointed", 4096, 500)]
    ]  # fmt: skip
    wp = [
        {"problem": "spiral", "method": m, "rtol": r, "rel_error": e, "nfe_backward": n}
        for m, r, e, n in [("backsolve", 1e-6, 1e-5, 1000), ("backsolve", 1e-8, 1e-7, 4000),
                           ("gauss", 1e-6, 1e-6, 900), ("gauss", 1e-8, 1e-8, 3600),
                           ("quadrature", 1e-6, 1e-4, 500), ("quadrature", 1e-8, 1e-6, 5000)]
    ]  # fmt: skip
    verdicts = _verdicts(acc, mem, wp)
    assert verdicts["reversible = same-solve backprop (spiral)"] == "FAIL"
    assert verdicts["reversible time / checkpointed (spiral)"] == "PASS"
    assert verdicts["gauss error (spiral, rtol 1e-8)"] == "FAIL"
    assert verdicts["reversible memory 4096 / 64 steps (spiral)"] == "PASS"
    assert verdicts["reversible / checkpointed memory at 4096 steps (spiral)"] == "FAIL"
    # Equal error 1e-7 (backsolve's at rtol 1e-8, 4000 NFE): gauss reaches it at 1800 NFE
    # (log-log between 900 and 3600); quadrature's sweep never gets below 1e-6.
    assert verdicts["gauss backward NFE < backsolve's at equal error 1.0e-07 (spiral)"] == "PASS"
    name = "quadrature backward NFE < backsolve's at equal error 1.0e-07 (spiral)"
    assert verdicts[name] == "FAIL"
    assert ex.nfe_at_error(wp, "gauss", 1e-7) == pytest.approx(1800, rel=1e-9)


def test_a_failed_run_is_noted_as_the_errors_first_sentence_on_one_line():
    @eqx.filter_jit
    def f(x):
        return eqx.error_if(x, x > 0, "The solve did not reach t1. Raise max_steps | or not.")

    with pytest.raises(eqx.EquinoxRuntimeError) as info:
        f(jnp.ones(())).block_until_ready()
    # equinox's message is the stack, then this line, then its debugging hints.
    assert len(str(info.value).splitlines()) > 3
    assert ex.failure_line(info.value) == "EquinoxRuntimeError: The solve did not reach t1."
    assert ex.failure_line(ValueError("x\ny")) == "ValueError: x"


@pytest.mark.slow
def test_quick_profile(tmp_path):
    ex.main(["--profile", "quick", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "ode_adjoints.json").read_text())
    rows = {(r["problem"], r["method"]) for r in data["accuracy"]}
    assert {m for _, m in rows} == set(ex.METHODS)
    verdicts = {t["target"]: t["verdict"] for t in data["targets"]}
    for name in [
        "reversible = same-solve backprop (spiral)",
        "reversible memory 256 / 64 steps (spiral)",
        "interpolating error (spiral, rtol 1e-8)",
        "gauss error (stiff, rtol 1e-8)",
        "dissipative: backsolve fails, interpolating succeeds",
    ]:
        assert verdicts[name] == "PASS", name
    assert (tmp_path / "ode_adjoints.png").exists()
