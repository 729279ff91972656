"""Benchmarks and paper reproductions: `python -m experiments.<name>` from the repository root.

Each module writes `results/<name>.md` (a markdown table, the paper's numbers beside ours),
`results/<name>.json` (the raw numbers) and its figures as PNGs, through `experiments.report`.
"""
