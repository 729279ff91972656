"""Gradient methods for ODE solves compared: error, memory, time and NFE (float64).

    python -m experiments.ode_adjoints [--profile quick|cpu|gpu] [--out DIR]

Problems: the spiral neural ODE of the default experiment (an MLP field from
`adjoint_lab.tasks.node_spiral`, parameters inside the field), a long-horizon Lotka-Volterra
system (parameters in `args`), a dissipative linear system over a long horizon (eigenvalues -1
and -50, Tsit5) and a stiff one (eigenvalues -1 and -1000, Kvaerno5), both with closed-form
gradients through `expm`, and the C-NODE image field at the authors' MNIST widths
(`adjoint_lab.cnode.paper_model("cnode", "mnist")`, a batch of random 28x28 inputs). For
every method: the gradient's relative error against a float64 reference (closed form, or
Dopri8 at rtol 1e-12 with checkpointed backprop), NFE forward and backward
(`core.count_evaluations`), time as a ratio to `CheckpointedBackprop` in the same run, and the
compile-time memory of the gradient (`core.compiled_memory`) as constant steps grow. The
reversible method is also compared with backprop through the same reversible discrete solve,
which it must equal to rounding; the backward NFE of the continuous adjoints are compared at
equal error on a tolerance sweep (work-precision).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from adjoint_lab.core import (
    BacksolveAdjoint,
    CheckpointedBackprop,
    DirectBackprop,
    GaussAdjoint,
    InterpolatingAdjoint,
    QuadratureAdjoint,
    Reversible,
    ReversibleAdjoint,
    compiled_memory,
    count_evaluations,
    default_checkpoints,
    relative_error,
    solve,
    time_fn,
)
from adjoint_lab.tasks.node_spiral import MLPField, VectorFieldConfig
from experiments.report import Report

jax.config.update("jax_enable_x64", True)

NAME = "ode_adjoints"
PROFILES = {
    "quick": {
        "width": 16,
        "spiral_t1": 2.0,
        "lotka_periods": 2,
        "cnode_batch": 1,
        "steps": [64, 256],
        "cnode_steps": [64, 256],
        "wp_rtols": [1e-6, 1e-8],
        "repeats": 1,
        "max_steps": 2048,
    },
    "cpu": {
        "width": 64,
        "spiral_t1": 10.0,
        "lotka_periods": 100,
        "cnode_batch": 2,
        "steps": [64, 1024, 16384],
        "cnode_steps": [64, 16384],
        "wp_rtols": [1e-6, 1e-8, 1e-10],
        "repeats": 5,
        "max_steps": 16384,
    },
    "gpu": {
        "width": 128,
        "spiral_t1": 10.0,
        "lotka_periods": 100,
        "cnode_batch": 8,
        "steps": [64, 256, 1024, 4096, 16384],
        "cnode_steps": [64, 1024, 16384],
        "wp_rtols": [1e-6, 1e-7, 1e-8, 1e-9, 1e-10],
        "repeats": 10,
        "max_steps": 16384,
    },
}
RTOL, ATOL = 1e-8, 1e-10
LOTKA_PERIOD = 3.6  # close to the period of the orbit through (1, 1) at these parameters


def _interp_checkpoints(max_steps: int) -> int:
    # The same count as CheckpointedBackprop's default, so that the two are compared alike.
    return default_checkpoints(max_steps)


# name -> gradient method for a step budget.
GRADIENTS: dict[str, Callable[[int], object]] = {
    "checkpointed": lambda n: CheckpointedBackprop(max_steps=n),
    "direct": lambda n: DirectBackprop(max_steps=n),
    "backsolve": lambda n: BacksolveAdjoint(max_steps=n),
    "reversible": lambda n: ReversibleAdjoint(max_steps=n),
    "interpolating": lambda n: InterpolatingAdjoint(max_steps=n),
    "interpolating-ckpt": lambda n: InterpolatingAdjoint(
        checkpoints=_interp_checkpoints(n), max_steps=n
    ),
    "quadrature": lambda n: QuadratureAdjoint(max_steps=n),
    "gauss": lambda n: GaussAdjoint(max_steps=n),
}
METHODS = list(GRADIENTS)
ACCURACY_METHODS = METHODS
OLD = ("checkpointed", "direct", "backsolve")
# Work-precision: the quadrature adjoints against backsolve (the NFE target), and
# against the strongest backsolve, with the seminorm (Kidger, Chen and Lyons 2021) that
# leaves the parameter cotangent out of the backward error control.
WP_METHODS = {
    "backsolve": lambda n: BacksolveAdjoint(max_steps=n),
    "backsolve-seminorm": lambda n: BacksolveAdjoint(seminorm=True, max_steps=n),
    "quadrature": lambda n: QuadratureAdjoint(max_steps=n),
    "gauss": lambda n: GaussAdjoint(max_steps=n),
}
WP_BASELINES = {"backsolve": "backsolve's", "backsolve-seminorm": "backsolve(seminorm)'s"}


# Which methods run where (every profile), sized for a shared two-core CPU: all of them on the
# spiral; fewer on the long horizon and on the linear problems, whose point is the error; NFE
# counts (two more compilations per row) on the spiral and Lotka-Volterra only. The C-NODE
# field's gradients take minutes each to compile there, so it gets compile-time memory plans
# of the methods that the memory targets are about, and no accuracy rows.
_ACCURACY = {
    "spiral": ACCURACY_METHODS,
    "lotka-volterra": ["checkpointed", "backsolve", "reversible", "interpolating"],
    "dissipative": ["backsolve", "interpolating", "interpolating-ckpt"],
    "stiff": ["backsolve", "interpolating", "quadrature", "gauss"],
}
# NFE counts take two more compilations per row: for the methods whose cost is compared.
_COUNTS = {"checkpointed", "backsolve", "reversible", "interpolating", "quadrature", "gauss"}
_CNODE_MEMORY = {"checkpointed": "all", "reversible": "all"}
# Spiral memory: every method at the smallest and largest step count, these also in between.
_MEMORY_ALL_STEPS = ("checkpointed", "reversible", "interpolating", "interpolating-ckpt")


class Problem(eqx.Module):
    """loss(field, args, y0) through `solve`; gradients with respect to all three."""

    name: str = eqx.field(static=True)
    field: eqx.Module
    args: jax.Array | None
    y0: jax.Array
    t1: float = eqx.field(static=True)
    ts: jax.Array
    max_steps: int = eqx.field(static=True)
    implicit: bool = eqx.field(static=True, default=False)
    # dy/dt = A y with A in `args`: the reference gradient is the closed form.
    linear: bool = eqx.field(static=True, default=False)

    def loss(self, field, args, y0, *, solver, controller, dt0, gradient):
        sol = solve(
            field,
            0.0,
            self.t1,
            y0,
            args,
            solver=solver,
            controller=controller,
            dt0=dt0,
            gradient=gradient,
            ts=self.ts,
        )
        ys = sol.ys.reshape(sol.ys.shape[0], -1)
        return jnp.mean(jnp.sum(ys**2, axis=-1))


class Lotka(eqx.Module):
    def __call__(self, t, y, theta):
        a, b, c, d = theta
        x, z = y
        return jnp.stack([a * x - b * x * z, d * x * z - c * z])


class Linear(eqx.Module):
    def __call__(self, t, y, a):
        return a @ y


STIFF_A = jnp.array([[-500.5, 499.5], [499.5, -500.5]])  # eigenvalues -1 and -1000
DISSIPATIVE_A = jnp.array([[-25.5, 24.5], [24.5, -25.5]])  # eigenvalues -1 and -50


def _f64(tree):
    return jax.tree.map(lambda x: x.astype(jnp.float64) if eqx.is_inexact_array(x) else x, tree)


def spiral(p: dict) -> Problem:
    field = MLPField(2, VectorFieldConfig(width=p["width"], depth=2), key=jax.random.PRNGKey(0))
    t1 = p["spiral_t1"]
    return Problem(
        "spiral", _f64(field), None, jnp.array([2.0, 0.0]), t1, jnp.linspace(0.0, t1, 11)[1:], 4096
    )


def lotka(p: dict) -> Problem:
    t1 = LOTKA_PERIOD * p["lotka_periods"]
    return Problem(
        "lotka-volterra",
        Lotka(),
        jnp.array([1.5, 1.0, 3.0, 1.0]),
        jnp.array([1.0, 1.0]),
        t1,
        jnp.linspace(0.0, t1, 21)[1:],
        p["max_steps"],
    )


def dissipative(p: dict) -> Problem:
    # Explicit solver; re-solving y backwards (backsolve) amplifies errors by e^(50 t).
    del p
    ts = jnp.linspace(0.0, 10.0, 5)[1:]
    return Problem("dissipative", Linear(), DISSIPATIVE_A, jnp.array([1.0, 0.5]), 10.0, ts, 4096,
                   linear=True)  # fmt: skip


def stiff(p: dict) -> Problem:
    del p
    ts = jnp.linspace(0.0, 2.0, 5)[1:]
    return Problem("stiff", Linear(), STIFF_A, jnp.array([1.0, 0.5]), 2.0, ts, 4096,
                   implicit=True, linear=True)  # fmt: skip


def cnode(p: dict) -> Problem:
    """The C-NODE latent field of the authors' MNIST model (k=2, width 64, path width 4)."""
    from adjoint_lab.cnode import BatchedField, paper_model

    model = paper_model("cnode", "mnist", key=jax.random.PRNGKey(0))
    # Channels last, as the classifier hands images to its initial map and field.
    x = jax.random.uniform(jax.random.PRNGKey(1), (p["cnode_batch"], 28, 28, 1))
    model, x = _f64((model, x))
    u0 = jax.vmap(model.initial)(x)
    return Problem("cnode", BatchedField(model.field), x, u0, 1.0, jnp.array([0.5, 1.0]), 1024)


