"""Shapes of the selective SSM language model and its named presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = ["PRESETS", "SSMConfig", "count_parameters", "preset"]


@dataclass(frozen=True)
class SSMConfig:
    """The shapes of `SSMLM`.

    **Fields:**

    - `vocab_size`: `V`, the number of token ids (256 for bytes).
    - `width`: `P`, the width of the residual stream.
    - `state_size`: `N`, the size of each layer's diagonal recurrent state.
    - `num_layers`: `K`.
    - `param_dtype`: the dtype of the parameters and of the computation
        (`"float32"`, `"float64"` for gradient checks, `"bfloat16"`).
    - `norm_eps`: the epsilon of every RMSNorm.
    """

    vocab_size: int = 256
    width: int = 256
    state_size: int = 16
    num_layers: int = 4
    param_dtype: str = "float32"
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        for name in ("vocab_size", "width", "state_size", "num_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"SSMConfig.{name} must be a positive int, got {value!r}.")
        if self.param_dtype not in ("float32", "float64", "bfloat16", "float16"):
            raise ValueError(
                f"SSMConfig.param_dtype must be one of float32, float64, bfloat16, float16; "
                f"got {self.param_dtype!r}."
            )
        if not self.norm_eps > 0:
            raise ValueError(f"SSMConfig.norm_eps must be > 0, got {self.norm_eps!r}.")

    def replace(self, **changes: object) -> SSMConfig:
        return dataclasses.replace(self, **changes)


def count_parameters(config: SSMConfig) -> int:
    """The number of parameters of `SSMLM(config)`, from the shapes alone."""
    V, P, N, K = config.vocab_size, config.width, config.state_size, config.num_layers
    # per layer: RMSNorm gain P; the maps 𝒜, ℬ, 𝒞 (P×N kernels + N biases); output N×P.
    per_layer = P + 3 * (P * N + N) + N * P
    return V * P + K * per_layer + P + P * V


# The paper (Xu et al. 2025, Figure 1) trains 32M–1.27B SSMs but gives no shapes. These keep
# its byte-free setting out of the count (a 256-symbol vocabulary, so embedding and head are
# a small share) and size the layers so that the totals match: depth and width follow the
# Mamba family at similar sizes, and the state is wider than the stream (N > P), as in the
# paper's own worked example (P = 128, N = 225, §4.5).
PRESETS: dict[str, SSMConfig] = {
    "ssm-tiny": SSMConfig(vocab_size=32, width=16, state_size=4, num_layers=2),
    "ssm-ref": SSMConfig(vocab_size=256, width=256, state_size=16, num_layers=4),
    "ssm-32m": SSMConfig(vocab_size=256, width=512, state_size=960, num_layers=16),
    "ssm-63m": SSMConfig(vocab_size=256, width=640, state_size=1024, num_layers=24),
    "ssm-127m": SSMConfig(vocab_size=256, width=768, state_size=1280, num_layers=32),
    "ssm-225m": SSMConfig(vocab_size=256, width=1024, state_size=1376, num_layers=40),
    "ssm-1.27b": SSMConfig(vocab_size=256, width=2048, state_size=2432, num_layers=64),
}


def preset(name: str, **changes: object) -> SSMConfig:
    """A named preset (see `PRESETS`), optionally with some fields replaced."""
    if name not in PRESETS:
        raise ValueError(f"Unknown SSM preset {name!r}; choose one of {sorted(PRESETS)}.")
    return PRESETS[name].replace(**changes)
