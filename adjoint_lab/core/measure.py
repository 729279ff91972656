"""Measuring memory and time: compile-time memory analysis, peak RSS of a fresh process, timing.

The memory of a jitted function is read from XLA's compiled memory analysis, which is
deterministic and needs no run (so it works at sizes that would not fit). Peak RSS of a
fresh process confirms it at sizes that run. Times are medians of repeats after warm-up;
compare them as ratios measured side by side, not as absolute numbers.
"""

from __future__ import annotations

import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import equinox as eqx
import jax
import numpy as np

__all__ = [
    "available_memory",
    "MemoryReport",
    "RSSReport",
    "TimingReport",
    "compiled_memory",
    "peak_rss",
    "time_fn",
]

_MB = 1e6


def _mb(n: float) -> str:
    return f"{n / _MB:.2f} MB"


@dataclass(frozen=True)
class MemoryReport:
    """XLA's memory analysis of one compiled function, in bytes.

    **Fields:**

    - `temp`: scratch buffers live during the call (activations, residuals, checkpoints).
    - `argument`: the inputs.
    - `output`: the outputs (with several outputs, XLA also counts the output tuple's table
        of pointers, 8 bytes per output on CPU).
    - `alias`: outputs that reuse (donated) input buffers, counted in both of the above.
    - `total` (property): `temp + argument + output - alias`.
    """

    temp: int
    argument: int
    output: int
    alias: int

    @property
    def total(self) -> int:
        return self.temp + self.argument + self.output - self.alias

    def __str__(self) -> str:
        return (
            f"total {_mb(self.total)} (temp {_mb(self.temp)}, arguments "
            f"{_mb(self.argument)}, outputs {_mb(self.output)}, aliased {_mb(self.alias)})"
        )


def _is_array_spec(x: object) -> bool:
    return isinstance(x, jax.Array | np.ndarray | np.generic | jax.ShapeDtypeStruct)


def available_memory(device: jax.Device | None = None) -> int:  # pyright: ignore[reportInvalidTypeForm]
    """Bytes free for new buffers: the allocator's limit minus what is in use on an
    accelerator; `MemAvailable` of the operating system on a CPU."""
    device = device or jax.devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None  # pyright: ignore[reportOptionalMemberAccess]
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def compiled_memory(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> MemoryReport:
    """The memory XLA plans for `jax.jit(fn)(*args, **kwargs)`, without running it.

    Arrays and `jax.ShapeDtypeStruct`s among the arguments are traced (only their shapes
    and dtypes matter); anything else (Python numbers, callables, equinox modules' static
    parts) is treated as static, as `equinox.filter_jit` does. Compiles once, on the
    default backend.

    **Arguments:**

    - `fn`: the function to compile, e.g. `jax.grad(loss)`.
    - `*args`, `**kwargs`: its arguments, as arrays or `jax.ShapeDtypeStruct`s.

    **Returns:**

    A `MemoryReport` of temp, argument, output and alias bytes and their `total`.
    """
    dynamic, static = eqx.partition((args, kwargs), _is_array_spec)

    def call(dynamic_):
        args_, kwargs_ = eqx.combine(dynamic_, static)
        return fn(*args_, **kwargs_)

    specs = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), dynamic)
    analysis = jax.jit(call).lower(specs).compile().memory_analysis()
    if analysis is None:
        raise RuntimeError(
            f"The {jax.default_backend()!r} backend gives no compiled memory analysis; "
            "measure with `peak_rss` instead, or run on CPU/GPU/TPU."
        )
    return MemoryReport(
        temp=int(analysis.temp_size_in_bytes),
        argument=int(analysis.argument_size_in_bytes),
        output=int(analysis.output_size_in_bytes),
        alias=int(analysis.alias_size_in_bytes),
    )


@dataclass(frozen=True)
class RSSReport:
    """Peak resident memory of a fresh process that ran one function, in bytes.

    **Fields:**

    - `peak`: the process's peak RSS after the call.
    - `baseline`: its peak RSS just before the call: Python, jax with its backend
        initialised, the target's module and the unpickled arguments.
    - `increase` (property): `peak - baseline`, what the call itself added.
    """

    peak: int
    baseline: int

    @property
    def increase(self) -> int:
        return self.peak - self.baseline

    def __str__(self) -> str:
        return (
            f"peak RSS {_mb(self.peak)} (baseline {_mb(self.baseline)}, "
            f"increase {_mb(self.increase)})"
        )


