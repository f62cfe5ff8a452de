"""Launchers run one task attempt each: a pod (`kubernetes`) or a process (`local`).

The engine hands a launcher a `Launch` and goes on. When the attempt ends, the
launcher saves its log through the log store and reports an `AttemptEnded` to
the callback it was built with (from its own thread). The engine never waits
on a launcher: that is what lets it react to a task's end at once.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

from kdag.specs.model import EnvValue, TaskSpec


@dataclasses.dataclass(frozen=True)
class Launch:
    """Everything needed to run one attempt of one task."""

    attempt_id: int
    dag: str
    run_id: int
    task: str
    attempt: int  # 1 for the first try
    name: str  # the pod name; also names the local process in logs
    spec: TaskSpec
    env: Mapping[str, EnvValue]  # the task's env plus the KDAG_* variables
    namespace: str
    labels: Mapping[str, str]
    log_key: str
    workdir: Path | None = None  # local launcher: where the DAG's files are


@dataclasses.dataclass(frozen=True)
class AttemptEnded:
    """What a launcher reports when an attempt is over."""

    attempt_id: int
    is_success: bool
    exit_code: int | None
    reason: str  # Completed, Error, OOMKilled, Timeout, ErrImagePull, StartError...
    message: str = ""


Report = Callable[[AttemptEnded], None]
OutputLine = Callable[[Launch, str], None]


class Launcher(Protocol):
    """The seam between the engine and whatever runs containers."""

    name: str

    def start(self, launch: Launch) -> str:
        """Start the attempt; return its external id (pod name, pid).

        Raises TemporaryError if it could not be started now, PermanentError if
        it never can be (the engine then fails the attempt with that reason).
        """
        ...

    def stop(self, attempt_id: int, reason: str) -> None:
        """Stop a running attempt; it then ends with `reason` (Timeout, Canceled)."""
        ...

    def close(self) -> None:
        """Stop every attempt this launcher still runs, and release resources."""
        ...


_VAR = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")


def expand_vars(text: str, env: Mapping[str, str]) -> str:
    """Expand $(VAR) as Kubernetes does: $$ is a literal $, unknown names stay."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _VAR.sub(replace, text)