def problems(p: dict) -> list[Problem]:
    return [spiral(p), lotka(p), dissipative(p), stiff(p), cnode(p)]


def _solver_for(problem: Problem, method: str, rtol: float = RTOL, atol: float = ATOL):
    """(solver, controller) for a method on a problem."""
    pid = diffrax.PIDController(rtol=rtol, atol=atol)
    if problem.implicit:
        return diffrax.Kvaerno5(), pid
    if method == "reversible":
        # Outputs between steps are linear interpolations: step to the saved times.
        return Reversible(diffrax.Tsit5()), diffrax.ClipStepSizeController(pid, step_ts=problem.ts)
    return diffrax.Tsit5(), pid


def _grad_fn(problem: Problem, **kw):
    return eqx.filter_jit(
        lambda field, args, y0: eqx.filter_grad(lambda fay: problem.loss(*fay, **kw))(
            (field, args, y0)
        )
    )


def reference(problem: Problem):
    if problem.linear:

        def exact(field, a, y0):
            ys = jax.vmap(lambda t: jax.scipy.linalg.expm(a * t) @ y0)(problem.ts)
            return jnp.mean(jnp.sum(ys**2, axis=-1))

        return eqx.filter_grad(lambda fay: exact(*fay))((problem.field, problem.args, problem.y0))
    fn = _grad_fn(
        problem,
        solver=diffrax.Dopri8(),
        controller=diffrax.PIDController(rtol=1e-12, atol=1e-14),
        dt0=None,
        gradient=CheckpointedBackprop(max_steps=4 * problem.max_steps),
    )
    return fn(problem.field, problem.args, problem.y0)


