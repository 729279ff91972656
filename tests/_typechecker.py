"""The runtime checker `ADJOINT_LAB_TYPECHECK=1` installs (tests/conftest.py): beartype with
PEP 484's numeric tower, so that an `int` passes for a `float` and a `float` for a `complex`, as
the typing spec and the static checker read those annotations."""

from beartype import BeartypeConf, beartype

checked = beartype(conf=BeartypeConf(is_pep484_tower=True))
