"""One of two processes computing the layout gradients over 2 × 2 CPU devices (launched by
tests/ssm/test_layouts.py::test_two_processes_match_one).

Usage: python -m tests.ssm.layouts_worker PROCESS_ID NUM_PROCESSES PORT OUT_DIR

Each process joins the run (`jax.distributed.initialize`), places the weights as the layout
holds them (the layer layout: each process only its own layers), computes the gradients on
the 4-device mesh and writes them, gathered to the host, to `OUT_DIR/<layout><process>.npz`.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main() -> None:
    process_id, num_processes, port, out_dir = sys.argv[1:]
    import jax

    jax.config.update("jax_num_cpu_devices", 2)
    jax.distributed.initialize(
        coordinator_address=f"localhost:{port}",
        num_processes=int(num_processes),
        process_id=int(process_id),
        initialization_timeout=120,
    )
    jax.config.update("jax_enable_x64", True)
    assert jax.process_count() == int(num_processes) and jax.device_count() == 4
    write_layout_gradients(Path(out_dir), ("layer", "sequence"))
    print(f"process {process_id}: devices {jax.device_count()}, ok")


def write_layout_gradients(out_dir: Path, layouts: tuple[str, ...]) -> None:
    """In a process of a running `jax.distributed` job over 4 devices: the exact adjoint's
    loss and gradients under each of `layouts`, gathered to the host, in
    `out_dir/<layout><process>.npz`. Also called by tests/train/multiprocess_worker.py, so
    that the default suite checks the layer layout across processes in the same launch."""
    import jax
    import numpy as np
    from flax import nnx
    from jax.experimental import multihost_utils
    from jax.sharding import AxisType, NamedSharding
    from jax.sharding import PartitionSpec as P

    from adjoint_lab import ssm
    from adjoint_lab.ssm.layouts import layer_shardings
    from tests.ssm.test_layouts import CONFIG, T, tokens_for

    # Every process builds the same weights and tokens (same seeds), as host numpy arrays.
    model = ssm.SSMLM(CONFIG, rngs=nnx.Rngs(0))
    weights = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    tokens = np.asarray(tokens_for(CONFIG))

    def place(x: np.ndarray, sharding: NamedSharding) -> jax.Array:
        # A global array from the process's copy: each process fills only its own shards.
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    runs = {
        "layer": (jax.make_mesh((4,), ("layer",), axis_types=(AxisType.Auto,)), "adjoint"),
        "sequence": (
            jax.make_mesh((2, 2), ("data", "sequence"), axis_types=(AxisType.Auto,) * 2),
            "adjoint",
        ),
    }
    for layout in layouts:
        mesh, method = runs[layout]
        if layout == "layer":
            shardings = layer_shardings(mesh, weights)
        else:
            shardings = jax.tree.map(lambda _, m=mesh: NamedSharding(m, P()), weights)
        global_weights = jax.tree.map(place, weights, shardings)
        global_tokens = place(tokens, NamedSharding(mesh, P()))
        fn = ssm.gradient_function(CONFIG, ssm.gradient_method(method), T, mesh, layout)
        loss, grads = fn(global_weights, global_tokens)
        if layout == "layer":
            local = {s.data.shape[0] for s in grads["layers"]["a_kernel"].addressable_shards}
            assert local == {1}, local  # each device holds one of the four layers
        flat = {
            "/".join(str(getattr(k, "key", k)) for k in path): leaf
            for path, leaf in jax.tree_util.tree_leaves_with_path({"loss": loss, **grads})
        }
        gathered = multihost_utils.process_allgather(flat, tiled=True)
        np.savez(out_dir / f"{layout}{jax.process_index()}.npz", **gathered)


if __name__ == "__main__":
    main()
