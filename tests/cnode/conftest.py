"""Shared small models: building a model compiles a random kernel per parameter shape (slow on
a busy CPU), so the tests that need real parameters share one architecture."""

import diffrax
import jax
import pytest

from adjoint_lab import cnode
from adjoint_lab.core import CheckpointedBackprop

# Two Euler steps: cheap, and the solver does not change shapes.
EULER = cnode.Integrator(
    solver=diffrax.Euler(),
    controller=diffrax.ConstantStepSize(),
    dt0=0.5,
    gradient=CheckpointedBackprop(max_steps=2),
)


@pytest.fixture(scope="session")
def small_cnode():
    """A C-NODE on 1x4x4 images with 4 classes (479 parameters), integrated by `EULER`."""
    key = jax.random.PRNGKey(0)
    return cnode.CNODE((1, 4, 4), 4, width=3, k=2, path_width=2, pool=2, integrator=EULER, key=key)
