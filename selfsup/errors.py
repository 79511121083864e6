"""The one error type for bad input: the CLI prints it as one line and exits with code 2."""


class ConfigError(ValueError):
    """A bad setting, path or file given by the user (reported as a one-line error)."""
