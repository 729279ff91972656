"""Compile-time memory, peak RSS of a fresh process, timing."""

from __future__ import annotations

import math
import operator
import time

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adjoint_lab.core import (
    CheckpointedBackprop,
    MemoryReport,
    RSSReport,
    TimingReport,
    compiled_memory,
    peak_rss,
    solve,
    time_fn,
)

MB = 1_000_000


def test_compiled_memory_counts_arguments_and_outputs():
    def f(x, y, *, scale, power=2):
        return scale * jnp.sum(x**power) + jnp.sum(y), x[:10]

    x = jax.ShapeDtypeStruct((1000,), jnp.float64)
    y = np.ones(250, dtype=np.float32)  # concrete arrays work too; only the shape is used
    report = compiled_memory(f, x, y, scale=jax.ShapeDtypeStruct((), jnp.float64), power=3)
    assert isinstance(report, MemoryReport)
    assert report.argument == 1000 * 8 + 250 * 4 + 8
    # Two outputs: XLA also counts the output tuple's table of two 8-byte pointers.
    assert report.output == 8 + 10 * 8 + 2 * 8
    single = compiled_memory(lambda x: x[:10], x)
    assert (single.argument, single.output) == (8000, 80)
    assert report.alias == 0
    assert report.total == report.temp + report.argument + report.output - report.alias
    assert str(report).startswith("total ") and "MB" in str(report)


def test_compiled_memory_grows_with_checkpoints():
    # 64 Euler steps of a 2000-float64 state (16 kB); every checkpoint stores the state.
    def loss(y0, checkpoints):
        gradient = CheckpointedBackprop(checkpoints=checkpoints, max_steps=64)
        sol = solve(lambda t, y, a: -y, 0.0, 1.0, y0, solver=diffrax.Euler(), dt0=1 / 64,
                    gradient=gradient)  # fmt: skip
        return jnp.sum(sol.ys)

    y0 = jax.ShapeDtypeStruct((2000,), jnp.float64)
    few = compiled_memory(jax.grad(loss), y0, 2)
    many = compiled_memory(jax.grad(loss), y0, 32)
    state = 2000 * 8
    assert few.argument == many.argument == state
    # Each of the 30 extra checkpoints holds the loop state: y plus a little (measured:
    # about two states' worth per checkpoint with diffrax 0.7.2).
    per_checkpoint = (many.temp - few.temp) / 30
    assert state < per_checkpoint < 3 * state


def test_peak_rss_sees_a_large_allocation():
    # Module-level callables from numpy, so the child does not import this test module.
    big = peak_rss(np.ones, 200 * MB // 8)
    small = peak_rss(np.ones, 8)
    assert isinstance(big, RSSReport)
    assert big.peak >= big.baseline > 50 * MB  # python + jax + its CPU backend
    assert abs(big.baseline - small.baseline) < 50 * MB
    assert small.increase < 20 * MB
    assert 180 * MB < big.increase - small.increase < 260 * MB
    assert "increase" in str(big) and "MB" in str(big)


def test_peak_rss_reports_failures():
    with pytest.raises(ValueError, match="module-level function"):
        peak_rss(lambda: None)
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        peak_rss(operator.truediv, 1, 0, env={"JAX_PLATFORMS": "cpu"})


def test_time_fn():
    calls = []

    def f(x, *, sleep):
        calls.append(x)
        time.sleep(sleep)
        return jnp.asarray(x)

    report = time_fn(f, 3, sleep=0.01, warmup=2, repeats=3)
    assert isinstance(report, TimingReport)
    assert calls == [3] * 5
    assert len(report.times) == 3
    assert report.median == sorted(report.times)[1]
    assert all(t >= 0.01 for t in report.times)
    assert math.isfinite(report.median)
    assert "median" in str(report) and "ms" in str(report)
    with pytest.raises(ValueError, match="repeats"):
        time_fn(f, 3, sleep=0.0, repeats=0)
    with pytest.raises(ValueError, match="warmup"):
        time_fn(f, 3, sleep=0.0, warmup=-1)
