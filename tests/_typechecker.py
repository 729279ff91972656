"""The runtime checker `ADJOINT_LAB_TYPECHECK=1` installs (tests/conftest.py): beartype with
PEP 484's numeric tower, so that an `int` passes for a `float` and a `float` for a `complex`, as
the typing spec and the static checker read those annotations."""

import warnings

from beartype import BeartypeConf, beartype
from beartype.roar import BeartypeDecorHintPep585DeprecationWarning

# The PEP 585 warnings come from hints inside third-party types (omegaconf's DictConfig,
# flax's nnx.State; beartype names typing.MutableMapping, typing.Hashable), not from ours.
warnings.filterwarnings("ignore", category=BeartypeDecorHintPep585DeprecationWarning)

checked = beartype(conf=BeartypeConf(is_pep484_tower=True))
