"""`python -m adjoint_lab.experiments.reproduce`: the repository's `experiments/reproduce.py`
from any working directory (the paper reproductions live beside the package, in the
repository's top-level `experiments/` folder, so this needs a clone with an editable install)."""

from __future__ import annotations

import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> Path:
    if not (REPOSITORY / "experiments" / "reproduce.py").exists():
        raise SystemExit(
            f"adjoint-lab: error: no experiments/ folder beside the package in {REPOSITORY}; "
            "the reproductions run from a clone of the repository installed with `pip install -e .`"
        )
    if str(REPOSITORY) not in sys.path:
        sys.path.insert(0, str(REPOSITORY))
    from experiments import reproduce

    return reproduce.main(argv)


if __name__ == "__main__":
    main()
