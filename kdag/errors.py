"""Every error kdag raises on purpose, split by what the caller should do.

    KdagError
    ├── SpecError          a DAG file is wrong: carries path, line, column, field
    ├── SpecErrors         every problem of one file at once (a list of SpecError)
    ├── ConfigError        a setting is wrong: fix the flag or variable and restart
    ├── TemporaryError     worth retrying after `delay_s` (git, S3, Kubernetes, Slack)
    └── PermanentError     retrying will not help (a rejected pod, an unknown DAG)
        └── NotFound       the thing asked for does not exist

Foreign errors (gitpython, boto3, kubernetes, slack-sdk) are translated into
these at one place per boundary, with `raise ... from exc`.
"""

from __future__ import annotations


class KdagError(Exception):
    """The root of every error kdag raises on purpose."""


class SpecError(KdagError):
    """One problem in one DAG file, located at a line and column (1-based)."""

    def __init__(
        self, message: str, *, path: str, line: int = 1, col: int = 1, field: str = ""
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.line = line
        self.col = col
        self.field = field

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.message}"


class SpecErrors(KdagError):
    """All the problems found in one DAG file."""

    def __init__(self, errors: list[SpecError]) -> None:
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors


class ConfigError(KdagError):
    """A setting is missing or wrong."""


class TemporaryError(KdagError):
    """A failure that may pass: try again after `delay_s` seconds."""

    def __init__(self, message: str, *, delay_s: float = 5.0) -> None:
        super().__init__(message)
        self.delay_s = delay_s


class PermanentError(KdagError):
    """A failure that retrying will not fix."""


class NotFound(PermanentError):
    """The DAG, run, task or attempt asked for does not exist."""
