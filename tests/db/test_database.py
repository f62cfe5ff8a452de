"""The database layer on real SQLite files and the real PostgreSQL server."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from kdag import db as kdb
from kdag.db.schema import alerts, metadata
from tests.conftest import PG_ADMIN_URL

NOW = datetime(2024, 7, 1, tzinfo=UTC)


def test_the_migrations_create_exactly_the_tables_the_code_uses(db: sa.Engine) -> None:
    with db.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    assert differences == []


def test_migrating_twice_changes_nothing(db: sa.Engine) -> None:
    kdb.migrate(db)
    with db.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []


def test_times_come_back_as_aware_utc(db: sa.Engine) -> None:
    with db.begin() as conn:
        conn.execute(
            alerts.insert().values(
                payload={"a": 1}, created_at=NOW, tries=0, next_try_at=NOW
            )
        )
    with db.connect() as conn:
        row = conn.execute(sa.select(alerts)).one()
    assert row.created_at == NOW and row.created_at.tzinfo is not None
    assert row.payload == {"a": 1}


def test_two_sqlite_writers_at_once_never_see_database_is_locked(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    first, second = kdb.connect(url), kdb.connect(url)  # as a controller and a web
    kdb.migrate(first)
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def write(engine: sa.Engine) -> None:
        start.wait()
        try:
            for _ in range(100):
                with engine.begin() as conn:
                    conn.execute(sa.select(sa.func.count()).select_from(alerts))
                    conn.execute(
                        alerts.insert().values(
                            payload={}, created_at=NOW, tries=0, next_try_at=NOW
                        )
                    )
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=write, args=(e,)) for e in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with first.connect() as conn:
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(alerts)).scalar() == 200
        )


def test_a_dropped_postgresql_connection_costs_one_retry_not_a_failure(
    pg_url: str,
) -> None:
    engine = kdb.connect(pg_url)
    kdb.migrate(engine)
    name = sa.make_url(pg_url).database

    # The server drops every connection, as a restart does.
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        dropped = conn.execute(
            sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = :name AND pid <> pg_backend_pid()"
            ),
            {"name": name},
        ).scalar()
    admin.dispose()
    assert dropped >= 1

    def write() -> int:
        with engine.begin() as conn:
            conn.execute(
                alerts.insert().values(
                    payload={}, created_at=NOW, tries=0, next_try_at=NOW
                )
            )
            return int(
                conn.execute(
                    sa.select(sa.func.count()).select_from(alerts)
                ).scalar_one()
            )

    assert kdb.with_retry(write) == 1
    engine.dispose()


def test_processes_starting_at_once_on_an_empty_database_take_turns_migrating(
    db_url: str,
) -> None:
    # Four processes, as a controller, a second one and the web starting together.
    script = (
        "import sys; from kdag import db; e = db.connect(sys.argv[1]); db.migrate(e)"
    )
    started = [
        subprocess.Popen(
            [sys.executable, "-c", script, db_url],
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    errors = [p.communicate(timeout=120)[1] for p in started]
    assert [p.returncode for p in started] == [0, 0, 0, 0], errors
