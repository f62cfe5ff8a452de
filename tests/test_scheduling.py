"""Schedules becoming runs, on SQLite and PostgreSQL (real databases), with a
clock the test moves. The launcher is the real local one; no task runs here."""

from __future__ import annotations

import dataclasses
import logging
import queue
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from kdag import scheduling
from kdag.db.schema import dags, runs
from kdag.engine import Engine
from kdag.launching.local import LocalLauncher
from kdag.logstore import open_store
from kdag.scheduling import dag_backoff, schedule_due_runs
from kdag.specs.model import DagSpec
from tests.fakes.catalog import add_dag

DAILY_NY = """\
name: daily
schedule: "0 6 * * *"
timezone: America/New_York
catchup: {catchup}
concurrency: {concurrency}
defaults: {{image: busybox}}
tasks:
  only: {{command: ["true"]}}
"""


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def make_engine(db: sa.Engine, clock: Clock, tmp_path: Path) -> Engine:
    logs = open_store(tmp_path.joinpath("logs").as_uri(), spool_dir=tmp_path / "spool")
    events: queue.Queue = queue.Queue()
    launcher = LocalLauncher(report=events.put, logs=logs)
    return Engine(db, launcher, logs, events=events, controller_id="test", clock=clock)


def scheduled(db: sa.Engine) -> list[tuple[datetime, datetime, str]]:
    with db.connect() as conn:
        rows = conn.execute(sa.select(runs).order_by(runs.c.logical_date)).all()
    return [(r.data_interval_start, r.logical_date, r.trigger) for r in rows]


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def test_a_new_dag_runs_first_at_its_next_tick_in_its_time_zone(
    db: sa.Engine, tmp_path: Path
) -> None:
    clock = Clock(utc(2024, 7, 1, 9))  # 05:00 in New York (EDT)
    add_dag(db, DAILY_NY.format(catchup="false", concurrency="allow"), now=clock.now)
    engine = make_engine(db, clock, tmp_path)

    assert schedule_due_runs(engine, clock.now) == 0
    clock.now = utc(2024, 7, 1, 10, 0, 1)  # just after 06:00 New York
    assert schedule_due_runs(engine, clock.now) == 1
    # Its data interval is the whole day before, from the previous 06:00.
    assert scheduled(db)[-1] == (utc(2024, 6, 30, 10), utc(2024, 7, 1, 10), "schedule")


def test_each_tick_is_created_once_even_across_a_restart(
    db: sa.Engine, tmp_path: Path
) -> None:
    clock = Clock(utc(2024, 7, 1, 9))
    add_dag(db, DAILY_NY.format(catchup="false", concurrency="allow"), now=clock.now)
    clock.now = utc(2024, 7, 1, 11)
    assert schedule_due_runs(make_engine(db, clock, tmp_path), clock.now) == 1

    # A second controller (or this one restarted) sees the same tick: nothing new.
    again = make_engine(db, clock, tmp_path)
    assert schedule_due_runs(again, clock.now) == 0
    assert len(scheduled(db)) == 1


def test_without_catchup_a_controller_that_was_down_creates_only_the_latest_run(
    db: sa.Engine, tmp_path: Path
) -> None:
    clock = Clock(utc(2024, 7, 1, 9))
    add_dag(db, DAILY_NY.format(catchup="false", concurrency="allow"), now=clock.now)
    clock.now = utc(2024, 7, 5, 12)  # down for four days

    assert schedule_due_runs(make_engine(db, clock, tmp_path), clock.now) == 1
    (only,) = scheduled(db)
    assert only[1] == utc(2024, 7, 5, 10)
    assert only[0] == utc(2024, 7, 4, 10)  # its data interval starts at the tick before


def test_with_catchup_every_missed_tick_becomes_a_run(
    db: sa.Engine, tmp_path: Path
) -> None:
    clock = Clock(utc(2024, 7, 1, 9))
    add_dag(db, DAILY_NY.format(catchup="true", concurrency="allow"), now=clock.now)
    clock.now = utc(2024, 7, 5, 12)

    assert schedule_due_runs(make_engine(db, clock, tmp_path), clock.now) == 5
    assert [r[1].day for r in scheduled(db)] == [1, 2, 3, 4, 5]


def test_a_long_catchup_comes_in_batches_oldest_first_with_chained_intervals(
    db: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scheduling, "CATCHUP_LIMIT", 3)
    clock = Clock(utc(2024, 7, 1, 9))
    add_dag(db, DAILY_NY.format(catchup="true", concurrency="allow"), now=clock.now)
    clock.now = utc(2024, 7, 5, 12)
    engine = make_engine(db, clock, tmp_path)

    assert schedule_due_runs(engine, clock.now) == 3
    assert [r[1].day for r in scheduled(db)] == [1, 2, 3]
    assert schedule_due_runs(engine, clock.now) == 2
    found = scheduled(db)
    assert [r[1].day for r in found] == [1, 2, 3, 4, 5]
    assert all(found[i][0] == found[i - 1][1] for i in range(1, 5))


