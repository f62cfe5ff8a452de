"""The database: SQLite (embedded default, WAL mode) or PostgreSQL, by URL.

`connect(url)` gives a SQLAlchemy engine set up for kdag:

- SQLite: WAL journal, a 30 s busy timeout, and every transaction opened with
  BEGIN IMMEDIATE, so a controller and a web process writing at once wait
  for each other instead of failing with "database is locked".
- PostgreSQL: connections are pinged before use, so a restarted server costs
  at most the one request that was in flight; `with_retry` runs that again.

`migrate(engine)` brings the schema to the newest Alembic revision.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.pool import StaticPool

from kdag.errors import ConfigError, TemporaryError

logger = logging.getLogger(__name__)
T = TypeVar("T")
MIGRATION_LOCK = 0x6B646167  # "kdag": the advisory lock migrations take turns on


def connect(url: str) -> sa.Engine:
    """Return an engine for `url`, tuned as the module docstring says.

    Raises ConfigError for a URL that names no database kdag can use.
    """
    try:
        dialect = sa.make_url(url).get_backend_name()
    except exc.ArgumentError as error:
        raise ConfigError(f"database URL {url!r} is not a URL: {error}") from error
    if dialect == "sqlite":
        return _sqlite(url)
    if dialect != "postgresql":
        raise ConfigError(
            f"database URL must be sqlite:///path or postgresql://..., not {url!r}"
        )
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    try:
        return sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)
    except (exc.ArgumentError, ImportError) as error:
        raise ConfigError(f"database URL {url!r}: {error}") from error


def _sqlite(url: str) -> sa.Engine:
    is_memory = url in ("sqlite://", "sqlite:///:memory:")
    if not is_memory:
        folder = Path(sa.make_url(url).database or "").parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(
                f"cannot make the database's folder {folder}: {error}"
            ) from error
    options: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
    if is_memory:
        options["poolclass"] = StaticPool
    engine = sa.create_engine(url, **options)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        if not is_memory:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def migrate(engine: sa.Engine) -> None:
    """Create or upgrade the schema to the newest migration."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # NB: several processes may start at once on an empty database;
            # they take turns (SQLite's BEGIN IMMEDIATE already does that).
            connection.exec_driver_sql(
                f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"
            )
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def is_disconnect(error: BaseException) -> bool:
    """Tell whether a database error is a lost connection worth one retry."""
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, exc.OperationalError | exc.InterfaceError)


def with_retry(work: Callable[[], T], *, tries: int = 3, delay_s: float = 0.5) -> T:
    """Run `work`, again after a lost connection; raise TemporaryError at the end."""
    for attempt in range(1, tries + 1):
        try:
            return work()
        except exc.DBAPIError as error:
            if not is_disconnect(error):
                raise
            if attempt == tries:
                raise TemporaryError(f"database unavailable: {error.orig}") from error
            logger.warning("database connection lost, retrying: %s", error.orig)
            time.sleep(delay_s * attempt)
    raise AssertionError("unreachable")
