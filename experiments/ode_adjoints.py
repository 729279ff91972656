"""Gradient methods for ODE solves compared: error, memory, time and NFE (float64).

    python -m experiments.ode_adjoints [--profile quick|cpu|gpu] [--out DIR]

Problems: the spiral neural ODE of the default experiment (an MLP field from
`adjoint_lab.tasks.node_spiral`, parameters inside the field), a long-horizon Lotka-Volterra
system (parameters in `args`), a dissipative linear system over a long horizon (eigenvalues -1
and -50, Tsit5) and a stiff one (eigenvalues -1 and -1000, Kvaerno5), both with closed-form
gradients through `expm`. For every method: the gradient's relative error against
a float64 reference (closed form, or Dopri8 at rtol 1e-13 with checkpointed backprop), NFE
forward and backward (`core.count_evaluations`), time as a ratio to `CheckpointedBackprop` in
the same run, and the compile-time memory of the gradient (`core.compiled_memory`) as constant
steps grow. The reversible method is also compared with backprop through the same reversible
discrete solve, which it must equal to rounding.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from adjoint_lab.core import (
    BacksolveAdjoint,
    CheckpointedBackprop,
    GaussAdjoint,
    InterpolatingAdjoint,
    QuadratureAdjoint,
    Reversible,
    ReversibleAdjoint,
    compiled_memory,
    count_evaluations,
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
        "stiff": True,
        "steps": [64, 256],
        "repeats": 1,
        "max_steps": 2048,
    },
    "cpu": {
        "width": 64,
        "spiral_t1": 10.0,
        "lotka_periods": 100,
        "stiff": True,
        "steps": [64, 256, 1024, 4096, 16384],
        "repeats": 3,
        "max_steps": 16384,
    },
    "gpu": {
        "width": 128,
        "spiral_t1": 10.0,
        "lotka_periods": 100,
        "stiff": True,
        "steps": [64, 256, 1024, 4096, 16384],
        "repeats": 10,
        "max_steps": 16384,
    },
}
RTOL, ATOL = 1e-8, 1e-10
METHODS = ["checkpointed", "backsolve", "reversible", "interpolating", "quadrature", "gauss"]
LOTKA_PERIOD = 3.6  # close to the period of the orbit through (1, 1) at these parameters


def _gradient(method: str, max_steps: int):
    return {
        "checkpointed": CheckpointedBackprop(max_steps=max_steps),
        "backsolve": BacksolveAdjoint(max_steps=max_steps),
        "reversible": ReversibleAdjoint(max_steps=max_steps),
        "interpolating": InterpolatingAdjoint(max_steps=max_steps),
        "quadrature": QuadratureAdjoint(max_steps=max_steps),
        "gauss": GaussAdjoint(max_steps=max_steps),
    }[method]


class Problem(eqx.Module):
    """loss(field, args, y0) through `solve`; gradients with respect to all three."""

    name: str = eqx.field(static=True)
    field: eqx.Module
    args: jax.Array | None
    y0: jax.Array
    t1: float = eqx.field(static=True)
    ts: jax.Array
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
        return jnp.mean(jnp.sum(sol.ys**2, axis=-1))


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


def problems(p: dict) -> list[Problem]:
    field = MLPField(2, VectorFieldConfig(width=p["width"], depth=2), key=jax.random.PRNGKey(0))
    field = jax.tree.map(lambda x: x.astype(jnp.float64) if eqx.is_inexact_array(x) else x, field)
    t_spiral = p["spiral_t1"]
    t_lotka = LOTKA_PERIOD * p["lotka_periods"]
    out = [
        Problem(
            "spiral",
            field,
            None,
            jnp.array([2.0, 0.0]),
            t_spiral,
            jnp.linspace(0.0, t_spiral, 11)[1:],
        ),
        Problem(
            "lotka-volterra",
            Lotka(),
            jnp.array([1.5, 1.0, 3.0, 1.0]),
            jnp.array([1.0, 1.0]),
            t_lotka,
            jnp.linspace(0.0, t_lotka, 21)[1:],
        ),
    ]
    # Dissipative, explicit: re-solving y backwards (backsolve) amplifies errors by e^(50 t).
    out.append(
        Problem(
            "dissipative",
            Linear(),
            DISSIPATIVE_A,
            jnp.array([1.0, 0.5]),
            10.0,
            jnp.linspace(0.0, 10.0, 5)[1:],
            linear=True,
        )
    )
    if p["stiff"]:
        out.append(
            Problem(
                "stiff",
                Linear(),
                STIFF_A,
                jnp.array([1.0, 0.5]),
                2.0,
                jnp.linspace(0.0, 2.0, 5)[1:],
                implicit=True,
                linear=True,
            )
        )
    return out


def _solver_for(problem: Problem, method: str, ts):
    """(solver, controller) for a method on a problem at rtol = 1e-8."""
    pid = diffrax.PIDController(rtol=RTOL, atol=ATOL)
    if problem.implicit:
        return diffrax.Kvaerno5(), pid
    if method == "reversible":
        # Outputs between steps are linear interpolations: step to the saved times.
        return Reversible(diffrax.Tsit5()), diffrax.ClipStepSizeController(pid, step_ts=ts)
    return diffrax.Tsit5(), pid


def _grad_fn(problem: Problem, **kw):
    return eqx.filter_jit(
        lambda field, args, y0: eqx.filter_grad(lambda fay: problem.loss(*fay, **kw))(
            (field, args, y0)
        )
    )


def reference(problem: Problem, max_steps: int):
    if problem.linear:

        def exact(field, a, y0):
            ys = jax.vmap(lambda t: jax.scipy.linalg.expm(a * t) @ y0)(problem.ts)
            return jnp.mean(jnp.sum(ys**2, axis=-1))

        return eqx.filter_grad(lambda fay: exact(*fay))((problem.field, problem.args, problem.y0))
    fn = _grad_fn(
        problem,
        solver=diffrax.Dopri8(),
        controller=diffrax.PIDController(rtol=1e-13, atol=1e-15),
        dt0=None,
        gradient=CheckpointedBackprop(max_steps=8 * max_steps),
    )
    return fn(problem.field, problem.args, problem.y0)


def _error(grads, ref) -> float:
    leaves = lambda t: [x for x in jax.tree.leaves(t) if eqx.is_inexact_array(x)]  # noqa: E731
    return relative_error(leaves(grads), leaves(ref))


def accuracy_rows(problem: Problem, p: dict) -> list[dict]:
    ref = reference(problem, p["max_steps"])
    rows = []
    base_time = None
    for method in METHODS:
        if problem.implicit and method == "reversible":
            rows.append({"problem": problem.name, "method": method, "note": "explicit only"})
            continue
        solver, controller = _solver_for(problem, method, problem.ts)
        kw = dict(
            solver=solver,
            controller=controller,
            dt0=None,
            gradient=_gradient(method, p["max_steps"]),
        )
        fn = _grad_fn(problem, **kw)
        try:
            grads = fn(problem.field, problem.args, problem.y0)
            error = _error(grads, ref)
        except Exception as e:  # noqa: BLE001 - a failed backward solve is a result here
            rows.append(
                {"problem": problem.name, "method": method, "note": f"failed: {type(e).__name__}"}
            )
            print(problem.name, method, "failed", str(e)[:200], flush=True)
            continue
        if not np.isfinite(error):
            error = float("inf")
        timing = time_fn(fn, problem.field, problem.args, problem.y0, repeats=p["repeats"])
        if method == "checkpointed":
            base_time = timing.median
        if problem.implicit:
            # `count_evaluations` wraps the field in a custom VJP, which the Newton solves of
            # an implicit solver cannot differentiate forwards (jvp): no counts there.
            count = None
        else:
            count = count_evaluations(
                lambda f, a, y0, kw=kw: problem.loss(f, a, y0, **kw),
                problem.field,
                problem.args,
                problem.y0,
            )
        row = {
            "problem": problem.name,
            "method": method,
            "rel_error": error,
            "time_s": timing.median,
            "time_ratio": timing.median / base_time if base_time else None,
            "nfe_forward": count.forward if count else None,
            "nfe_backward": count.backward if count else None,
            "nfe_backward_vjp": count.backward_vjp if count else None,
            "note": "" if count else "implicit: NFE not counted",
        }
        if method == "reversible":
            same = _grad_fn(
                problem, **{**kw, "gradient": CheckpointedBackprop(max_steps=p["max_steps"])}
            )(problem.field, problem.args, problem.y0)
            row["error_vs_same_solve_backprop"] = _error(grads, same)
        print(row, flush=True)
        rows.append(row)
    return rows


def memory_rows(problem: Problem, p: dict) -> list[dict]:
    """Compile-time memory of the gradient with n constant steps of Tsit5 (Reversible(Tsit5)
    for the reversible method), max_steps = n."""
    rows = []
    for n in p["steps"]:
        for method in METHODS:
            solver = Reversible(diffrax.Tsit5()) if method == "reversible" else diffrax.Tsit5()
            kw = dict(
                solver=solver, controller=None, dt0=problem.t1 / n, gradient=_gradient(method, n)
            )
            params, static = eqx.partition(problem.field, eqx.is_inexact_array)

            def grad(params, y0, kw=kw, static=static):
                def loss(p_, y):
                    return problem.loss(eqx.combine(p_, static), None, y, **kw)

                return jax.grad(loss, argnums=(0, 1))(params, y0)

            mem = compiled_memory(grad, eqx.filter(problem.field, eqx.is_inexact_array), problem.y0)
            rows.append({"steps": n, "method": method, "bytes": mem.total})
            print(n, method, mem.total, flush=True)
    return rows


def _fmt(x, digits=2):
    if x is None:
        return ""
    if isinstance(x, float):
        return f"{x:.{digits}e}" if (x != 0 and (abs(x) < 1e-2 or abs(x) > 1e4)) else round(x, 3)
    return x


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
    acc = [row for problem in probs for row in accuracy_rows(problem, p)]
    mem = memory_rows(probs[0], p)

    report.text(
        f"Profile `{args.profile}`, float64. Accuracy rows: adaptive steps at rtol = {RTOL:g}, "
        f"atol = {ATOL:g} (Tsit5; Reversible(Tsit5) stepping to the save times for the "
        "reversible method; Kvaerno5 on the stiff problem), error against the closed form "
        "(linear problems) or Dopri8 at rtol 1e-13 with checkpointed backprop. Time: median of "
        f"{p['repeats']} jitted gradient calls, as a ratio to CheckpointedBackprop on the same "
        "problem in this run. NFE: vector-field evaluations of one loss and of one "
        "value-and-grad (backward = recomputed evaluations + VJPs)."
    )
    report.section("Error, time and NFE")
    columns = [
        "problem",
        "method",
        "rel. error",
        "vs same-solve backprop",
        "time / ckpt",
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
            r.get("nfe_forward", ""),
            r.get("nfe_backward", ""),
            r.get("nfe_backward_vjp", ""),
            r.get("note", ""),
        ]
        for r in acc
    ]
    report.table(columns, table, key="accuracy")
    report.section("Compile-time memory of the gradient (spiral, constant steps)")
    by = {(r["method"], r["steps"]): r["bytes"] for r in mem}
    steps = p["steps"]
    report.table(
        ["method"] + [f"{n} steps (KiB)" for n in steps],
        [[m] + [round(by[(m, n)] / 1024, 1) for n in steps] for m in METHODS],
        key="memory",
    )

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for m in METHODS:
        axes[0].loglog(steps, [by[(m, n)] / 1024 for n in steps], marker="o", label=m)
    axes[0].set_xlabel("steps")
    axes[0].set_ylabel("compiled memory of the gradient (KiB)")
    axes[0].set_title("spiral, constant Tsit5 steps")
    axes[0].legend()
    for prob in probs:
        rows = [r for r in acc if r["problem"] == prob.name and r.get("nfe_backward")]
        axes[1].scatter(
            [max(r["nfe_backward"], 1) for r in rows],
            [max(r["rel_error"], 1e-17) for r in rows],
            label=prob.name,
        )
        for r in rows:
            axes[1].annotate(
                r["method"], (max(r["nfe_backward"], 1), max(r["rel_error"], 1e-17)), fontsize=7
            )
    axes[1].set_xscale("log")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("backward NFE")
    axes[1].set_ylabel("relative gradient error")
    axes[1].set_title(f"error vs backward cost, rtol {RTOL:g}")
    axes[1].legend()
    report.figure(fig, f"{NAME}.png", "memory against steps; error against backward NFE")

    report.section("Targets")
    get = {(r["problem"], r["method"]): r for r in acc}
    targets = []

    def target(name, value, threshold, ok):
        targets.append([name, _fmt(value), threshold, "PASS" if ok else "FAIL"])

    for prob in ("spiral", "lotka-volterra"):
        r = get.get((prob, "reversible"), {})
        v = r.get("error_vs_same_solve_backprop", float("inf"))
        target(f"reversible = same-solve backprop ({prob})", v, "<= 1e-10", v <= 1e-10)
    big, small = max(steps), min(steps)
    ratio = by[("reversible", big)] / by[("reversible", small)]
    target(f"reversible memory {big} / {small} steps", ratio, "<= 1.2", ratio <= 1.2)
    ratio = by[("reversible", big)] / by[("checkpointed", big)]
    target(f"reversible / checkpointed memory at {big} steps", ratio, "<= 0.1", ratio <= 0.1)
    for prob in ("spiral", "lotka-volterra"):
        v = get.get((prob, "reversible"), {}).get("time_ratio") or float("inf")
        target(f"reversible time / checkpointed ({prob})", v, "<= 2", v <= 2)
    for m in ("interpolating", "quadrature", "gauss"):
        v = get.get(("spiral", m), {}).get("rel_error", float("inf"))
        target(f"{m} error (spiral, rtol 1e-8)", v, "<= 1e-5", v <= 1e-5)
    back = get.get(("spiral", "backsolve"), {})
    for m in ("quadrature", "gauss"):
        r = get.get(("spiral", m), {})
        v = r.get("nfe_backward", float("inf"))
        ok = v < back.get("nfe_backward", 0) and r.get("rel_error", 1) <= 10 * back.get(
            "rel_error", 0
        )
        target(
            f"{m} backward NFE < backsolve's at comparable error (spiral)",
            f"{v} vs {back.get('nfe_backward')}",
            "fewer, error within 10x",
            ok,
        )
    if p["stiff"]:
        bs = get.get(("stiff", "backsolve"), {}).get("rel_error", float("inf"))
        ip = get.get(("stiff", "interpolating"), {}).get("rel_error", float("inf"))
        target(
            "stiff: backsolve fails, interpolating succeeds",
            f"{_fmt(bs)} vs {_fmt(ip)}",
            "backsolve > 1e-2, interpolating <= 1e-5",
            bs > 1e-2 and ip <= 1e-5,
        )
    report.table(["target", "measured", "threshold", "verdict"], targets, key="targets")
    report.data["raw_accuracy"] = acc
    report.data["raw_memory"] = mem
    return report.write()


if __name__ == "__main__":
    print(main())
