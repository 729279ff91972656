"""Entry points to the repository's `experiments/` modules, e.g.
`python -m adjoint_lab.experiments.reproduce`."""