def _error(grads, ref) -> float:
    leaves = lambda t: [x for x in jax.tree.leaves(t) if eqx.is_inexact_array(x)]  # noqa: E731
    error = relative_error(leaves(grads), leaves(ref))
    return error if np.isfinite(error) else float("inf")


def _count(problem: Problem, kw: dict):
    if problem.implicit:
        # `count_evaluations` wraps the field in a custom VJP, which the Newton solves of
        # an implicit solver cannot differentiate forwards (jvp): no counts there.
        return None
    return count_evaluations(
        lambda f, a, y0, kw=kw: problem.loss(f, a, y0, **kw),
        problem.field,
        problem.args,
        problem.y0,
    )


_ERROR_LINE = re.compile(r"^\s*(?:[\w.]+\.)?(\w*(?:Error|Exception)): (.+)$")


def failure_line(e: BaseException, limit: int = 200) -> str:
    """`Type: first sentence of the message`, on one line, for a table cell.

    equinox wraps a runtime error as the stack outside and inside JIT, then the message
    (`equinox.EquinoxRuntimeError: ...`), then its debugging hints, so neither the first
    nor the last line of `str(e)` is the reason.
    """
    message = ""
    for line in str(e).splitlines():
        match = _ERROR_LINE.match(line)
        if match:
            message = match.group(2)
    if not message:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        message = lines[0] if lines else ""
    sentence = re.split(r"(?<=[.!?])\s", message.strip(), maxsplit=1)[0]
    if len(sentence) > limit:
        sentence = sentence[: limit - 1] + "…"
    return f"{type(e).__name__}: {sentence}".replace("|", "/")


