"""One process of a multi-process run (launched by test_multiprocess.py): the training loop,
then the SSM layer layout's gradients (`tests.ssm.layouts_worker`), in one launch.

Usage: python -m tests.train.multiprocess_worker PROCESS_ID NUM_PROCESSES PORT RUN_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

from adjoint_lab.config.schema import DistributedConfig, MeshConfig, OptimConfig, TrainConfig
from adjoint_lab.train import configure_host_devices, initialize_distributed


def main() -> None:
    process_id, num_processes, port, run_dir = sys.argv[1:]
    configure_host_devices(2)
    initialize_distributed(
        DistributedConfig(
            enabled=True,
            coordinator_address=f"localhost:{port}",
            num_processes=int(num_processes),
            process_id=int(process_id),
            initialization_timeout=120,
        )
    )
    import jax

    jax.config.update("jax_enable_x64", True)
    import numpy as np

    from adjoint_lab.train import fit, make_mesh, make_optimizer
    from tests.helpers import regression_task

    assert jax.process_count() == int(num_processes)
    mesh = make_mesh(MeshConfig(axes=("data",), shape=(-1,)))
    train = TrainConfig(
        steps=6, batch_size=8, log_every=2, eval_every=6, checkpoint_every=3, progress=False
    )
    result = fit(
        regression_task(),
        make_optimizer(OptimConfig(name="adam", lr=0.1), train.steps),
        train,
        Path(run_dir),
        seed=3,
        mesh=mesh,
    )
    # Parameters are replicated: every process holds a full copy.
    local = jax.tree_util.tree_map(lambda x: np.asarray(x.addressable_data(0)), result.params)
    np.savez(Path(run_dir) / f"params{jax.process_index()}.npz", **local)
    from tests.ssm.layouts_worker import write_layout_gradients

    write_layout_gradients(Path(run_dir), ("layer",))
    print(f"process {process_id}: devices {jax.device_count()}, mesh {dict(mesh.shape)}")


if __name__ == "__main__":
    main()
