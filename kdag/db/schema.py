"""The tables kdag keeps its state in. Alembic migrations create them.

dags          one row per DAG name: its current good version and last error
dag_versions  every distinct content of a DAG file, with the commit it came from
sync_errors   files of the last synced commit that could not be loaded
sync_state    the one row saying which commit was synced last
runs          one per (dag, logical date): a unique key, so ticks never repeat
tasks         one per task of a run, created with the run from its version
attempts      one per try of a task: pod or process, times, exit code, log URI
alerts        an outbox of messages to send; a failing webhook retries from it
controllers   live controllers, by heartbeat
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on SQLite and PostgreSQL."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

dags = sa.Table(
    "dags",
    metadata,
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column(
        "version_id", sa.Integer, sa.ForeignKey("dag_versions.id"), nullable=True
    ),
    sa.Column("is_active", sa.Boolean, nullable=False, default=True),
    sa.Column("commit", sa.String(64), nullable=True),  # the last commit synced
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("schedule_anchor", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

dag_versions = sa.Table(
    "dag_versions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("dag", sa.String(63), nullable=False, index=True),
    sa.Column("commit", sa.String(64), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("dag", "digest", name="uq_dag_versions_dag_digest"),
)

sync_state = sa.Table(
    "sync_state",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("repo", sa.Text, nullable=False),
    sa.Column("branch", sa.Text, nullable=False),
    sa.Column("commit", sa.String(64), nullable=True),
    sa.Column("synced_at", UTCDateTime, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
)

sync_errors = sa.Table(
    "sync_errors",
    metadata,
    sa.Column("path", sa.Text, primary_key=True),
    sa.Column("commit", sa.String(64), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("dag", sa.String(63), nullable=False),
    sa.Column(
        "version_id", sa.Integer, sa.ForeignKey("dag_versions.id"), nullable=False
    ),
    sa.Column("commit", sa.String(64), nullable=False),
    sa.Column("logical_date", UTCDateTime, nullable=False),
    sa.Column("data_interval_start", UTCDateTime, nullable=False),
    sa.Column("data_interval_end", UTCDateTime, nullable=False),
    sa.Column("trigger", sa.String(16), nullable=False),  # schedule | manual
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=True),
    sa.Column("ended_at", UTCDateTime, nullable=True),
    sa.UniqueConstraint("dag", "logical_date", name="uq_runs_dag_logical_date"),
    sa.Index("ix_runs_state", "state"),
    sa.Index("ix_runs_dag_id", "dag", "id"),
)

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False),
    sa.Column("name", sa.String(63), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("tries", sa.Integer, nullable=False, default=0),
    sa.Column("max_attempts", sa.Integer, nullable=False),
    sa.Column("next_try_at", UTCDateTime, nullable=True),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("run_id", "name", name="uq_tasks_run_id_name"),
)

attempts = sa.Table(
    "attempts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("task_id", sa.Integer, sa.ForeignKey("tasks.id"), nullable=False),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # running | succeeded | failed
    sa.Column("launcher", sa.String(16), nullable=False),
    sa.Column("controller_id", sa.String(64), nullable=False),
    sa.Column("external_id", sa.Text, nullable=True),  # pod name or process id
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("deadline_at", UTCDateTime, nullable=True),
    sa.Column("ended_at", UTCDateTime, nullable=True),
    sa.Column("exit_code", sa.Integer, nullable=True),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("log_uri", sa.Text, nullable=False),
    sa.UniqueConstraint("task_id", "number", name="uq_attempts_task_id_number"),
)

alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("destination", sa.Text, nullable=True),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("tries", sa.Integer, nullable=False, default=0),
    sa.Column("next_try_at", UTCDateTime, nullable=False),
    sa.Column("sent_at", UTCDateTime, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
)

controllers = sa.Table(
    "controllers",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("hostname", sa.Text, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("heartbeat_at", UTCDateTime, nullable=False),
)
