"""SSM gradient time vs context length, each method as a ratio to backprop in the same run.

    python -m experiments.ssm_time [--profile quick|cpu] [--out DIR] [--repeats N]

For each context the gradient functions of all methods are compiled first (two at a time),
then timed in interleaved rounds (one call of each method per round, after one warm-up
round), so that a change of the shared machine's load hits every method alike; the time of
a method is the median over rounds, and its ratio is to backprop's median at the same T.
The paper's literal O(T²) double sum (`adjoint_paper`, form="literal") runs at small T.
"""

from __future__ import annotations

import concurrent.futures as cf
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from adjoint_lab import ssm
from adjoint_lab.core import time_fn
from experiments.report import Report
from experiments.ssm_memory import (
    ADJOINT,
    BACKPROP,
    CHECKPOINTED,
    PAPER,
    REMAT,
    Variant,
    command,
    common_parser,
    concrete_weights,
    load_note,
    random_tokens,
)

NAME = "ssm_time"
LITERAL = Variant("adjoint_paper", form="literal")


@dataclass(frozen=True)
class Profile:
    preset: str
    groups: tuple[tuple[tuple[int, ...], tuple[Variant, ...]], ...]  # (contexts, methods)
    repeats: int
    target_context: int


_CORE = (BACKPROP, REMAT, ADJOINT, CHECKPOINTED, PAPER)
_TRUNC = tuple(Variant("truncated", w) for w in (16, 64, 256))

PROFILES = {
    "quick": Profile(
        "ssm-tiny",
        (((64,), (BACKPROP, ADJOINT, CHECKPOINTED)), ((16,), (BACKPROP, LITERAL))),
        2,
        64,
    ),
    "cpu": Profile(
        "ssm-ref",
        (
            ((2**10, 2**12, 2**14, 2**16), _CORE),
            ((2**12, 2**14), _TRUNC),
            ((2**7, 2**8, 2**9), (BACKPROP, PAPER, LITERAL)),
        ),
        3,
        2**14,
    ),
}


def _time_context(
    config: ssm.SSMConfig, weights: Any, T: int, variants: Sequence[Variant], repeats: int
) -> dict[str, dict[str, Any]]:
    tokens = random_tokens(config, 1, T)

    def compile_one(v: Variant) -> tuple[Any, float]:
        start = time.perf_counter()
        fn = ssm.gradient_function(config, v.options(), T)
        return fn.lower(weights, tokens).compile(), time.perf_counter() - start

    # XLA compiles on one thread and releases the GIL: two threads, two cores.
    with cf.ThreadPoolExecutor(2) as pool:
        compiled = dict(zip(variants, pool.map(compile_one, variants), strict=True))
    times: dict[Variant, list[float]] = {v: [] for v in variants}
    for round_ in range(repeats + 1):  # round 0 is the warm-up
        for v in variants:
            t = time_fn(compiled[v][0], weights, tokens, warmup=0, repeats=1).median
            if round_:
                times[v].append(t)
    return {
        v.label: {
            "median_s": float(np.median(times[v])),
            "times_s": times[v],
            "compile_s": compiled[v][1],
        }
        for v in variants
    }


