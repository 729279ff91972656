"""Errors the training loop raises for conditions a user must act on."""


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or inf; the last good state was checkpointed before stopping."""

    def __init__(self, step: int, loss: float, checkpoint_dir: str):
        self.step = step
        self.loss = loss
        self.checkpoint_dir = checkpoint_dir
        super().__init__(
            f"loss is {loss} at step {step}; stopped. The last good state (before step {step}) "
            f"is checkpointed in {checkpoint_dir}. Lower optim.lr, enable optim.clip_norm or "
            "tighten the solver tolerances, then resume with train.resume=<that directory>."
        )

    def __reduce__(self):
        # A parallel sweep's worker sends a failed job's error back pickled.
        return (type(self), (self.step, self.loss, self.checkpoint_dir))


class CheckpointError(RuntimeError):
    """No usable checkpoint where one was expected (corrupted, or from another model)."""
