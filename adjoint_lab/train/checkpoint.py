"""Checkpoints through orbax's `CheckpointManager`, for any array pytree.

The state is stored as a flat dict keyed by each leaf's pytree path, so equinox modules, Flax
NNX states and optax states all round-trip without orbax needing to know their node types, and
a checkpoint from a different model fails with the names of the leaves that differ.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jaxtyping import PyTree

from .errors import CheckpointError

log = logging.getLogger(__name__)


def _flatten(tree: PyTree) -> tuple[dict[str, Any], Any]:
    leaves_with_paths, treedef = jax.tree_util.tree_flatten_with_path(tree)
    flat = {jax.tree_util.keystr(path): leaf for path, leaf in leaves_with_paths}
    if len(flat) != len(leaves_with_paths):
        raise CheckpointError("two leaves of the state share a path; cannot checkpoint it")
    return flat, treedef


def _describe(leaf: Any) -> str:
    return f"{tuple(np.shape(leaf))} {np.dtype(getattr(leaf, 'dtype', type(leaf)))}"


def _mismatches(stored: Any, expected: Mapping[str, Any]) -> list[str]:
    """`stored`: orbax's `TreeMetadata` of the saved state, read like a mapping (it is not a
    `Mapping`)."""
    problems = []
    for key in sorted(set(stored) | set(expected)):
        if key not in stored:
            problems.append(f"{key}: missing from the checkpoint")
        elif key not in expected:
            problems.append(f"{key}: in the checkpoint but not in the model")
        else:
            got, want = stored[key], expected[key]
            if tuple(got.shape) != tuple(want.shape) or np.dtype(got.dtype) != np.dtype(want.dtype):
                problems.append(f"{key}: checkpoint {_describe(got)}, model {_describe(want)}")
    return problems


class Checkpointer:
    """Save and restore a training state with orbax, keeping the last `keep` checkpoints.

    **Arguments:**

    - `directory`: where step folders go (created if missing).
    - `keep`: how many of the newest checkpoints to keep.
    """

    def __init__(self, directory: str | Path, keep: int = 3):
        self.directory = Path(directory).absolute()
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
            # Named handlers let a fresh manager read what an earlier process wrote.
            item_handlers={
                "state": ocp.StandardCheckpointHandler(),
                "meta": ocp.JsonCheckpointHandler(),
            },
        )

    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: PyTree, meta: Mapping[str, Any] | None = None) -> None:
        """Save `state` (and JSON-able `meta`) as checkpoint `step` (asynchronously)."""
        if step in self._manager.all_steps():
            return
        flat, _ = _flatten(state)
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(flat),
                meta=ocp.args.JsonSave(dict(meta or {}, step=int(step))),
            ),
            force=True,
        )

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

    def restore(self, step: int, like: PyTree) -> tuple[PyTree, dict[str, Any]]:
        """Restore checkpoint `step` into the structure of `like` (arrays or ShapeDtypeStructs).

        Raises `CheckpointError` naming the differing leaves if the checkpoint holds another
        model's state.
        """
        expected, treedef = _flatten(like)
        abstract = {
            key: jax.ShapeDtypeStruct(np.shape(leaf), leaf.dtype, sharding=_sharding(leaf))
            for key, leaf in expected.items()
        }
        try:
            stored = self._manager.item_metadata(step)["state"]
        except Exception:  # unreadable metadata: let the restore below report it
            stored = None
        if stored is not None:
            problems = _mismatches(stored, abstract)
            if problems:
                shown = "\n  ".join(problems[:10])
                raise CheckpointError(
                    f"checkpoint {self.directory / str(step)} does not fit this model "
                    f"({len(problems)} differences):\n  {shown}\nPoint train.resume at a "
                    "checkpoint of the same model, or use a new run directory."
                )
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
            ),
        )
        leaves = [restored["state"][key] for key in expected]
        return jax.tree_util.tree_unflatten(treedef, leaves), dict(restored["meta"])

    def read(self, step: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """Checkpoint `step` as stored: a flat dict from leaf paths to arrays, and its meta.

        For inspecting or comparing checkpoints without rebuilding the model.
        """
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()),
        )
        return {k: np.asarray(v) for k, v in restored["state"].items()}, dict(restored["meta"])

    def restore_latest(self, like: PyTree) -> tuple[PyTree, dict[str, Any]] | None:
        """Restore the newest readable checkpoint, or `None` if there is no checkpoint at all.

        An unreadable (corrupted) checkpoint is skipped with a warning for the one before it; if
        checkpoints exist but none can be read, this raises rather than starting afresh.
        """
        steps = self.steps()
        if not steps:
            return None
        failures = []
        for step in reversed(steps):
            try:
                return self.restore(step, like)
            except CheckpointError:
                raise
            except Exception as error:  # orbax/tensorstore raise many types for bad files
                failures.append(f"step {step}: {type(error).__name__}: {error}")
                warnings.warn(
                    f"checkpoint {self.directory / str(step)} is unreadable ({error}); "
                    "falling back to the previous one",
                    RuntimeWarning,
                    stacklevel=2,
                )
        raise CheckpointError(
            f"no readable checkpoint in {self.directory}:\n  "
            + "\n  ".join(failures)
            + "\nRemove the directory to start afresh, or point train.resume at a good checkpoint."
        )


def _sharding(leaf: Any) -> jax.sharding.Sharding | None:
    sharding = getattr(leaf, "sharding", None)
    if sharding is not None:
        return sharding
    return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
