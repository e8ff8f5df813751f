"""Errors that end a job with one clear message and exit status 2 (bad arguments, configuration, input)."""


class UsageError(Exception):
    """A problem the user must fix before any work starts: bad arguments, configuration or input files."""


class ConfigError(UsageError):
    """An invalid configuration file or ``--set`` override."""


class CatalogError(UsageError):
    """A catalog file that cannot be read or lacks required columns."""