def accuracy_rows(
    problem: Problem,
    p: dict,
    methods: Sequence[str] = ACCURACY_METHODS,
    ref=None,
    cost: bool = True,
    counts: bool = True,
) -> list[dict]:
    """Error, time, NFE of each method at rtol 1e-8 (adaptive steps); `cost=False` leaves
    out the time and NFE (for the tests), `counts=False` the NFE."""
    ref = reference(problem) if ref is None else ref
    rows = []
    base_time = None
    args = (problem.field, problem.args, problem.y0)
    for method in methods:
        base = {"problem": problem.name, "method": method}
        if problem.implicit and method == "reversible":
            rows.append({**base, "note": "explicit solvers only"})
            continue
        solver, controller = _solver_for(problem, method)
        kw = dict(
            solver=solver,
            controller=controller,
            dt0=None,
            gradient=GRADIENTS[method](problem.max_steps),
        )
        fn = _grad_fn(problem, **kw)
        try:
            grads = fn(*args)
            error = _error(grads, ref)
        except Exception as e:  # noqa: BLE001 - a failed solve is a result here
            rows.append({**base, "note": f"failed: {failure_line(e)}"})
            print(problem.name, method, "failed:", failure_line(e), flush=True)
            print(problem.name, method, "failed", str(e), flush=True)
            continue
        if not cost:
            row = {**base, "rel_error": error}
            if method == "reversible":
                same = _grad_fn(problem, **{**kw, "gradient": GRADIENTS["checkpointed"](
                    problem.max_steps)})(*args)  # fmt: skip
                row["error_vs_same_solve_backprop"] = _error(grads, same)
            rows.append(row)
            continue
        timing = time_fn(fn, *args, repeats=p["repeats"])
        if method == "checkpointed":
            base_time = timing.median
        count = _count(problem, kw) if counts and method in _COUNTS else None
        row = {
            **base,
            "rel_error": error,
            "time_s": timing.median,
            "time_ratio": timing.median / base_time if base_time else None,
            "nfe_forward": count.forward if count else None,
            "nfe_backward": count.backward if count else None,
            "nfe_backward_vjp": count.backward_vjp if count else None,
            "note": "" if count else ("implicit: " if problem.implicit else "") + "NFE not counted",
        }
        if method == "reversible":
            # The same reversible solve, backpropagated through: the gradient it must equal,
            # and the time of checkpointed backprop on exactly the same steps.
            same_fn = _grad_fn(problem, **{**kw, "gradient": GRADIENTS["checkpointed"](
                problem.max_steps)})  # fmt: skip
            row["error_vs_same_solve_backprop"] = _error(grads, same_fn(*args))
            same_time = time_fn(same_fn, *args, repeats=p["repeats"]).median
            row["time_ratio_same_solve"] = timing.median / same_time
        print(row, flush=True)
        rows.append(row)
    return rows


