"""The validated shape of a DAG: frozen dataclasses, built only by `parsing`."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import timedelta
from typing import Any


@dataclasses.dataclass(frozen=True)
class SecretRef:
    """An environment value read from a Kubernetes Secret, never written down."""

    secret: str
    key: str


EnvValue = str | SecretRef


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    name: str
    command: tuple[str, ...]
    image: str
    args: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    env: Mapping[str, EnvValue] = dataclasses.field(default_factory=dict)
    namespace: str | None = None
    service_account: str | None = None
    resources: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    retries: int = 0
    retry_delay: timedelta = timedelta(minutes=1)
    timeout: timedelta | None = None
    description: str = ""

    @property
    def max_attempts(self) -> int:
        return self.retries + 1


@dataclasses.dataclass(frozen=True)
class DagSpec:
    name: str
    tasks: Mapping[str, TaskSpec]
    path: str = ""
    description: str = ""
    owner: str = ""
    schedule: str | None = None
    timezone: str = "UTC"
    catchup: bool = False
    concurrency: str = "allow"
    alerts_slack: str | None = None

    def downstream_of(self, task: str) -> set[str]:
        """Return every task that needs `task`, directly or not."""
        found: set[str] = set()
        frontier = [task]
        while frontier:
            current = frontier.pop()
            for other in self.tasks.values():
                if current in other.needs and other.name not in found:
                    found.add(other.name)
                    frontier.append(other.name)
        return found
