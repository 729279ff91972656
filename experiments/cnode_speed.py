"""Speed benchmark: training step time and NFE per model on the authors' CIFAR-10 architectures.

    python -m experiments.cnode_speed [--profile quick|cpu|gpu] [--out DIR]

Random 3x32x32 inputs and labels (the timing does not depend on the data set), a small batch,
the authors' widths (`adjoint_lab.cnode.PAPER_ARCHITECTURES["cifar10"]`, 112-115 K parameters),
Dopri5 at rtol = atol = 1e-3 with checkpointed backprop, AdamW. Step time is the median of
timed steps after a compiling one; NFE are counted at run time at initialisation. Every number
is also given as a ratio to NODE in the same run (absolute times depend on the machine).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

import diffrax
import equinox as eqx
import jax
import numpy as np

from adjoint_lab.cnode import (
    MODELS,
    PAPER_ARCHITECTURES,
    Integrator,
    count_parameters,
    cross_entropy,
    paper_model,
    runs,
)
from adjoint_lab.config import OptimConfig
from adjoint_lab.core import CheckpointedBackprop
from adjoint_lab.train import TrainState, make_optimizer, train_step, value_and_grad_of
from experiments import cnode_common as common
from experiments.report import Report

NAME = "cnode_speed"
_EULER = Integrator(
    solver=diffrax.Euler(),
    controller=diffrax.ConstantStepSize(),
    dt0=1.0,
    gradient=CheckpointedBackprop(max_steps=1),
)
# The clock of `measure`; a test replaces it with a scripted one.
clock = time.perf_counter
PROFILES = {
    # Tests: the CIFAR layouts on 8x8 images, one Euler step, two models.
    "quick": {"models": ["node", "cnode"], "batch": 2, "repeats": 2, "size": 8, "solver": "euler"},
    "cpu": {"models": common.ALL_MODELS, "batch": 4, "repeats": 3, "size": 32, "solver": "dopri5"},
    "gpu": {
        "models": common.ALL_MODELS,
        "batch": 256,
        "repeats": 10,
        "size": 32,
        "solver": "dopri5",
    },
}


def _model(name: str, size: int, integrator: Integrator, key: jax.Array) -> eqx.Module:
    if size == 32:
        return paper_model(name, "cifar10", integrator=integrator, key=key)
    # The authors' widths on smaller images (the quick profile).
    kwargs = dict(PAPER_ARCHITECTURES["cifar10"][name])
    kwargs.pop("input_shape")
    return MODELS[name]((3, size, size), 10, integrator=integrator, key=key, **kwargs)


def measure(model: eqx.Module, x: jax.Array, y: jax.Array, repeats: int) -> dict[str, float]:
    """Compile time, median step time, and forward / backward NFE of one training step."""
    params, static = eqx.partition(model, eqx.is_inexact_array)
    optimizer = make_optimizer(OptimConfig(name="adamw", lr=1e-3, weight_decay=5e-4), 1)

    def loss(params, batch, key):
        x, y = batch
        logits, stats = eqx.combine(params, static).logits_and_stats(x)
        return cross_entropy(logits, y), {"nfe": stats["nfe"]}

    step = jax.jit(train_step(value_and_grad_of(loss), optimizer))
    state, key = TrainState.create(params, optimizer), jax.random.PRNGKey(0)
    start = clock()
    jax.block_until_ready(step(state, (x, y), key))
    compile_seconds = clock() - start
    times = []
    for _ in range(repeats):
        # Always from the initial parameters: every model is timed at the same point.
        start = clock()
        jax.block_until_ready(step(state, (x, y), key))
        times.append(clock() - start)
    forward, backward = runs.evaluation_counts(model, x, y)
    return {
        "compile_s": compile_seconds,
        "step_s": float(np.median(times)),
        "nfe_forward": forward,
        "nfe_backward": backward,
    }


def main(argv: Sequence[str] | None = None) -> Path:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = common.base_parser(__doc__.splitlines()[0], PROFILES)
    args = parser.parse_args(argv)
    p = PROFILES[args.profile]
    integrator = _EULER if p["solver"] == "euler" else common.dopri5(max_steps=256)
    key_x, key_y, key_m = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.uniform(key_x, (p["batch"], 3, p["size"], p["size"]))
    y = jax.random.randint(key_y, (p["batch"],), 0, 10)
    report = Report(
        NAME,
        "C-NODE family: training step time and NFE (CIFAR-10 architectures)",
        common.command(NAME, argv),
        args.out,
    )
    measured = {}
    for name in p["models"]:
        model = _model(name, p["size"], integrator, key_m)
        measured[name] = {"params": count_parameters(model), **measure(model, x, y, p["repeats"])}
        print(name, measured[name], flush=True)
    base = measured.get("node") or next(iter(measured.values()))
    rows = [
        [
            name,
            m["params"],
            round(m["step_s"], 4),
            round(m["step_s"] / base["step_s"], 2),
            m["nfe_forward"],
            m["nfe_backward"],
            round(m["nfe_forward"] / base["nfe_forward"], 2),
            round(m["nfe_backward"] / base["nfe_backward"], 2),
            round(m["compile_s"], 1),
        ]
        for name, m in measured.items()
    ]
    solver = "Dopri5 rtol = atol = 1e-3" if p["solver"] == "dopri5" else "one Euler step"
    report.text(
        f"Profile `{args.profile}`: batch {p['batch']} of random 3x{p['size']}x{p['size']} "
        f"images, {solver}, checkpointed backprop, AdamW; median of {p['repeats']} steps "
        "at initialisation. "
        "Ratios are to NODE in this run. NFE at initialisation: trained models take more steps."
    )
    columns = [
        "model",
        "params",
        "step s",
        "step / NODE",
        "NFE fwd",
        "NFE bwd",
        "fwd / NODE",
        "bwd / NODE",
        "compile s",
    ]
    report.table(columns, rows, key="rows")
    report.data["measured"] = measured
    return report.write()


if __name__ == "__main__":
    print(main())
