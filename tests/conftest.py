"""Test set-up: simulated CPU devices and float64, before JAX initialises its backend."""

import os

# Four host devices for mesh/sharding tests; must be set before the backend starts.
os.environ.setdefault("JAX_NUM_CPU_DEVICES", "4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", int(os.environ["JAX_NUM_CPU_DEVICES"]))
jax.config.update("jax_enable_x64", True)

import pytest  # noqa: E402


@pytest.fixture
def getkey():
    """A fresh PRNG key per call, deterministic within a test."""
    counter = iter(range(1_000_000))
    return lambda: jax.random.PRNGKey(next(counter))