def memory_rows(
    problem: Problem, steps: Sequence[int], methods: Sequence[str] = METHODS
) -> list[dict]:
    """Compile-time memory of the gradient with n constant steps of Tsit5 (Reversible(Tsit5)
    for the reversible method), max_steps = n. `fixed` = arguments + outputs (parameters,
    inputs, gradients), `temp` = everything the gradient allocates besides."""
    rows = []
    params, static = eqx.partition(problem.field, eqx.is_inexact_array)
    for n in steps:
        for method in methods:
            solver = Reversible(diffrax.Tsit5()) if method == "reversible" else diffrax.Tsit5()
            kw = dict(solver=solver, controller=None, dt0=problem.t1 / n,
                      gradient=GRADIENTS[method](n))  # fmt: skip

            def grad(params, args, y0, kw=kw):
                def loss(p_, y):
                    return problem.loss(eqx.combine(p_, static), args, y, **kw)

                return jax.grad(loss, argnums=(0, 1))(params, y0)

            mem = compiled_memory(grad, params, problem.args, problem.y0)
            row = {
                "problem": problem.name,
                "steps": n,
                "method": method,
                "bytes": mem.total,
                "temp": mem.temp,
                "fixed": mem.argument + mem.output - mem.alias,
            }
            rows.append(row)
            print(row, flush=True)
    return rows


def work_precision_rows(
    problem: Problem, rtols: Sequence[float], ref=None, methods: Sequence[str] | None = None
) -> list[dict]:
    """Gradient error and backward NFE of the continuous adjoints (`WP_METHODS`, or those
    named) over a tolerance sweep (forward and backward at the same rtol, atol = rtol / 100)."""
    ref = reference(problem) if ref is None else ref
    rows = []
    for method in WP_METHODS if methods is None else methods:
        make = WP_METHODS[method]
        for rtol in rtols:
            solver, controller = _solver_for(problem, method, rtol, rtol / 100)
            kw = dict(solver=solver, controller=controller, dt0=None,
                      gradient=make(problem.max_steps))  # fmt: skip
            # The counted gradient call is the gradient too: one compilation for both.
            count = _count(problem, kw)
            row = {
                "problem": problem.name,
                "method": method,
                "rtol": rtol,
                "rel_error": _error(count.gradient, ref),
                "nfe_backward": count.backward,
            }
            rows.append(row)
            print(row, flush=True)
    return rows


def nfe_at_error(rows: Sequence[dict], method: str, error: float) -> float:
    """Backward NFE a method needs for `error`, interpolated log-log along its sweep
    (inf if the sweep never reaches it)."""
    pts = sorted(
        (r["rel_error"], r["nfe_backward"])
        for r in rows
        if r["method"] == method and np.isfinite(r["rel_error"]) and r["rel_error"] > 0
    )
    if not pts or error < pts[0][0]:
        return float("inf")
    if error >= pts[-1][0]:
        return float(min(n for _, n in pts))
    for (e0, n0), (e1, n1) in zip(pts[:-1], pts[1:], strict=True):
        if e0 <= error <= e1:
            if e1 == e0:
                return float(min(n0, n1))
            w = (math.log(error) - math.log(e0)) / (math.log(e1) - math.log(e0))
            return float(math.exp((1 - w) * math.log(n0) + w * math.log(n1)))
    return float("inf")


