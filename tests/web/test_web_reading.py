"""The read-only queries of `kdag.reading`, on SQLite and PostgreSQL.

Real parts: the databases of the `db` fixture; runs are created by the real
engine's trigger (not advanced: these tests read, they do not run tasks).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from kdag import reading
from kdag.errors import NotFound
from tests.web.webstate import QUICK, Controller, add_dag


@contextmanager
def counted_queries(db: sa.Engine) -> Iterator[list[str]]:
    """Collect the SQL statements `db` runs inside the block."""
    statements: list[str] = []

    def count(*args: Any) -> None:
        statement = args[2]
        if not statement.lstrip().upper().startswith(("BEGIN", "ROLLBACK")):
            statements.append(statement)

    sa.event.listen(db, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        sa.event.remove(db, "before_cursor_execute", count)


def test_times_are_iso_in_utc_with_a_z() -> None:
    new_york = timezone(timedelta(hours=-5))
    moment = datetime(2024, 6, 3, 1, 0, tzinfo=new_york)

    assert reading.iso(moment) == "2024-06-03T06:00:00Z"
    assert reading.iso(moment.replace(microsecond=5)) == "2024-06-03T06:00:00.000005Z"
    assert reading.iso(None) is None


def test_the_dashboard_listing_takes_the_same_queries_for_any_number_of_dags(
    db: sa.Engine, controller: Controller
) -> None:
    add_dag(db, QUICK)
    controller.trigger("quick")
    with counted_queries(db) as few, db.connect() as conn:
        reading.list_dags(conn)

    for n in range(6):
        add_dag(db, QUICK.replace("name: quick", f"name: quick-{n}"))
        for _ in range(3):
            controller.trigger(f"quick-{n}")
    with counted_queries(db) as many, db.connect() as conn:
        listed = reading.list_dags(conn, runs_per_dag=2)

    assert len(many) == len(few) == 2
    assert len(listed) == 7
    assert all(len(dag["runs"]) == 2 for dag in listed if dag["name"] != "quick")


def test_a_run_reads_in_a_fixed_number_of_queries(
    db: sa.Engine, controller: Controller
) -> None:
    add_dag(db, QUICK)
    run_id = controller.trigger("quick")

    with counted_queries(db) as statements, db.connect() as conn:
        run = reading.get_run(conn, run_id)

    assert len(statements) == 3
    assert [t["name"] for t in run["tasks"]] == ["extract", "load"]
    assert run["is_active"] is True


@pytest.mark.parametrize(
    ("read", "says"),
    [
        (lambda conn: reading.get_dag(conn, "nope"), "no DAG named 'nope'"),
        (lambda conn: reading.get_run(conn, 404), "no run with id 404"),
        (lambda conn: reading.get_attempt(conn, 404, "x"), "no run with id 404"),
    ],
)
def test_unknown_things_raise_not_found(db: sa.Engine, read: Any, says: str) -> None:
    with db.connect() as conn, pytest.raises(NotFound, match=says):
        read(conn)


def test_no_sync_yet_reads_as_nothing(db: sa.Engine) -> None:
    with db.connect() as conn:
        status = reading.sync_status(conn)

    assert status == {
        "repo": None,
        "branch": None,
        "commit": None,
        "synced_at": None,
        "error": None,
        "errors": [],
    }


def test_a_queued_runs_times_are_absent_until_they_happen(
    db: sa.Engine, controller: Controller
) -> None:
    add_dag(db, QUICK)
    before = datetime.now(UTC)
    run_id = controller.trigger("quick")

    with db.connect() as conn:
        run = reading.get_run(conn, run_id)

    assert run["started_at"] is None and run["ended_at"] is None
    assert datetime.fromisoformat(run["logical_date"]) >= before
