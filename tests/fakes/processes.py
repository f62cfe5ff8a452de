"""Looking at real processes from a test."""

from __future__ import annotations

from pathlib import Path


def is_running(pid: int) -> bool:
    """Whether `pid` is alive: gone and zombie processes are not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
