"""Cron expressions read in a time zone, with daylight-saving changes handled.

croniter walks wall-clock times. We give it naive local times, so it never
sees an offset change, then place each wall-clock time on the UTC line:

- A time that does not exist (the skipped hour when clocks go forward) fires
  at the first instant after the gap, once.
- A time that occurs twice (the repeated hour when clocks go back) fires at
  its first occurrence only.

Fire times are returned as aware UTC datetimes, strictly increasing, so a tick
is a unique key for a run.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

MACROS = (
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
)


def cron_problem(expression: str) -> str | None:
    """Return why `expression` is not a usable cron expression, or None."""
    from croniter import croniter  # type: ignore[import-untyped]

    text = expression.strip()
    if text.startswith("@"):
        return None if text in MACROS else f"unknown cron macro {text!r}"
    if len(text.split()) != 5:
        return (
            f"{expression!r} is not a cron expression: it needs 5 fields "
            "(minute hour day-of-month month day-of-week)"
        )
    if not croniter.is_valid(text):
        return f"{expression!r} is not a valid cron expression{_bad_field(text)}"
    if any(field.upper().startswith("R") for field in text.split()):
        # croniter draws R afresh for every walker: the ticks would move.
        return f"{expression!r}: R (a random value) is not supported"
    if not _ever_fires(text):
        return f"{expression!r} never fires (no such date, e.g. 31 February)"
    return None


def _ever_fires(text: str) -> bool:
    """Tell whether `text` fires within the next nine years."""
    from croniter import CroniterBadDateError, croniter

    # NB: the 29th of February may be eight years away, across 2100.
    walker = croniter(text, datetime.now(), max_years_between_matches=9)
    try:
        walker.get_next(datetime)
    except CroniterBadDateError:
        return False
    return True


FIELDS = (
    "minute (0-59)",
    "hour (0-23)",
    "day of month (1-31)",
    "month (1-12 or jan-dec)",
    "day of week (0-7 or sun-sat)",
)


def _bad_field(text: str) -> str:
    """Say which field of a 5-field expression croniter refuses, if just one."""
    from croniter import croniter

    fields = text.split()
    bad = []
    for i, field in enumerate(fields):
        alone = ["*"] * 5
        alone[i] = field
        if not croniter.is_valid(" ".join(alone)):
            bad.append(f"the {FIELDS[i]} field {field!r}")
    return f": {' and '.join(bad)} is out of range or malformed" if bad else ""


def fire_times(
    expression: str, timezone: str, *, after: datetime, until: datetime
) -> Iterator[datetime]:
    """Yield the fire times in (after, until], as aware UTC datetimes."""
    for tick in _ticks(expression, timezone, after):
        if tick > until:
            return
        yield tick


def next_fire_times(
    expression: str, timezone: str, *, after: datetime, count: int
) -> list[datetime]:
    """Return the next `count` fire times after `after`."""
    return list(itertools.islice(_ticks(expression, timezone, after), max(count, 0)))


def previous_fire_time(
    expression: str, timezone: str, *, before: datetime
) -> datetime | None:
    """Return the last fire time strictly before `before`, or None in nine years."""
    # Look back over ever longer spans: an hour suits `* * * * *`, nine years
    # suits the 29th of February.
    for span in (
        timedelta(hours=1),
        timedelta(days=2),
        timedelta(days=32),
        timedelta(days=367),
        timedelta(days=9 * 366),
    ):
        found = None
        for tick in fire_times(expression, timezone, after=before - span, until=before):
            if tick < before:
                found = tick
        if found is not None:
            return found
    return None


def _ticks(expression: str, timezone: str, after: datetime) -> Iterator[datetime]:
    from croniter import croniter

    zone = ZoneInfo(timezone)
    expression = (
        "0 0 * * *" if expression.strip() == "@midnight" else expression.strip()
    )
    # Start three wall-clock hours early: the first instants after `after` may be
    # wall times that come before it on a day when the clocks go back.
    start = after.astimezone(zone).replace(tzinfo=None) - timedelta(hours=3)
    walker = croniter(expression, start)
    last: datetime | None = None
    while True:
        wall: datetime = walker.get_next(datetime)
        tick = _place(wall, zone)
        if tick <= after or (last is not None and tick <= last):
            continue
        last = tick
        yield tick


def _place(wall: datetime, zone: ZoneInfo) -> datetime:
    """Put a naive wall-clock time on the UTC line (see the module docstring)."""
    first = wall.replace(tzinfo=zone, fold=0)
    as_utc = first.astimezone(UTC)
    if as_utc.astimezone(zone).replace(tzinfo=None) == wall:
        return as_utc  # exists (first occurrence if repeated)
    # In a gap: find the transition instant between the two readings.
    low = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    high = as_utc
    low, high = min(low, high), max(low, high)
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(zone).utcoffset() == low.astimezone(zone).utcoffset():
            low = middle
        else:
            high = middle
    return high.replace(microsecond=0)


def describe(expression: str) -> str:
    """Say a cron expression in words (cron-descriptor), or echo it back."""
    try:
        from cron_descriptor import get_description

        return str(get_description(expression))
    except Exception:  # a description is a nicety, never a failure
        return expression