def evaluate_targets(acc: Sequence[dict], mem: Sequence[dict], wp: Sequence[dict]) -> list[list]:
    """The issue's targets, each [name, measured, threshold, PASS/FAIL], from the rows given
    (a target whose rows are missing is left out)."""
    get = {(r["problem"], r["method"]): r for r in acc}
    by = {(r["problem"], r["method"], r["steps"]): r for r in mem}
    targets: list[list] = []

    def target(name, value, threshold, ok):
        targets.append([name, _fmt(value), threshold, "PASS" if ok else "FAIL"])

    inf = float("inf")
    for (prob, method), r in get.items():
        if str(r.get("note", "")).startswith("failed"):
            target(f"{method} runs ({prob})", r["note"], "no failure", False)
    for (prob, method), r in get.items():
        if method == "reversible" and "error_vs_same_solve_backprop" in r:
            v = r["error_vs_same_solve_backprop"]
            target(f"reversible = same-solve backprop ({prob})", v, "<= 1e-10", v <= 1e-10)
    for prob in dict.fromkeys(r["problem"] for r in mem):
        steps = sorted({r["steps"] for r in mem if r["problem"] == prob})
        small, big = steps[0], steps[-1]
        rev, ckpt = by.get((prob, "reversible", big)), by.get((prob, "checkpointed", big))
        if rev and by.get((prob, "reversible", small)):
            ratio = rev["bytes"] / by[(prob, "reversible", small)]["bytes"]
            target(f"reversible memory {big} / {small} steps ({prob})", ratio, "<= 1.2",
                   ratio <= 1.2)  # fmt: skip
        if rev and ckpt:
            ratio = rev["bytes"] / ckpt["bytes"]
            target(f"reversible / checkpointed memory at {big} steps ({prob})", ratio,
                   "<= 0.1", ratio <= 0.1)  # fmt: skip
        rev0, ckpt0 = by.get((prob, "reversible", small)), by.get((prob, "checkpointed", small))
        if rev and ckpt and rev0 and ckpt0:
            # The step-dependent part alone (the fixed parameter and state buffers cancel).
            grow_rev, grow_ckpt = rev["bytes"] - rev0["bytes"], ckpt["bytes"] - ckpt0["bytes"]
            target(f"(info) memory growth {small} -> {big} steps, reversible vs checkpointed "
                   f"({prob})", f"{grow_rev / 1024:.1f} vs {grow_ckpt / 1024:.1f} KiB",
                   "reversible's << checkpointed's", grow_rev <= 0.1 * grow_ckpt)  # fmt: skip
        whole, ck = by.get((prob, "interpolating", big)), by.get((prob, "interpolating-ckpt", big))
        if whole and ck:
            ratio = ck["bytes"] / whole["bytes"]
            target(f"interpolating checkpointed / whole interpolant memory at {big} ({prob})",
                   ratio, "< 1", ratio < 1)  # fmt: skip
    for (prob, method), r in get.items():
        if method == "reversible" and "time_ratio" in r:
            v = r.get("time_ratio") or inf
            target(f"reversible time / checkpointed ({prob})", v, "<= 2", v <= 2)
            if r.get("time_ratio_same_solve"):
                v = r["time_ratio_same_solve"]
                target(f"(info) reversible time / checkpointed on the same reversible solve "
                       f"({prob})", v, "<= 2", v <= 2)  # fmt: skip
    for m in ("interpolating", "interpolating-ckpt", "quadrature", "gauss"):
        for prob in ("spiral", "cnode", "stiff"):
            if (prob, m) in get:
                v = get[(prob, m)].get("rel_error", inf)
                target(f"{m} error ({prob}, rtol 1e-8)", v, "<= 1e-5", v <= 1e-5)
    for prob in dict.fromkeys(r["problem"] for r in wp):
        rows = [r for r in wp if r["problem"] == prob]
        for baseline, label in WP_BASELINES.items():
            # Equal error: what the baseline reaches at rtol 1e-8 (or its tightest rtol).
            back = [r for r in rows if r["method"] == baseline]
            if not back:
                continue
            level = min(back, key=lambda r: abs(math.log10(r["rtol"]) + 8))["rel_error"]
            need_back = nfe_at_error(rows, baseline, level)
            for m in ("quadrature", "gauss"):
                need = nfe_at_error(rows, m, level)
                target(f"{m} backward NFE < {label} at equal error {level:.1e} ({prob})",
                       f"{need:.0f} vs {need_back:.0f}", "fewer", need < need_back)  # fmt: skip
    for prob in ("dissipative", "stiff"):
        bs = get.get((prob, "backsolve"))
        ip = get.get((prob, "interpolating"))
        if bs and ip:
            b, i = bs.get("rel_error", inf), ip.get("rel_error", inf)
            target(f"{prob}: backsolve fails, interpolating succeeds",
                   f"{_fmt(b)} vs {_fmt(i)}", "backsolve > 1e-2, interpolating <= 1e-5",
                   b > 1e-2 and i <= 1e-5)  # fmt: skip
    return targets


def _fmt(x, digits=2):
    if x is None:
        return ""
    if isinstance(x, float):
        if not np.isfinite(x):
            return str(x)
        return f"{x:.{digits}e}" if (x != 0 and (abs(x) < 1e-2 or abs(x) > 1e4)) else round(x, 3)
    return x


def _kib(row, key):
    return "" if row is None else round(row[key] / 1024, 1)


