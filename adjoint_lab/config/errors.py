"""The one exception type raised for invalid configuration values."""


class ConfigError(ValueError):
    """An invalid configuration value.

    The message always names the field (dotted path) and what would be accepted, so the CLI can
    print it as one line instead of a traceback.
    """

    def __init__(self, field: str, value: object, allowed: str):
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(f"{field}={value!r} is invalid: {allowed}")

    def __reduce__(self):
        # Rebuilt from its fields, not its message: a parallel sweep's worker (joblib, Slurm)
        # sends a failed job's error back pickled.
        return (type(self), (self.field, self.value, self.allowed))

    def under(self, prefix: str) -> "ConfigError":
        """The same error with its field placed under a parent section, e.g. `optim.lr`."""
        return ConfigError(f"{prefix}.{self.field}", self.value, self.allowed)


def require(ok: bool, field: str, value: object, allowed: str) -> None:
    """Raise `ConfigError(field, value, allowed)` unless `ok`."""
    if not ok:
        raise ConfigError(field, value, allowed)


def require_one_of(field: str, value: object, choices: tuple[str, ...]) -> None:
    require(value in choices, field, value, f"choose one of {', '.join(choices)}")


def require_at_least(config: object, minimum: float, *fields: str, why: str = "") -> None:
    """Each named field of `config` must be >= `minimum` (`why` is added to the message)."""
    for field in fields:
        value = getattr(config, field)
        require(value >= minimum, field, value, f"must be >= {minimum}{why}")


def require_positive(config: object, *fields: str) -> None:
    """Each named field of `config` must be > 0."""
    for field in fields:
        value = getattr(config, field)
        require(value > 0, field, value, "must be > 0")
