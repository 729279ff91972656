"""adjoint_lab: adjoint methods, Characteristic Neural ODEs and parabolic base models in JAX."""

__version__ = "0.1.0"