def _figure(report: Report, acc, mem, wp) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    probs = list(dict.fromkeys(r["problem"] for r in mem))
    fig, axes = plt.subplots(1, len(probs) + 2, figsize=(5.5 * (len(probs) + 2), 4.2))
    for ax, prob in zip(axes, probs, strict=False):
        for m in METHODS:
            pts = sorted((r["steps"], r["bytes"]) for r in mem if r["problem"] == prob
                         and r["method"] == m)  # fmt: skip
            if pts:
                ax.loglog(*zip(*pts, strict=True), marker="o", label=m)
        ax.set_xlabel("constant Tsit5 steps (= max_steps)")
        ax.set_ylabel("compile-time memory of the gradient (bytes)")
        ax.set_title(f"{prob}: memory against steps")
        ax.legend(fontsize=7)
    ax = axes[len(probs)]
    for m in WP_METHODS:
        pts = sorted((r["nfe_backward"], r["rel_error"]) for r in wp if r["method"] == m)
        if pts:
            ax.loglog(*zip(*pts, strict=True), marker="o", label=m)
    ax.set_xlabel("backward NFE")
    ax.set_ylabel("relative gradient error")
    ax.set_title("spiral: work-precision (rtol sweep)")
    ax.legend(fontsize=7)
    ax = axes[len(probs) + 1]
    for prob in dict.fromkeys(r["problem"] for r in acc):
        rows = [r for r in acc if r["problem"] == prob and r.get("nfe_backward")]
        xs = [max(r["nfe_backward"], 1) for r in rows]
        ys = [min(max(r["rel_error"], 1e-17), 1e3) for r in rows]
        ax.scatter(xs, ys, label=prob)
        for r, x, y in zip(rows, xs, ys, strict=True):
            ax.annotate(r["method"], (x, y), fontsize=6)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("backward NFE")
    ax.set_ylabel("relative gradient error (clipped to 1e3)")
    ax.set_title(f"all problems at rtol {RTOL:g}")
    ax.legend(fontsize=7)
    report.figure(fig, f"{NAME}.png", "memory against steps; work-precision; error against NFE")


def main(argv: Sequence[str] | None = None) -> Path:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=list(PROFILES), default="cpu")
    parser.add_argument("--out", default=None, help="output folder (default results/)")
    args = parser.parse_args(argv)
    p = PROFILES[args.profile]
    report = Report(
        NAME,
        "ODE gradient methods: error, memory, time, NFE",
        " ".join(["python -m experiments.ode_adjoints", *argv]),
        args.out,
    )
    probs = problems(p)
    acc = [
        row
        for problem in probs
        if problem.name in _ACCURACY
        for row in accuracy_rows(
            problem, p, _ACCURACY[problem.name], counts=problem.name in ("spiral", "lotka-volterra")
        )
    ]
    by_name = {pr.name: pr for pr in probs}
    small, big = p["cnode_steps"][0], p["cnode_steps"][-1]
    ends = [p["steps"][0], p["steps"][-1]]
    mem = [
        row
        for m in METHODS
        for row in memory_rows(
            by_name["spiral"], p["steps"] if m in _MEMORY_ALL_STEPS else ends, [m]
        )
    ] + [
        row
        for method, which in _CNODE_MEMORY.items()
        for row in memory_rows(
            by_name["cnode"], [small, big] if which == "all" else [big], [method]
        )
    ]
    # The rtol = 1e-8 points of the sweep are the spiral's accuracy rows, where it has them.
    spiral_ref = reference(by_name["spiral"])
    in_acc = [m for m in WP_METHODS if m in ACCURACY_METHODS]
    wp = work_precision_rows(
        by_name["spiral"], [r for r in p["wp_rtols"] if r != RTOL], spiral_ref, in_acc
    )
    wp += work_precision_rows(
        by_name["spiral"], p["wp_rtols"], spiral_ref, [m for m in WP_METHODS if m not in in_acc]
    )
    wp += [
        {**{k: r[k] for k in ("problem", "method", "rel_error", "nfe_backward")}, "rtol": RTOL}
        for r in acc
        if r["problem"] == "spiral" and r["method"] in WP_METHODS and r.get("nfe_backward")
    ]
    wp.sort(key=lambda r: (r["method"], -r["rtol"]))
    return write_report(report, args.profile, p, acc, mem, wp)


