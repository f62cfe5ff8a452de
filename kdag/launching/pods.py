"""Pod names and labels: pure functions, shared by every launcher."""

from __future__ import annotations

import hashlib
import re

MANAGED_BY = "kdag"
_NOT_NAME = re.compile(r"[^a-z0-9-]+")
_NOT_LABEL = re.compile(r"[^A-Za-z0-9_.-]+")


def pod_name(dag: str, task: str, run_id: int, attempt: int) -> str:
    """Return `<dag>-<task>-<hash of run and attempt>`, a valid name of <= 63 chars."""
    digest = hashlib.sha256(f"{dag}\0{task}\0{run_id}\0{attempt}".encode()).hexdigest()
    base = _NOT_NAME.sub("-", f"{dag}-{task}".lower()).strip("-")
    return f"{base[: 63 - 9].rstrip('-')}-{digest[:8]}"


def label_value(value: str) -> str:
    """Make `value` a valid label value: <= 63 chars of [A-Za-z0-9_.-], alnum ends."""
    cleaned = _NOT_LABEL.sub("_", value)[:63]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", cleaned)


def pod_labels(dag: str, run_id: int, task: str, attempt: int) -> dict[str, str]:
    return {
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "kdag.dev/dag": label_value(dag),
        "kdag.dev/run": str(run_id),
        "kdag.dev/task": label_value(task),
        "kdag.dev/attempt": str(attempt),
    }