def main(argv: Sequence[str] | None = None) -> Path:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = common_parser(__doc__.splitlines()[0], PROFILES)
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile]
    repeats = args.repeats or profile.repeats
    config = ssm.preset(profile.preset)
    weights = concrete_weights(config)
    report = Report(NAME, "SSM gradient time vs context length", command(NAME, argv), out=args.out)
    started = time.time()
    load_before = load_note()

    by_T: dict[int, dict[str, dict[str, Any]]] = {}
    for contexts, variants in profile.groups:
        for T in contexts:
            wanted = [v for v in variants if v.label not in by_T.get(T, {})]
            if BACKPROP not in wanted and BACKPROP.label not in by_T.get(T, {}):
                wanted.insert(0, BACKPROP)
            result = _time_context(config, weights, T, wanted, repeats)
            by_T.setdefault(T, {}).update(result)
            print(
                f"[{time.time() - started:5.0f}s] T={T}: "
                + ", ".join(f"{k} {v['median_s']:.3f}s" for k, v in result.items()),
                flush=True,
            )
    labels = []
    for _, variants in profile.groups:
        labels += [v.label for v in variants if v.label not in labels]

    records, rows = [], []
    for T in sorted(by_T):
        bp = by_T[T]["backprop"]["median_s"]
        for label in labels:
            if label not in by_T[T]:
                continue
            r = by_T[T][label]
            records.append({"T": T, "method": label, "ratio": r["median_s"] / bp, **r})
        rows.append(
            [T, f"{bp * 1e3:.1f}"]
            + [
                f"{by_T[T][m]['median_s'] / bp:.2f}" if m in by_T[T] else "—"
                for m in labels
                if m != "backprop"
            ]
        )

    report.text(
        f"{profile.preset} ({ssm.count_parameters(config):,} parameters), batch 1, float32, "
        f"CPU; each cell: median over {repeats} interleaved rounds after a warm-up round, as "
        f"a ratio to backprop's median at the same T (backprop's absolute time in ms in the "
        f"second column). {load_before} at the start and {load_note()} at the end: other "
        f"jobs shared the 2 cores, so absolute times are inflated and ratios carry roughly "
        f"±20 % noise."
    )
    report.section("Time ÷ backprop")
    others = [m for m in labels if m != "backprop"]
    report.table(["T", "backprop ms", *others], rows, key="ratios")

    report.section("Targets")
    tT = profile.target_context
    at = by_T.get(tT, {})
    target_rows = []
    if "adjoint" in at:
        r = at["adjoint"]["median_s"] / at["backprop"]["median_s"]
        verdict = "PASS" if r <= 1.5 else "FAIL"
        target_rows.append([f"adjoint ÷ backprop at T = {tT:,}", f"{r:.3g}", "≤ 1.5", verdict])
    if "checkpointed" in at and "remat" in at:
        r = at["checkpointed"]["median_s"] / at["remat"]["median_s"]
        verdict = "PASS" if r <= 1.0 else "FAIL"
        target_rows.append([f"checkpointed ÷ remat at T = {tT:,}", f"{r:.3g}", "≤ 1", verdict])
    report.table(["target", "measured", "threshold", "verdict"], target_rows, key="targets")

    lit = sorted((T, v[LITERAL.label]["median_s"]) for T, v in by_T.items() if LITERAL.label in v)
    if len(lit) >= 2:
        (t0, s0), (t1, s1) = lit[0], lit[-1]
        slope = np.log(s1 / s0) / np.log(t1 / t0)
        report.text(
            f"The literal double sum grows as T^{slope:.2f} between T = {t0} and {t1} "
            f"({s0 * 1e3:.1f} → {s1 * 1e3:.1f} ms; O(T²) work once overheads are amortised), "
            "against O(T) for the aggregated form of the same estimator (`adjoint_paper`)."
        )

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4))
    for label in labels:
        pts = sorted((r["T"], r["median_s"], r["ratio"]) for r in records if r["method"] == label)
        if not pts:
            continue
        T_, s_, q_ = zip(*pts, strict=True)
        style = "--" if "truncated" in label else ("-." if "literal" in label else "-")
        ax0.loglog(T_, s_, "o" + style, ms=3, label=label)
        ax1.semilogx(T_, q_, "o" + style, ms=3, label=label)
    ax0.set_xlabel("context T (tokens)")
    ax0.set_ylabel("gradient time (s), median")
    ax1.set_xlabel("context T (tokens)")
    ax1.set_ylabel("time ÷ backprop (same T)")
    ax1.set_yscale("log")
    ax1.axhline(1.0, color="k", lw=0.8)
    for ax in (ax0, ax1):
        ax.grid(True, which="major", alpha=0.3)
    ax0.legend(fontsize=7)
    fig.suptitle(f"{profile.preset}, batch 1, float32, 2 shared CPU cores", fontsize=10)
    fig.tight_layout()
    report.figure(fig, f"{NAME}.png", "gradient time vs context and ratio to backprop")
    report.data.update({"profile": args.profile, "records": records, "repeats": repeats})
    return report.write()


if __name__ == "__main__":
    from experiments.ssm_time import main as _main

    print(_main())
