"""Cron in a time zone, pinned with dated cases, and checked against cronsim
(a second, independent implementation) over a year of fire times."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim

from kdag.specs.cron import (
    cron_problem,
    fire_times,
    next_fire_times,
    previous_fire_time,
)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def test_weekday_mornings_in_new_york_follow_the_offset_change() -> None:
    ticks = next_fire_times(
        "0 6 * * 1-5", "America/New_York", after=utc(2024, 3, 8), count=2
    )
    assert ticks == [utc(2024, 3, 8, 11), utc(2024, 3, 11, 10)]  # EST, then EDT


def test_a_time_skipped_by_spring_forward_fires_once_right_after_the_gap() -> None:
    ticks = list(
        fire_times(
            "30 2 * * *",
            "America/New_York",
            after=utc(2024, 3, 9),
            until=utc(2024, 3, 12),
        )
    )
    # 02:30 EST, then 03:00 EDT (02:30 did not exist), then 02:30 EDT
    assert ticks == [
        utc(2024, 3, 9, 7, 30),
        utc(2024, 3, 10, 7),
        utc(2024, 3, 11, 6, 30),
    ]


def test_a_time_repeated_by_fall_back_fires_only_once() -> None:
    ticks = list(
        fire_times(
            "30 1 * * *",
            "America/New_York",
            after=utc(2024, 11, 2, 12),
            until=utc(2024, 11, 4, 12),
        )
    )
    assert ticks == [utc(2024, 11, 3, 5, 30), utc(2024, 11, 4, 6, 30)]


@pytest.mark.parametrize(
    ("expression", "before", "expected"),
    [
        # Monday 06:00 New York (EDT): the tick before is Friday's, in EST.
        ("0 6 * * 1-5", utc(2024, 3, 11, 10), utc(2024, 3, 8, 11)),
        ("* * * * *", utc(2024, 3, 11, 10, 0, 30), utc(2024, 3, 11, 10)),
        ("0 0 29 2 *", utc(2104, 2, 29, 5), utc(2096, 2, 29, 5)),  # 2100 skips it
    ],
)
def test_the_tick_before_is_found_however_far_back(
    expression: str, before: datetime, expected: datetime
) -> None:
    found = previous_fire_time(expression, "America/New_York", before=before)
    assert found == expected


def test_asking_for_no_fire_times_gets_none() -> None:
    assert next_fire_times("@hourly", "UTC", after=utc(2024, 1, 1), count=0) == []


def test_fire_times_are_strictly_after_the_start_and_up_to_the_end() -> None:
    ticks = list(
        fire_times("@hourly", "UTC", after=utc(2024, 1, 1, 1), until=utc(2024, 1, 1, 3))
    )
    assert ticks == [utc(2024, 1, 1, 2), utc(2024, 1, 1, 3)]


@pytest.mark.parametrize(
    "expression", ["0 6 * * *", "*/15 * * * *", "@daily", "0 0 1 * *", "5 4 * * sun"]
)
def test_valid_expressions_have_no_problem(expression: str) -> None:
    assert cron_problem(expression) is None


@pytest.mark.parametrize(
    "expression",
    ["0 25 * * *", "* * *", "@fortnightly", "0 0 6 * * *", "every day", "R 6 * * *"],
)
def test_invalid_expressions_say_why(expression: str) -> None:
    assert cron_problem(expression)


def test_an_invalid_field_is_named_with_its_range() -> None:
    assert cron_problem("0 25 * * *") == (
        "'0 25 * * *' is not a valid cron expression: "
        "the hour (0-23) field '25' is out of range or malformed"
    )


@pytest.mark.parametrize("expression", ["0 0 31 2 *", "0 0 30 2 *", "0 0 31 4,6 *"])
def test_a_schedule_on_a_date_that_never_comes_never_fires(expression: str) -> None:
    assert cron_problem(expression) == (
        f"{expression!r} never fires (no such date, e.g. 31 February)"
    )


@pytest.mark.parametrize("expression", ["0 0 29 2 *", "0 0 31 2 mon", "0 0 L 2 *"])
def test_a_schedule_that_fires_only_some_years_is_valid(expression: str) -> None:
    assert cron_problem(expression) is None


@pytest.mark.parametrize(
    "zone", ["America/New_York", "Europe/London", "Asia/Kolkata", "Australia/Sydney"]
)
@pytest.mark.parametrize(
    "expression",
    ["0 6 * * 1-5", "15 9 1,15 * *", "0 0 * * 0", "45 23 * * *", "0 12 28 2 *"],
)
def test_a_year_of_fire_times_agrees_with_cronsim(expression: str, zone: str) -> None:
    # Fixed times well away from the DST changes (which happen between 00:00
    # and 03:00) must agree exactly.
    start = datetime(2024, 1, 1, tzinfo=ZoneInfo(zone))
    theirs = CronSim(expression, start)
    expected = [next(theirs).astimezone(UTC) for _ in range(60)]
    ours = next_fire_times(expression, zone, after=start.astimezone(UTC), count=60)
    assert ours == expected