def test_forbid_skips_a_tick_while_a_run_is_going(
    db: sa.Engine, tmp_path: Path
) -> None:
    clock = Clock(utc(2024, 7, 1, 9))
    add_dag(db, DAILY_NY.format(catchup="false", concurrency="forbid"), now=clock.now)
    engine = make_engine(db, clock, tmp_path)
    clock.now = utc(2024, 7, 1, 11)
    assert schedule_due_runs(engine, clock.now) == 1  # stays queued: nothing steps it

    clock.now = utc(2024, 7, 2, 11)
    assert schedule_due_runs(engine, clock.now) == 0
    # Once the first run is over, the skipped tick does not come back.
    with db.begin() as conn:
        conn.execute(runs.update().values(state="succeeded"))
    assert schedule_due_runs(engine, clock.now) == 0
    clock.now = utc(2024, 7, 3, 11)
    assert schedule_due_runs(engine, clock.now) == 1


def test_a_dag_without_a_schedule_never_runs_by_itself(
    db: sa.Engine, tmp_path: Path
) -> None:
    clock = Clock(utc(2024, 7, 1, 9))
    manual = DAILY_NY.format(catchup="false", concurrency="allow").replace(
        'schedule: "0 6 * * *"\n', ""
    )
    add_dag(db, manual, now=clock.now)
    clock.now = utc(2025, 7, 1)
    assert schedule_due_runs(make_engine(db, clock, tmp_path), clock.now) == 0


def test_an_inactive_dag_is_not_scheduled(db: sa.Engine, tmp_path: Path) -> None:
    clock = Clock(utc(2024, 7, 1, 9))
    add_dag(db, DAILY_NY.format(catchup="false", concurrency="allow"), now=clock.now)
    with db.begin() as conn:
        conn.execute(dags.update().values(is_active=False))
    clock.now = utc(2024, 7, 5)
    assert schedule_due_runs(make_engine(db, clock, tmp_path), clock.now) == 0


def test_a_dag_whose_schedule_croniter_cannot_follow_is_skipped_and_backed_off(
    db: sa.Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock(utc(2024, 7, 1, 9))
    broken = DAILY_NY.format(catchup="false", concurrency="allow")
    add_dag(db, broken.replace("name: daily", "name: broken"), now=clock.now)
    add_dag(db, DAILY_NY.format(catchup="false", concurrency="allow"), now=clock.now)
    engine = make_engine(db, clock, tmp_path)
    # The 31st of February: croniter fails to find a next date. The parser is
    # to reject it, so the engine is made to see it as a stored version could.
    read = engine.spec_of

    def spec_of(version_id: int, conn: sa.Connection | None = None) -> DagSpec:
        spec = read(version_id, conn)
        if spec.name == "broken":
            return dataclasses.replace(spec, schedule="0 0 31 2 *")
        return spec

    monkeypatch.setattr(engine, "spec_of", spec_of)
    backoff = dag_backoff()

    clock.now = utc(2024, 7, 1, 11)
    assert schedule_due_runs(engine, clock.now, backoff=backoff) == 1
    with db.connect() as conn:
        assert conn.execute(sa.select(runs.c.dag)).scalars().all() == ["daily"]
    (logged,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "dag=broken" in logged.getMessage() and logged.exc_info is not None

    # Left alone for a minute, then tried again.
    caplog.clear()
    assert schedule_due_runs(engine, utc(2024, 7, 1, 11, 0, 59), backoff=backoff) == 0
    assert caplog.records == []
    assert schedule_due_runs(engine, utc(2024, 7, 1, 11, 1), backoff=backoff) == 0
    assert ["dag=broken" in r.getMessage() for r in caplog.records] == [True]


def test_replace_cancels_the_run_still_going_and_starts_the_new_tick(
    db: sa.Engine, tmp_path: Path
) -> None:
    clock = Clock(utc(2024, 7, 1, 9))
    add_dag(db, DAILY_NY.format(catchup="false", concurrency="replace"), now=clock.now)
    engine = make_engine(db, clock, tmp_path)
    clock.now = utc(2024, 7, 1, 11)
    assert schedule_due_runs(engine, clock.now, cancel=engine.cancel_run) == 1

    # The next tick comes while the first run is still queued: it replaces it.
    clock.now = utc(2024, 7, 2, 11)
    assert schedule_due_runs(engine, clock.now, cancel=engine.cancel_run) == 1
    with db.connect() as conn:
        states = conn.execute(sa.select(runs.c.state).order_by(runs.c.id)).scalars()
        assert list(states) == ["canceled", "queued"]