# Run in the child: restore sys.path, import jax, then unpickle and call the target.
# The peak is VmHWM, the high-water mark of this process's own address space. ru_maxrss
# would not do: Linux carries the pre-exec high-water mark over exec, so a child of a large
# parent (a pytest run, a notebook) starts with the parent's RSS as its "peak".
_CHILD = r"""
import pickle, resource, sys, json
stdin = sys.stdin.buffer
sys.path[:] = pickle.load(stdin)
import jax
jax.block_until_ready(jax.numpy.zeros(()))
target, args, kwargs = pickle.load(stdin)
def rss():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
baseline = rss()
jax.block_until_ready(target(*args, **kwargs))
peak = rss()
with open(sys.argv[1], "w") as f:
    json.dump({"peak": peak, "baseline": baseline}, f)
"""


def peak_rss(
    target: Callable[..., Any],
    *args: Any,
    timeout: float = 600.0,
    env: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> RSSReport:
    """Run `target(*args, **kwargs)` in a fresh Python process and report its peak RSS.

    A fresh process has no compilation caches, arrays or allocator pools of this one, so
    its peak RSS measures the call alone. The peak is a high-water mark (`VmHWM` from
    `/proc/self/status`; not `ru_maxrss`, which Linux carries over from the parent across
    fork and exec), so compare `increase` (peak minus the baseline before the call) between
    targets; it includes compilation. Linux only.

    **Arguments:**

    - `target`: an importable module-level function (it is pickled by name); its return
        value is waited on with `jax.block_until_ready` and then discarded.
    - `*args`, `**kwargs`: its arguments, which must be picklable. The names `timeout`
        and `env` are taken by this function.
    - `timeout`: seconds before the child is killed.
    - `env`: environment variables to set in the child on top of this process's (e.g.
        `{"JAX_ENABLE_X64": "1"}`).

    **Returns:**

    An `RSSReport` with `peak`, `baseline` and `increase` in bytes.
    """
    if sys.platform != "linux":
        raise RuntimeError(
            f"`peak_rss` reads the peak RSS from Linux's /proc; on {sys.platform} use "
            "`compiled_memory` instead."
        )
    try:
        payload = pickle.dumps(list(sys.path)) + pickle.dumps((target, args, kwargs))
    except (pickle.PicklingError, AttributeError, TypeError) as e:
        raise ValueError(
            f"`peak_rss` runs `target` in a fresh process, so `target` must be a module-level "
            f"function importable by name and its arguments picklable; pickling {target!r} "
            f"failed: {e}"
        ) from e
    child_env = dict(os.environ)
    child_env.update(env or {})
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rss.json")
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, out],
            input=payload,
            capture_output=True,
            env=child_env,
            timeout=timeout,
        )
        if proc.returncode != 0:
            tail = proc.stderr.decode(errors="replace")[-4000:]
            raise RuntimeError(
                f"`peak_rss`: the child process running {target!r} exited with code "
                f"{proc.returncode}. Its stderr ends with:\n{tail}"
            )
        with open(out) as f:
            result = json.load(f)
    return RSSReport(peak=int(result["peak"]), baseline=int(result["baseline"]))


@dataclass(frozen=True)
class TimingReport:
    """Wall-clock times of repeated calls, in seconds.

    **Fields:**

    - `median`: the median of `times`.
    - `times`: every timed call, in order.
    """

    median: float
    times: tuple[float, ...]

    def __str__(self) -> str:
        return (
            f"median {self.median * 1e3:.3f} ms over {len(self.times)} runs "
            f"(min {min(self.times) * 1e3:.3f} ms, max {max(self.times) * 1e3:.3f} ms)"
        )


def time_fn(
    fn: Callable[..., Any],
    *args: Any,
    warmup: int = 1,
    repeats: int = 5,
    **kwargs: Any,
) -> TimingReport:
    """Time `fn(*args, **kwargs)`, waiting for its outputs with `jax.block_until_ready`.

    The `warmup` calls (compilation, caches) are not timed. Pass an already-jitted `fn`
    to time the compiled call.

    **Arguments:**

    - `fn`: the function to time.
    - `*args`, `**kwargs`: its arguments. The names `warmup` and `repeats` are taken by
        this function.
    - `warmup`: untimed calls first, an int >= 0.
    - `repeats`: timed calls, an int >= 1.

    **Returns:**

    A `TimingReport` with the `median` and all `times`, in seconds.
    """
    if not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"`time_fn(warmup={warmup!r})`: `warmup` must be an int >= 0.")
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"`time_fn(repeats={repeats!r})`: `repeats` must be an int >= 1.")
    for _ in range(warmup):
        jax.block_until_ready(fn(*args, **kwargs))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args, **kwargs))
        times.append(time.perf_counter() - start)
    return TimingReport(median=statistics.median(times), times=tuple(times))
