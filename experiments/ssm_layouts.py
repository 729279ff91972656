"""Per-device memory of the distributed SSM layouts on 4 simulated devices vs one device.

    python -m experiments.ssm_layouts [--profile quick|cpu|gpu] [--context T] [--out DIR]

For each model, gradient method and layout, XLA's compile-time memory analysis of the jitted
`(weights, tokens) -> (loss, grads)` function (`temp + arguments + outputs - aliased`; for a
sharded function the figures are per device). Nothing runs: the weights and tokens are
`jax.ShapeDtypeStruct`s. Batch 1. The 4 devices are simulated CPU devices
(`JAX_NUM_CPU_DEVICES=4`, set here before JAX is imported).

- `ssm-ref` (K = 4, P = 256, N = 16): the residual stream (`T × P`) dominates what a layer
  stores (`3N` per token). `sequence` divides everything by about the device count. The
  paper's `layer` schedule (`adjoint_paper`, `truncated`) holds full streams on every stage
  (its layer inputs, `g`), so it divides little; the exact `adjoint` runs `layer` as a
  wavefront over time chunks that stores no `T × P` stream at all (each device keeps its
  layer's `a, c, h` and chunk buffers), which leaves it far below a third.
- `ssm-32m` (K = 16, P = 512, N = 960): the paper's regime (N > P, many layers; its worked
  example has P = 128, N = 225): the stored per-layer states dominate, and `layer` divides
  them by the device count (paper §4.4: "close to Mem/Υ"). `sequence` divides the states and
  streams but not the replicated parameters and their gradients.
"""

from __future__ import annotations

import os

# Four simulated devices: must be set before JAX starts (read when jax is imported).
os.environ.setdefault("JAX_NUM_CPU_DEVICES", "4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402
from jax.sharding import AxisType  # noqa: E402

from adjoint_lab import ssm  # noqa: E402
from adjoint_lab.core import compiled_memory  # noqa: E402
from experiments.report import Report  # noqa: E402

NAME = "ssm_layouts"
MB = 1e6
DEVICES = 4
TARGET = 1 / 3  # per-device memory at most a third of one device's

# (preset, method, window, layouts): every row is compared with the same method on one device.
Plan = tuple[tuple[str, str, int | None, tuple[str, ...]], ...]
PLAN: Plan = (
    ("ssm-ref", "adjoint", None, ("layer", "sequence")),
    ("ssm-ref", "backprop", None, ("sequence",)),
    ("ssm-ref", "adjoint_paper", None, ("layer",)),
    ("ssm-ref", "truncated", 1024, ("layer",)),
    ("ssm-32m", "adjoint", None, ("layer", "sequence")),
    ("ssm-32m", "adjoint_paper", None, ("layer",)),
)


# quick: a 4-layer tiny model (the layer layout needs K divisible by the 4 devices).
QUICK_PLAN: Plan = (
    ("ssm-tiny-4", "adjoint", None, ("layer", "sequence")),
    ("ssm-tiny-4", "backprop", None, ("sequence",)),
)
PROFILES: dict[str, tuple[Plan, int]] = {
    "quick": (QUICK_PLAN, 256),
    "cpu": (PLAN, 2**14),
    "gpu": (PLAN, 2**16),
}


def model_config(name: str) -> ssm.SSMConfig:
    if name == "ssm-tiny-4":
        return ssm.preset("ssm-tiny").replace(num_layers=4)
    return ssm.preset(name)


def abstract_weights(config: ssm.SSMConfig) -> dict[str, Any]:
    """The weights as `ShapeDtypeStruct`s (no memory is allocated)."""
    model = nnx.eval_shape(lambda: ssm.SSMLM(config, rngs=nnx.Rngs(0)))
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
        nnx.to_pure_dict(nnx.state(model, nnx.Param)),
    )


def layout_mesh(layout: str) -> jax.sharding.Mesh:
    devices = jax.devices()[:DEVICES]
    return jax.make_mesh((DEVICES,), (layout,), axis_types=(AxisType.Auto,), devices=devices)


