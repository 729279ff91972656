"""Test set-up: simulated CPU devices and float64, before JAX initialises its backend."""

import os
import tempfile

# Four host devices for mesh/sharding tests; must be set before the backend starts.
os.environ.setdefault("JAX_NUM_CPU_DEVICES", "4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# One persistent compilation cache per test session, shared by the xdist workers and inherited
# by the CLI, notebook and install subprocesses: they compile the same default-experiment
# training step many times, and on two cores compilation is most of their time. Keyed by the
# xdist run id so that every session starts cold, as on a clean CI machine.
_run = os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid{os.getpid()}"
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(tempfile.gettempdir(), f"adjoint-lab-jax-cache-{_run}"),
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

# The tests' arrays are tiny, so XLA:CPU's LLVM optimisation is mostly compile time spent for
# nothing: with jax_disable_most_optimizations (backend optimisation level 0, no expensive LLVM
# passes) the copying-task test compiles in 14 s instead of 35 s. What the kernels compute is
# unchanged, but they run slower: about 3x on the parabolic training step. Tests whose time is
# execution, not compilation, are marked `optimized` and run with the full compiler (the
# fixture below); the flag is read at each compilation, so it can change between tests.
# XLA:CPU's older elemental emitter compiles the many small fusions of a diffrax solve faster
# than its fusion emitters: 16 s of backend compilation instead of 27 s on
# tests/core/test_ode.py and test_gradients.py. Both settings reach the CLI, notebook and
# install subprocesses through the environment. ADJOINT_LAB_TEST_FAST_COMPILE=0 tests with the
# default compiler.
FAST_COMPILE = os.environ.get("ADJOINT_LAB_TEST_FAST_COMPILE", "1") == "1"
if FAST_COMPILE:
    os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
    _emitter = "--xla_cpu_use_fusion_emitters=false"
    if _emitter not in os.environ.get("XLA_FLAGS", ""):  # xdist workers inherit the controller's
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_emitter}".strip()

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", int(os.environ["JAX_NUM_CPU_DEVICES"]))
jax.config.update("jax_enable_x64", True)

import pytest  # noqa: E402

# ADJOINT_LAB_TYPECHECK=1: every annotation of the package (jaxtyping shapes and dtypes, and
# plain types) is checked at each call by beartype, through jaxtyping's import hook. It must be
# installed before anything imports adjoint_lab; tests/test_typecheck.py runs a subset this way.
TYPECHECK = os.environ.get("ADJOINT_LAB_TYPECHECK", "0") == "1"
if TYPECHECK:
    from jaxtyping import install_import_hook  # noqa: E402

    import tests._typechecker  # noqa: E402, F401  (the hook looks it up by name)

    install_import_hook("adjoint_lab", "tests._typechecker.checked")


def pytest_collection_modifyitems(config, items):
    """Under the hook, skip the tests marked `untyped`: they pass ill-typed arguments on
    purpose, to test the package's own error messages, which the hook pre-empts."""
    if not TYPECHECK:
        return
    for item in items:
        marker = item.get_closest_marker("untyped")
        if marker is not None:
            reason = marker.kwargs.get("reason") or (marker.args[0] if marker.args else "")
            why = f"untyped under ADJOINT_LAB_TYPECHECK: {reason}"
            item.add_marker(pytest.mark.skip(reason=why))


@pytest.fixture(autouse=True)
def _optimized_compiler(request):
    """Under `@pytest.mark.optimized`, compile with XLA's full optimisation: for tests whose
    time is running small kernels many times, not compiling them."""
    if not FAST_COMPILE or request.node.get_closest_marker("optimized") is None:
        yield
        return
    jax.config.update("jax_disable_most_optimizations", False)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", True)


@pytest.fixture
def getkey():
    """A fresh PRNG key per call, deterministic within a test."""
    counter = iter(range(1_000_000))
    return lambda: jax.random.PRNGKey(next(counter))
