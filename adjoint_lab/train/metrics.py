"""`metrics.jsonl` (one JSON object per logged step) and the PNG of the training curves."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def _plain(value: Any) -> Any:
    """A JSON-able version of a scalar (NumPy/JAX scalars to Python floats/ints)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bool | int | str) or value is None:
        return value
    array = np.asarray(value)
    if array.ndim == 0:
        item = array.item()
        return item if not isinstance(item, float) or math.isfinite(item) else str(item)
    return array.tolist()


class MetricsLog:
    """Append-only `metrics.jsonl`.

    On resume from step `s`, records of steps after `s` (written by the interrupted run after
    its last checkpoint) are dropped, so the file reads like one uninterrupted run.
    """

    def __init__(self, path: str | Path, resume_step: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if resume_step is not None and self.path.exists():
            kept = [r for r in read_metrics(self.path) if r.get("step", -1) <= resume_step]
        elif self.path.exists():
            self.path.unlink()
        with self.path.open("w") as handle:
            for record in kept:
                handle.write(json.dumps(record) + "\n")

    def write(self, record: Mapping[str, Any]) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(_plain(record)) + "\n")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a `metrics.jsonl` file, skipping a torn last line."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def plot_curves(metrics_path: str | Path, png_path: str | Path, title: str = "") -> Path:
    """Plot every numeric series of `metrics.jsonl` against the step, loss on a log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    skip = {"step", "wall_time", "steps_per_sec", "samples_per_sec"}
    names = sorted(
        {k for r in records for k, v in r.items() if k not in skip and isinstance(v, int | float)}
    )
    # Held-out losses and errors share the training loss's (log) panel; accuracies, NFE and
    # other evaluation metrics get panels of their own.
    loss_like = ("loss", "error", "mse", "nll")
    losses = [
        n
        for n in names
        if n == "loss" or (n.startswith("eval_") and any(w in n for w in loss_like))
    ]
    others = [n for n in names if n not in losses]
    panels = 1 + len(others)
    columns = min(panels, 3)
    rows = -(-panels // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False)
    axes = axes.ravel()
    for name in losses + others:
        points = [(r["step"], r[name]) for r in records if isinstance(r.get(name), int | float)]
        if not points:
            continue
        steps, values = zip(*points, strict=True)
        axis = axes[0] if name in losses else axes[1 + others.index(name)]
        axis.plot(steps, values, marker="." if len(points) < 30 else None, label=name)
        if name in others:
            axis.set_title(name)
    axes[0].set_title("loss")
    if axes[0].lines:
        axes[0].legend(fontsize=8)
        if all(min(line.get_ydata()) > 0 for line in axes[0].lines):
            axes[0].set_yscale("log")
    for axis in axes[:panels]:
        axis.set_xlabel("step")
    for axis in axes[panels:]:
        axis.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    png_path = Path(png_path)
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return png_path
