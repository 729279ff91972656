"""A base for adaptive step-size controllers that wrap another one and carry extra state."""

from __future__ import annotations

import diffrax
import equinox as eqx


class WrappedAdaptiveController(diffrax.AbstractAdaptiveStepSizeController):
    """Forwards the tolerances and the norm to `controller`, and `wrap` to it too (keeping the
    wrapper), so that diffrax treats the wrapper as the adaptive controller it wraps (it reads
    rtol/atol, e.g. for an implicit solver's Newton tolerances). Subclasses write `init` and
    `adapt_step_size`, with the inner controller's state inside their own."""

    controller: diffrax.AbstractAdaptiveStepSizeController

    @property
    def rtol(self):
        return self.controller.rtol

    @property
    def atol(self):
        return self.controller.atol

    @property
    def norm(self):  # pyright: ignore[reportIncompatibleVariableOverride]
        return self.controller.norm

    def wrap(self, direction):
        return eqx.tree_at(lambda c: c.controller, self, self.controller.wrap(direction))
