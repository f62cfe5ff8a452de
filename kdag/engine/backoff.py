"""Per-item back-off, so the loop skips an item that keeps failing for a while."""

from __future__ import annotations

from collections.abc import Hashable
from datetime import datetime, timedelta


class Backoff:
    """Delays per item that double with each failure, from `first` up to `most`."""

    def __init__(self, *, first: timedelta, most: timedelta) -> None:
        self.first = first
        self.most = most
        self._waits: dict[Hashable, tuple[datetime, timedelta]] = {}  # until, delay

    def is_waiting(self, item: Hashable, now: datetime) -> bool:
        """Return whether `item` failed and its delay is not over yet."""
        wait = self._waits.get(item)
        return wait is not None and now < wait[0]

    def failed(self, item: Hashable, now: datetime) -> timedelta:
        """Record a failure of `item`; return how long it is left alone."""
        seen = self._waits.get(item)
        delay = min(seen[1] * 2, self.most) if seen else self.first
        self._waits[item] = (now + delay, delay)
        return delay

    def succeeded(self, item: Hashable) -> None:
        self._waits.pop(item, None)
