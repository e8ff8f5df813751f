"""Errors that end a job with one clear message and exit status 2 (bad arguments, configuration, input)."""


class UsageError(Exception):
    """A problem the user must fix before any work starts: bad arguments, configuration or input files."""


class ConfigError(UsageError):
    """An invalid configuration file or ``--set`` override."""


class CatalogError(UsageError):
    """A catalog file that cannot be read or lacks required columns."""


class RecordedError(Exception):
    """One image's failure, recorded rather than raised to the job: ``kind`` (one of the subclass's
    ``KINDS``) becomes the image's status, the message its error."""

    KINDS: tuple[str, ...] = ()

    def __init__(self, kind: str, message: str) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"unknown {type(self).__name__} kind {kind!r}")
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message
