"""Devices, meshes and batch sharding: JAX's own machinery, configured from `MeshConfig`."""

from __future__ import annotations

import math
import os

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec
from jaxtyping import PyTree

from ..config.errors import ConfigError
from ..config.schema import DistributedConfig, MeshConfig


def configure_host_devices(cpu_devices: int | None) -> None:
    """Simulate `cpu_devices` CPU devices; only possible before JAX starts its backend."""
    if cpu_devices is None:
        return
    os.environ["JAX_NUM_CPU_DEVICES"] = str(cpu_devices)
    try:
        jax.config.update("jax_num_cpu_devices", cpu_devices)
    except RuntimeError as error:  # backend already initialised
        if jax.device_count() != cpu_devices:
            raise ConfigError(
                "mesh.cpu_devices",
                cpu_devices,
                f"JAX already started with {jax.device_count()} devices; set it before any JAX "
                f"computation ({error})",
            ) from None


def initialize_distributed(config: DistributedConfig) -> None:
    """Join a multi-process JAX run (`jax.distributed.initialize`); must precede computation.

    With `enabled=true` and every field null, JAX auto-detects the cluster (Slurm, Kubernetes,
    Cloud TPU).
    """
    if not config.enabled:
        return
    jax.distributed.initialize(
        coordinator_address=config.coordinator_address,
        num_processes=config.num_processes,
        process_id=config.process_id,
        initialization_timeout=config.initialization_timeout,
    )


def mesh_shape(config: MeshConfig, device_count: int) -> tuple[int, ...]:
    """Resolve -1 in `config.shape` and check the mesh fits the devices."""
    fixed = math.prod(s for s in config.shape if s != -1)
    if -1 in config.shape:
        if device_count % fixed:
            raise ConfigError(
                "mesh.shape",
                list(config.shape),
                f"the fixed axes ({fixed} devices) must divide the {device_count} devices",
            )
        shape = tuple(device_count // fixed if s == -1 else s for s in config.shape)
    else:
        shape = tuple(config.shape)
    if math.prod(shape) > device_count:
        raise ConfigError(
            "mesh.shape",
            list(config.shape),
            f"needs {math.prod(shape)} devices but only {device_count} are available; use sizes "
            f"whose product is at most {device_count} (or -1), or simulate CPU devices with "
            "mesh.cpu_devices=N",
        )
    return shape


def make_mesh(config: MeshConfig) -> Mesh:
    """A mesh over the first prod(shape) devices with `Auto` axes.

    Auto axes (not JAX's newer Explicit default) because diffrax's while loops differentiate
    only under Auto meshes (measured: ECOSYSTEM.md §1.10(b)).
    """
    shape = mesh_shape(config, jax.device_count())
    devices = jax.devices()[: math.prod(shape)]
    return jax.make_mesh(
        shape, config.axes, axis_types=(AxisType.Auto,) * len(shape), devices=devices
    )


def data_sharding(mesh: Mesh, axis: str = "data") -> NamedSharding:
    """Shard the leading (example) axis over `axis`; replicate over the others."""
    if axis not in mesh.axis_names:
        return NamedSharding(mesh, PartitionSpec())
    return NamedSharding(mesh, PartitionSpec(axis))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def state_shardings(
    state: PyTree, mesh: Mesh, param_shardings: PyTree[NamedSharding] | None = None
) -> PyTree[NamedSharding]:
    """Shardings for a whole training state from the parameters' shardings.

    A leaf whose key path ends with a parameter's key path and has that parameter's shape
    takes its sharding: the parameters themselves and every parameter-shaped optimizer
    moment (optax keeps them under the same keys), so each device holds the optimizer state
    of exactly its parameters. Everything else (step counters, scalars) is replicated.
    """
    whole = replicated(mesh)
    if param_shardings is None:
        return jax.tree_util.tree_map(lambda _: whole, state)
    params = state.params
    flat_params, _ = jax.tree_util.tree_flatten_with_path(params)
    flat_shardings = jax.tree_util.tree_leaves(
        param_shardings, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding)
    )
    by_suffix = {
        jax.tree_util.keystr(path): (np.shape(leaf), sharding)
        for (path, leaf), sharding in zip(flat_params, flat_shardings, strict=True)
    }

    def pick(path, leaf):
        text = jax.tree_util.keystr(path)
        for suffix, (shape, sharding) in by_suffix.items():
            if text.endswith(suffix) and np.shape(leaf) == shape:
                return sharding
        return whole

    return jax.tree_util.tree_map_with_path(pick, state)


def shard_batch(batch: PyTree, mesh: Mesh, axis: str = "data") -> PyTree:
    """Place a global host batch on the mesh, split along its leading axis.

    Each process contributes only its own rows (`jax.make_array_from_process_local_data`), so
    the same call serves one process and many.
    """
    sharding = data_sharding(mesh, axis)
    size = mesh.shape.get(axis, 1)
    processes = jax.process_count()

    def place(x):
        x = np.asarray(x)
        if x.ndim == 0:
            return jax.device_put(x, replicated(mesh))
        if x.shape[0] % size:
            raise ConfigError(
                "train.batch_size",
                x.shape[0],
                f"must be divisible by the mesh's '{axis}' axis ({size} devices)",
            )
        rows = x.shape[0] // processes
        local = x[jax.process_index() * rows : (jax.process_index() + 1) * rows]
        return jax.make_array_from_process_local_data(sharding, local, x.shape)

    return jax.tree_util.tree_map(place, batch)
