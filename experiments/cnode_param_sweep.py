"""Parameter-count sweep on digits: C-NODE and NODE test accuracy against parameters.

    python -m experiments.cnode_param_sweep [--profile quick|cpu|gpu] [--seeds N] [--out DIR]

Widths matched to each budget (`adjoint_lab.cnode.matched_width`), beside the authors'
logged MNIST sweep [L] (40 epochs).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np

from adjoint_lab.cnode import runs
from adjoint_lab.cnode.runs import TrainSettings
from experiments import cnode_common as common
from experiments.report import Report

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

NAME = "cnode_param_sweep"
PROFILES = {
    "quick": {"budgets": [800, 2000], "seeds": 1, "train": 256, "epochs": 1},
    "cpu": {"budgets": [2000, 5000, 10_000, 20_000], "seeds": 3, "train": None, "epochs": 5},
    "gpu": {
        "budgets": [2000, 5000, 10_000, 20_000, 50_000],
        "seeds": 5,
        "train": None,
        "epochs": 30,
    },
}
MODELS = {"cnode": "C-NODE", "node": "NODE"}


def paired_by_budget(raw: list[dict], budgets: list[int]) -> list[dict]:
    """C-NODE − NODE test accuracy per seed at each budget (`cnode_common.paired`)."""
    out = []
    for budget in budgets:
        by = {
            r["model"]: dict(zip(r["seeds"], r["test"], strict=True))
            for r in raw
            if r["budget"] == budget
        }
        if "cnode" in by and "node" in by:
            out.append({"budget": budget, **common.paired(by["cnode"], by["node"])})
    return out


def _round(value: float | None) -> float | str:
    return "—" if value is None else float(f"{value:.3g}")


def main(argv: Sequence[str] | None = None) -> Path:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = common.base_parser(__doc__.splitlines()[0], PROFILES).parse_args(argv)
    profile = PROFILES[args.profile]
    seeds = list(range(args.seeds or profile["seeds"]))
    settings = TrainSettings(epochs=profile["epochs"], lr=1e-2, warmup_steps=10)
    data = runs.digits_data()
    if profile["train"]:
        data = data._replace(train=runs.Split(*(a[: profile["train"]] for a in data.train)))
    report = Report(
        NAME,
        "C-NODE vs NODE: accuracy against parameters (digits)",
        common.command(NAME, argv),
        args.out,
    )
    rows, raw = [], []
    for name in MODELS:
        for budget in profile["budgets"]:
            spec = runs.digits_spec(name, common.dopri5(), param_budget=budget)
            results = runs.train_classifier(spec, data, seeds, settings)
            tests = [r.test_accuracy for r in results]
            params = runs.parameter_count(spec)
            rows.append([MODELS[name], spec.kwargs["width"], params, common.mean_std(tests)])
            raw.append(
                {
                    "model": name,
                    "budget": budget,
                    "params": params,
                    "seeds": [r.seed for r in results],
                    "test": tests,
                }
            )
            print(rows[-1], flush=True)
    report.text(
        f"Profile `{args.profile}`: {len(seeds)} seeds, {settings.epochs} epochs, Dopri5 1e-3; "
        "final-epoch test accuracy."
    )
    report.table(["model", "width", "params", "test acc %"], rows, key="rows")
    report.data["runs"] = raw
    comparisons = paired_by_budget(raw, profile["budgets"])
    report.text(
        "Paired by seed (same data order): C-NODE − NODE test accuracy per seed, in points; "
        "t = mean / (std / √n) and its two-sided p on n − 1 degrees of freedom."
    )
    report.table(
        ["budget", "C-NODE − NODE (mean)", "std", "paired t", "p", "seeds"],
        [
            [c["budget"], *(_round(c[k]) for k in ("mean", "std", "t", "p")), c["n"]]
            for c in comparisons
        ],
        key="paired_rows",
    )
    report.data["paired"] = comparisons
    fig, (ours, theirs) = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, label in MODELS.items():
        mine = [r for r in raw if r["model"] == name]
        means = [100 * np.mean(r["test"]) for r in mine]
        stds = [100 * np.std(r["test"], ddof=1) if len(r["test"]) > 1 else 0 for r in mine]
        ours.errorbar([r["params"] for r in mine], means, stds, marker="o", capsize=3, label=label)
        ref = common.AUTHORS_PARAM_SWEEP_MNIST[name]
        theirs.plot(list(ref), list(ref.values()), marker="o", label=label)
    ours.set(xscale="log", xlabel="parameters", ylabel="test accuracy %", title="ours: digits")
    theirs.set(xscale="log", xlabel="parameters", title="authors' logs [L]: MNIST, 40 epochs")
    ours.legend()
    theirs.legend()
    fig.tight_layout()
    report.figure(fig, f"{NAME}.png", "test accuracy against parameters")
    plt.close(fig)
    return report.write()


if __name__ == "__main__":
    print(main())
