"""Writing an experiment's results: markdown tables, raw JSON and figures in one folder."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

__all__ = ["Report", "markdown_table", "results_dir"]


def results_dir() -> Path:
    """`$ADJOINT_LAB_RESULTS`, or `results/` at the repository root."""
    env = os.environ.get("ADJOINT_LAB_RESULTS")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "results"


def _cell(value: Any) -> str:
    if isinstance(value, float | np.floating):
        if value != value:  # NaN: a result that could not be measured
            return "—"
        return f"{value:.4g}"
    return "—" if value is None else str(value)


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats to 4 significant digits, None and NaN as a dash."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _git_commit() -> str:
    """The short commit, with `-dirty` when tracked files differ from it (the results may then
    come from code that no commit holds)."""
    root = Path(__file__).parent

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], capture_output=True, text=True, cwd=root, check=False)
        return out.stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD") or "unknown"
        # Only tracked files count: results written by this very run are untracked or
        # under results/, which the stamp must not flag.
        dirty = git(
            "status", "--porcelain", "--untracked-files=no", "--", ":(top)", ":(top,exclude)results"
        )
    except OSError:
        return "unknown"
    return f"{commit}-dirty" if dirty and commit != "unknown" else commit


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray | jax.Array):
        return np.asarray(value).tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


class Report:
    """One experiment's results: call `section`/`table`/`figure`, then `write()`.

    `write()` puts `<name>.md`, `<name>.json` and the figures in `results_dir()` (or `out`),
    with the command that regenerates them and the machine they came from.
    """

    def __init__(self, name: str, title: str, command: str, out: str | Path | None = None):
        self.name = name
        self.title = title
        self.command = command
        self.out = Path(out) if out is not None else results_dir()
        self.parts: list[str] = []
        self.data: dict[str, Any] = {}
        self.started = time.time()

    def text(self, markdown: str) -> None:
        self.parts.append(markdown.strip())

    def section(self, heading: str) -> None:
        self.parts.append(f"## {heading}")

    def table(self, columns: Sequence[str], rows: Sequence[Sequence[Any]], key: str) -> None:
        """Add a table to the markdown and its rows (as dicts) to the JSON under `key`."""
        self.parts.append(markdown_table(columns, rows))
        self.data[key] = [dict(zip(columns, map(_plain, row), strict=True)) for row in rows]

    def figure(self, fig: Any, filename: str, caption: str = "") -> Path:
        """Save a matplotlib figure beside the markdown and link it."""
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / filename
        fig.savefig(path, dpi=120, bbox_inches="tight")
        self.parts.append(f"![{caption or filename}]({filename})")
        return path

    def write(self) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        device = jax.devices()[0]
        header = [
            f"# {self.title}",
            f"Regenerate: `{self.command}`",
            f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, JAX {jax.__version__} "
            f"on {device.platform} ({device.device_kind}); commit {_git_commit()}; "
            f"{time.time() - self.started:.0f} s.",
        ]
        md = self.out / f"{self.name}.md"
        md.write_text("\n\n".join(header + self.parts) + "\n")
        meta = {"command": self.command, "jax": jax.__version__, "platform": device.platform}
        payload = {"meta": meta, **_plain(self.data)}
        (self.out / f"{self.name}.json").write_text(json.dumps(payload, indent=1) + "\n")
        return md
