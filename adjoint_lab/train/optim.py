"""optax optimisers and learning-rate schedules built from `OptimConfig`."""

from __future__ import annotations

import optax

from ..config.schema import OptimConfig


def make_schedule(config: OptimConfig, total_steps: int) -> optax.Schedule:
    """The learning rate as a function of the step."""
    if config.schedule == "constant":
        if config.warmup_steps == 0:
            return optax.constant_schedule(config.lr)
        return optax.linear_schedule(0.0, config.lr, config.warmup_steps)
    if config.schedule == "warmup_cosine":
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0,
            peak_value=config.lr,
            warmup_steps=config.warmup_steps,
            decay_steps=max(total_steps, config.warmup_steps + 1),
        )
    if config.schedule == "step":
        boundaries = {int(b): config.decay_factor for b in config.decay_boundaries}
        decay = optax.piecewise_constant_schedule(config.lr, boundaries)
        if config.warmup_steps == 0:
            return decay
        warmup = optax.linear_schedule(0.0, config.lr, config.warmup_steps)
        return optax.join_schedules([warmup, decay], [config.warmup_steps])
    raise AssertionError(f"unvalidated schedule {config.schedule!r}")


def make_optimizer(config: OptimConfig, total_steps: int) -> optax.GradientTransformation:
    """The optimiser of `config`, with global-norm clipping first when `clip_norm` is set."""
    schedule = make_schedule(config, total_steps)
    if config.name == "adam":
        base = optax.adam(schedule, b1=config.b1, b2=config.b2)
    elif config.name == "adamw":
        base = optax.adamw(schedule, b1=config.b1, b2=config.b2, weight_decay=config.weight_decay)
    elif config.name == "sgd":
        base = optax.sgd(schedule, momentum=config.momentum or None)
    else:
        raise AssertionError(f"unvalidated optimiser {config.name!r}")
    if config.clip_norm is None:
        return base
    return optax.chain(optax.clip_by_global_norm(config.clip_norm), base)
