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

    def under(self, prefix: str) -> "ConfigError":
        """The same error with its field placed under a parent section, e.g. `optim.lr`."""
        return ConfigError(f"{prefix}.{self.field}", self.value, self.allowed)