def measure(
    config: ssm.SSMConfig, method: ssm.AbstractSSMGradient, context: int, layout: str | None
) -> tuple[float, float, float]:
    """`(total MB, temp MB, compile s)` per device."""
    mesh = None if layout is None else layout_mesh(layout)
    fn = ssm.gradient_function(config, method, context, mesh, layout)
    tokens = jax.ShapeDtypeStruct((1, context + 1), jnp.int32)
    start = time.perf_counter()
    report = compiled_memory(fn, abstract_weights(config), tokens)
    return report.total / MB, report.temp / MB, time.perf_counter() - start


def ratio_figure(rows: list[list[Any]]) -> Any:
    """Bars of per-device memory ÷ one device's, one per (model, method, layout)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    split = [r for r in rows if r[2] != "one device"]
    labels = [f"{r[0]}\n{r[1]}\n{r[2]}" for r in split]
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(split)), 3.8))
    colors = ["tab:blue" if r[2] == "layer" else "tab:orange" for r in split]
    ax.bar(range(len(split)), [r[6] for r in split], color=colors)
    ax.axhline(TARGET, color="k", linestyle="--", linewidth=1, label="target 1/3")
    ax.axhline(1 / DEVICES, color="gray", linestyle=":", linewidth=1, label=f"1/{DEVICES}")
    ax.set_xticks(range(len(split)), labels, fontsize=7)
    ax.set_ylabel("per-device ÷ one device")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=list(PROFILES), default="cpu")
    parser.add_argument("--context", type=int, default=None, help="tokens per sequence")
    parser.add_argument("--out", default=None, help="results folder (default results/)")
    args = parser.parse_args(argv)
    if jax.device_count() < DEVICES:
        raise SystemExit(f"needs {DEVICES} devices (JAX_NUM_CPU_DEVICES), got {jax.device_count()}")
    plan, default_context = PROFILES[args.profile]
    context = args.context or default_context
    command = f"python -m experiments.ssm_layouts --profile {args.profile}" + (
        f" --context {context}" if context != default_context else ""
    )
    report = Report(
        NAME, f"SSM layouts: per-device gradient memory on {DEVICES} devices", command, args.out
    )
    report.text(__doc__.split("\n\n", 2)[2])
    columns = [
        "model",
        "method",
        "layout",
        "T",
        "per-device MB",
        "temp MB",
        "vs one device",
        f"≤ 1/{round(1 / TARGET)}",
        "compile s",
    ]
    rows = []
    for preset, method, window, layouts in plan:
        config = model_config(preset)
        options = {} if window is None else {"window": window}
        gradient = ssm.gradient_method(method, **options)
        label = f"{method}(W={window})" if window else method
        single, single_temp, seconds = measure(config, gradient, context, None)
        rows.append([preset, label, "one device", context, single, single_temp, 1.0, "", seconds])
        print(rows[-1], flush=True)
        for layout in layouts:
            total, temp, seconds = measure(config, gradient, context, layout)
            ratio = total / single
            met = "yes" if ratio <= TARGET else "no"
            rows.append([preset, label, layout, context, total, temp, ratio, met, seconds])
            print(rows[-1], flush=True)
    report.section("Per-device compile-time memory (batch 1)")
    report.table(columns, rows, key="memory")
    report.figure(ratio_figure(rows), f"{NAME}.png", "per-device memory ÷ one device's")
    report.text(
        "Models: "
        + "; ".join(
            f"`{name}` K={c.num_layers}, P={c.width}, N={c.state_size}, V={c.vocab_size}, "
            f"{c.param_dtype}"
            for name, c in ((n, model_config(n)) for n in sorted({p[0] for p in plan}))
        )
        + '. `layer`: layers split over a 4-device `"layer"` axis (`adjoint_paper`, '
        "`truncated`: the paper's schedule, pipelined forward, g broadcast once, per-device "
        "VJPs; exact `adjoint`: a wavefront over time chunks both ways, the cotangent G handed "
        "back chunk by chunk). `sequence`: time split over a 4-device "
        '`"sequence"` axis (boundary states exchanged per layer, psum of the gradients).'
    )
    print(report.write())


if __name__ == "__main__":
    main()
