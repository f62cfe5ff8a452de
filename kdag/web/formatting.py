"""Jinja filters: how times, durations, commits and schedules read in the UI.

Times arrive as the ISO-8601 UTC strings of `kdag.reading` and are shown in
the same form, to the second (`2024-06-03T10:00:00Z`), so what the UI shows
is what the API and the logs say.
"""

from __future__ import annotations

import functools
from datetime import datetime

from flask import Flask


def register(app: Flask) -> None:
    """Add the filters to `app`'s Jinja environment, and tidy its output."""
    app.jinja_env.trim_blocks = True
    app.jinja_env.lstrip_blocks = True
    app.jinja_env.filters.update(
        when=when,
        duration=duration,
        short_commit=short_commit,
        cron_words=cron_words,
    )


def when(moment: str | None) -> str:
    """Return an ISO time cut to the second, or a dash if there is none."""
    if not moment:
        return "—"
    return moment[:19] + "Z" if len(moment) > 19 else moment


def duration(start: str | None, end: str | None) -> str:
    """Return the time from `start` to `end` as `1h 02m`, `3m 05s` or `12s`."""
    if not start or not end:
        return "—"
    seconds = int((_parse(end) - _parse(start)).total_seconds())
    hours, rest = divmod(max(seconds, 0), 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {seconds:02d}s"
    return f"{seconds}s"


def short_commit(commit: str | None) -> str:
    return commit[:12] if commit else "—"


@functools.lru_cache(maxsize=256)
def cron_words(expression: str | None) -> str:
    """Say a cron expression in words."""
    if not expression:
        return "manual only"
    from kdag.specs.cron import describe

    return describe(expression)


def _parse(moment: str) -> datetime:
    return datetime.fromisoformat(moment.replace("Z", "+00:00"))
