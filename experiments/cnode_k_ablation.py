"""C-NODE k-ablation on digits: test accuracy against the number k of characteristic directions.

    python -m experiments.cnode_k_ablation [--profile quick|cpu|gpu] [--seeds N] [--out DIR]

Every k at the same parameter budget (the width of the k Jacobian blocks shrinks as k grows),
beside the authors' logged MNIST k-ablation [L] (one wide block with n·k outputs, 100 epochs).
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

NAME = "cnode_k_ablation"
PROFILES = {
    "quick": {"ks": [1, 2], "seeds": 1, "budget": 1500, "train": 256, "epochs": 1},
    "cpu": {"ks": [1, 2, 4, 8], "seeds": 3, "budget": 10_000, "train": None, "epochs": 5},
    "gpu": {"ks": [1, 2, 4, 8, 16, 32], "seeds": 5, "budget": 10_000, "train": None, "epochs": 30},
}


def describe(comparison: dict) -> str:
    return common.describe_paired(comparison, f"k = {comparison['k']}")


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
        NAME, "C-NODE: accuracy against k (digits)", common.command(NAME, argv), args.out
    )
    rows, raw = [], []
    for k in profile["ks"]:
        spec = runs.digits_spec("cnode", common.dopri5(), param_budget=profile["budget"], k=k)
        results = runs.train_classifier(spec, data, seeds, settings)
        tests = [r.test_accuracy for r in results]
        params = runs.parameter_count(spec)
        rows.append([k, spec.kwargs["width"], params, common.mean_std(tests)])
        raw.append(
            {
                "k": k,
                "width": spec.kwargs["width"],
                "params": params,
                "seeds": [r.seed for r in results],
                "test": tests,
            }
        )
        print(rows[-1], flush=True)
    report.text(
        f"Profile `{args.profile}`: {len(seeds)} seeds, ~{profile['budget']:,} parameters for "
        f"every k, {settings.epochs} epochs, Dopri5 1e-3; final-epoch test accuracy."
    )
    report.table(["k", "block width", "params", "test acc %"], rows, key="rows")
    report.data["runs"] = raw
    # Paired by seed against the smallest k: does adding directions help seed for seed?
    base = dict(zip(raw[0]["seeds"], raw[0]["test"], strict=True))
    comparisons = [
        {"k": r["k"], **common.paired(dict(zip(r["seeds"], r["test"], strict=True)), base)}
        for r in raw[1:]
    ]
    report.data["paired"] = comparisons
    if comparisons:
        report.text(
            "Paired by seed against k = "
            f"{raw[0]['k']} (test accuracy, points; t = mean / (std / √n)): "
            + "; ".join(describe(c) for c in comparisons)
            + "."
        )
    fig, (ours, theirs) = plt.subplots(1, 2, figsize=(10, 3.6))
    ks = [r["k"] for r in raw]
    means = [100 * np.mean(r["test"]) for r in raw]
    stds = [100 * np.std(r["test"], ddof=1) if len(r["test"]) > 1 else 0 for r in raw]
    ours.errorbar(ks, means, yerr=stds, marker="o", capsize=3)
    ours.set(xscale="log", xlabel="k", ylabel="test accuracy %", title="ours: digits")
    ref = common.AUTHORS_K_ABLATION_MNIST
    theirs.errorbar(
        list(ref),
        [m for m, _ in ref.values()],
        [s for _, s in ref.values()],
        marker="o",
        capsize=3,
        color="tab:gray",
    )
    theirs.set(xscale="log", xlabel="k", title="authors' logs [L]: MNIST, 100 epochs")
    fig.tight_layout()
    report.figure(fig, f"{NAME}.png", "test accuracy against k")
    plt.close(fig)
    return report.write()


if __name__ == "__main__":
    print(main())
