"""Shared pieces of the C-NODE experiments: profiles, the solver, mean ± std, reference numbers.

The reference numbers are copied from the paper notes (`shared/papers/cnode.md`), each with
its source mark: [L] the authors' own run logs (final epoch, mean ± std over 5 runs; which of
them became the paper's tables is unconfirmed), [M] the ANODE paper from memory (unverified).
The paper's own tables could not be read.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import diffrax
import numpy as np
import scipy.stats

from adjoint_lab.cnode import Integrator
from adjoint_lab.core import CheckpointedBackprop

# Each baseline next to its C-version (NODE and C-NODE first: the headline comparison).
ALL_MODELS = [
    "node",
    "cnode",
    "anode",
    "canode",
    "ilnode",
    "cilnode",
    "ilanode",
    "cilanode",
    "sonode",
]

# Test accuracy (%) of the authors' logged runs [L], final epoch, mean ± std over 5 runs.
AUTHORS_LOGS: dict[str, dict[str, tuple[float, float]]] = {
    "mnist": {"node": (97.09, 0.05), "cnode": (96.93, 0.23), "anode": (98.50, 0.03)},
    "svhn": {"node": (82.42, 0.10), "cnode": (86.28, 0.19), "anode": (86.03, 0.11)},
    "cifar10": {"node": (59.49, 0.82), "cnode": (61.97, 0.31), "anode": (61.44, 0.40)},
}
# ANODE paper (Dupont et al. 2019) at ~84 K (MNIST) / ~172 K params [M, unverified].
ANODE_PAPER: dict[str, dict[str, tuple[float, float]]] = {
    "mnist": {"node": (96.4, 0.5), "anode": (98.2, 0.1)},
    "cifar10": {"node": (53.7, 0.2), "anode": (60.6, 0.4)},
    "svhn": {"node": (81.0, 0.6), "anode": (83.5, 0.5)},
}
# The authors' logged k-ablation on MNIST [L] (k -> final test accuracy mean, std; 4 runs).
AUTHORS_K_ABLATION_MNIST = {
    1: (87.02, 4.51),
    2: (90.16, 5.33),
    4: (95.16, 2.88),
    8: (96.58, 0.44),
    16: (96.78, 0.45),
    32: (97.06, 0.55),
    64: (97.21, 0.60),
    128: (98.02, 0.11),
    256: (98.10, 0.22),
    512: (92.06, 9.96),
    1024: (92.67, 6.29),
}
# The authors' logged parameter sweep on MNIST [L] (params -> final test accuracy, 40 epochs).
AUTHORS_PARAM_SWEEP_MNIST = {
    "cnode": {4535: 93.41, 29519: 92.28, 32099: 96.39, 57192: 96.30, 82285: 96.38, 118525: 96.84},
    "node": {
        186: 78.07,
        1143: 81.56,
        4803: 94.28,
        30323: 93.30,
        32311: 94.83,
        58931: 95.58,
        83763: 95.78,
        119236: 95.38,
    },
}


def dopri5(max_steps: int = 64, tol: float = 1e-3) -> Integrator:
    """Dopri5 at the authors' adaptive tolerance, discretise-then-optimise gradients."""
    return Integrator(
        solver=diffrax.Dopri5(),
        controller=diffrax.PIDController(rtol=tol, atol=tol),
        dt0=0.1,
        gradient=CheckpointedBackprop(max_steps=max_steps),
    )


def euler(steps: int) -> Integrator:
    """`steps` constant Euler steps over [0, 1] (one step: the authors' non-adaptive runs)."""
    return Integrator(
        solver=diffrax.Euler(),
        controller=diffrax.ConstantStepSize(),
        dt0=1.0 / steps,
        gradient=CheckpointedBackprop(max_steps=steps),
    )


def mean_std(values: Sequence[float], scale: float = 100.0, digits: int = 2) -> str:
    """`mean ± std` (sample std) of `values * scale`; one value has no std."""
    v = np.asarray(values, float) * scale
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def paired(
    treated: dict[int, float], baseline: dict[int, float], scale: float = 100.0
) -> dict[str, object]:
    """The paired comparison of two models trained on the same seeds: treated - baseline.

    A seed fixes the data order (and the split), so the per-seed differences remove the
    seed's share of the spread; the comparison is their mean against their standard error.

    **Arguments:**

    - `treated`, `baseline`: `{seed: value}` (e.g. test accuracy); only common seeds count.
    - `scale`: multiplies the values (100: accuracies in %).

    **Returns:**

    `{"seeds", "differences", "mean", "std", "n", "t", "p"}`: the per-seed differences,
    their mean and sample std, the paired t statistic mean / (std / sqrt(n)) and its
    two-sided p-value on n - 1 degrees of freedom (t and p are None for fewer than two
    seeds or a zero std).
    """
    seeds = sorted(set(treated) & set(baseline))
    diff = np.array([treated[s] - baseline[s] for s in seeds], float) * scale
    n = len(seeds)
    std = float(diff.std(ddof=1)) if n > 1 else None
    t = float(diff.mean() / (std / np.sqrt(n))) if std else None
    return {
        "seeds": seeds,
        "differences": diff.tolist(),
        "mean": float(diff.mean()) if n else None,
        "std": std,
        "n": n,
        "t": t,
        "p": None if t is None else float(2 * scipy.stats.t.sf(abs(t), n - 1)),
    }


def describe_paired(comparison: dict[str, object], what: str) -> str:
    """One line for a report: `what`: mean ± std per seed, t over n seeds."""
    n, mean, std, t, p = (comparison[k] for k in ("n", "mean", "std", "t", "p"))
    if not n:
        return f"{what}: no common seeds."
    spread = "" if std is None else f" ± {std:.2f}"
    stat = "t undefined" if t is None else f"paired t = {t:.2f}, two-sided p = {p:.2g}"
    return f"{what}: {mean:+.2f}{spread} points per seed ({stat}, {n} seeds)"


def reference(pair: tuple[float, float] | None) -> str:
    return "—" if pair is None else f"{pair[0]:.2f} ± {pair[1]:.2f}"


def base_parser(description: str, profiles: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--profile", choices=list(profiles), default="cpu")
    parser.add_argument("--seeds", type=int, default=None, help="override the profile's seeds")
    parser.add_argument("--out", default=None, help="output folder (default results/)")
    return parser


def command(module: str, argv: Sequence[str]) -> str:
    return " ".join(["python -m", f"experiments.{module}", *argv])
