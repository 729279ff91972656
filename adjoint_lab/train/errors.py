"""Errors the training loop raises for conditions a user must act on."""


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or inf; the last good state was checkpointed before stopping."""

    def __init__(self, step: int, loss: float, checkpoint_dir: str):
        self.step = step
        self.loss = loss
        super().__init__(
            f"loss is {loss} at step {step}; stopped. The last good state (before step {step}) "
            f"is checkpointed in {checkpoint_dir}. Lower optim.lr, enable optim.clip_norm or "
            "tighten the solver tolerances, then resume with train.resume=<that directory>."
        )


class CheckpointError(RuntimeError):
    """No usable checkpoint where one was expected (corrupted, or from another model)."""