def write_report(report: Report, profile: str, p: dict, acc, mem, wp) -> Path:
    """The tables, figure and targets of the rows (separate from `main` for the tests)."""

    report.text(
        f"Profile `{profile}`, float64. Accuracy rows: adaptive steps at rtol = {RTOL:g}, "
        f"atol = {ATOL:g} (Tsit5; Reversible(Tsit5) stepping to the save times for the "
        "reversible method; Kvaerno5 on the stiff problem), error against the closed form "
        "(linear problems) or Dopri8 at rtol 1e-12 with checkpointed backprop. Time: median of "
        f"{p['repeats']} jitted gradient calls, as a ratio to CheckpointedBackprop (Tsit5) on "
        "the same problem in this run; for the reversible method also to checkpointed backprop "
        "through the same reversible solve. NFE: vector-field evaluations of one loss and of "
        "one value-and-grad (backward = recomputed evaluations + VJPs; a VJP also counts its "
        "own primal evaluation). `interpolating-ckpt`: `InterpolatingAdjoint(checkpoints=k)` "
        "with k = default_checkpoints(max_steps), as CheckpointedBackprop's default. "
        "Old methods: " + ", ".join(OLD) + "."
    )
    report.section("Error, time and NFE")
    columns = [
        "problem",
        "method",
        "rel. error",
        "vs same-solve backprop",
        "time / ckpt",
        "time / same-solve ckpt",
        "NFE fwd",
        "NFE bwd",
        "of which VJPs",
        "note",
    ]
    table = [
        [
            r["problem"],
            r["method"],
            _fmt(r.get("rel_error")),
            _fmt(r.get("error_vs_same_solve_backprop")),
            _fmt(r.get("time_ratio")),
            _fmt(r.get("time_ratio_same_solve")),
            r.get("nfe_forward", ""),
            r.get("nfe_backward", ""),
            r.get("nfe_backward_vjp", ""),
            r.get("note", ""),
        ]
        for r in acc
    ]
    report.table(columns, table, key="accuracy")
    for prob in dict.fromkeys(r["problem"] for r in mem):
        rows = [r for r in mem if r["problem"] == prob]
        steps = sorted({r["steps"] for r in rows})
        by = {(r["method"], r["steps"]): r for r in rows}
        methods = list(dict.fromkeys(r["method"] for r in rows))
        report.section(f"Compile-time memory of the gradient ({prob}, constant steps)")
        report.text(
            "Total plan in KiB (temp + arguments + outputs); `temp` is the plan without the "
            "fixed argument and output bytes (parameters, inputs, gradients: "
            f"{rows[0]['fixed'] / 1024:.1f} KiB here)."
        )
        report.table(
            ["method"]
            + [f"{n} (KiB)" for n in steps]
            + [f"temp {n} (KiB)" for n in (steps[0], steps[-1])],
            [
                [m]
                + [_kib(by.get((m, n)), "bytes") for n in steps]
                + [_kib(by.get((m, n)), "temp") for n in (steps[0], steps[-1])]
                for m in methods
            ],
            key=f"memory_{prob}",
        )
    report.section("Work-precision: backward NFE against gradient error (spiral)")
    report.table(
        ["method", "rtol", "rel. error", "NFE bwd"],
        [[r["method"], r["rtol"], _fmt(r["rel_error"]), r["nfe_backward"]] for r in wp],
        key="work_precision",
    )
    try:
        _figure(report, acc, mem, wp)
    except Exception as e:  # noqa: BLE001 - the tables and targets are written regardless
        report.text(f"(figure failed: {type(e).__name__}: {e})")
    report.section("Targets")
    report.table(
        ["target", "measured", "threshold", "verdict"],
        evaluate_targets(acc, mem, wp),
        key="targets",
    )
    report.data["raw_accuracy"] = acc
    report.data["raw_memory"] = mem
    report.data["raw_work_precision"] = wp
    return report.write()


if __name__ == "__main__":
    print(main())
