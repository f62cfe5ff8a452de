"""Read-only views of kdag's state, as plain JSON-ready dicts.

The API, the web UI and `kdag status --json` all read through here, so a run
looks the same everywhere. Times are ISO-8601 UTC strings ending in `Z` (with
microseconds when the stored time has them); absent times are None.

Each function takes an open connection and runs a fixed, small number of
queries: the dashboard's listing reads every DAG's latest runs in one query
(a window function ranks runs per DAG), not one query per DAG.

Descriptions, owners, schedules and task needs come from the stored DAG
version's source, parsed once per distinct source and then cached.
"""

from __future__ import annotations

import functools
import logging
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from kdag.db.schema import (
    attempts,
    dag_versions,
    dags,
    runs,
    sync_errors,
    sync_state,
    tasks,
)
from kdag.errors import KdagError, NotFound
from kdag.specs.model import DagSpec

logger = logging.getLogger(__name__)

ACTIVE_RUN_STATES = ("queued", "running")
MAX_ID = 2**63 - 1  # the largest id a database column holds; beyond it, nothing
Json = dict[str, Any]


def iso(moment: datetime | None) -> str | None:
    """Return `moment` as ISO-8601 UTC ending in Z, or None."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def list_dags(conn: sa.Connection, runs_per_dag: int = 25) -> list[Json]:
    """Return every DAG, by name, each with its latest runs newest first."""
    rows = conn.execute(_dags_query().order_by(dags.c.name)).all()
    latest = _latest_runs(conn, runs_per_dag)
    return [_dag(row, latest.get(row.name, [])) for row in rows]


def get_dag(conn: sa.Connection, name: str, runs_shown: int = 100) -> Json:
    """Return one DAG with its tasks and latest runs; raise NotFound."""
    row = conn.execute(_dags_query().where(dags.c.name == name)).one_or_none()
    if row is None:
        raise NotFound(f"no DAG named {name!r}")
    found = conn.execute(
        sa.select(runs)
        .where(runs.c.dag == name)
        .order_by(runs.c.id.desc())
        .limit(runs_shown)
    ).all()
    dag = _dag(row, [_run_summary(r) for r in found])
    spec = _spec_of(row.source, row.version_path)
    dag["tasks"] = [_task_spec(spec, task) for task in spec.tasks] if spec else []
    return dag


def get_run(conn: sa.Connection, run_id: int) -> Json:
    """Return one run with its tasks and their attempts; raise NotFound."""
    if run_id > MAX_ID:
        raise NotFound(f"no run with id {run_id}")
    row = conn.execute(
        sa.select(runs, dag_versions.c.source, dag_versions.c.path)
        .join(dag_versions, dag_versions.c.id == runs.c.version_id)
        .where(runs.c.id == run_id)
    ).one_or_none()
    if row is None:
        raise NotFound(f"no run with id {run_id}")
    task_rows = conn.execute(sa.select(tasks).where(tasks.c.run_id == run_id)).all()
    attempt_rows = conn.execute(
        sa.select(attempts)
        .join(tasks, tasks.c.id == attempts.c.task_id)
        .where(tasks.c.run_id == run_id)
        .order_by(attempts.c.task_id, attempts.c.number)
    ).all()

    by_task: dict[int, list[Json]] = {}
    for attempt in attempt_rows:
        by_task.setdefault(attempt.task_id, []).append(_attempt(attempt))
    spec = _spec_of(row.source, row.path)
    order = list(spec.tasks) if spec else []
    task_rows = sorted(
        task_rows,
        key=lambda t: (order.index(t.name) if t.name in order else len(order), t.id),
    )
    return {
        **_run_summary(row),
        "dag": row.dag,
        "commit": row.commit,
        "data_interval_start": iso(row.data_interval_start),
        "data_interval_end": iso(row.data_interval_end),
        "created_at": iso(row.created_at),
        "is_active": row.state in ACTIVE_RUN_STATES,
        "tasks": [_task(t, spec, by_task.get(t.id, [])) for t in task_rows],
    }


def get_attempt(
    conn: sa.Connection, run_id: int, task: str, number: int | None = None
) -> Json:
    """Return one attempt of a task, the latest if `number` is None.

    Besides the attempt's own fields it carries `dag`, `run_id`, `task`,
    `task_state` and `run_state`. Raises NotFound naming what is missing.
    """
    if run_id > MAX_ID or (number or 0) > MAX_ID:
        raise NotFound(f"no attempt {number} of task {task!r} of run {run_id}")
    query = (
        sa.select(
            attempts,
            tasks.c.state.label("task_state"),
            runs.c.dag,
            runs.c.state.label("run_state"),
        )
        .join(tasks, tasks.c.id == attempts.c.task_id)
        .join(runs, runs.c.id == tasks.c.run_id)
        .where(runs.c.id == run_id, tasks.c.name == task)
        .order_by(attempts.c.number.desc())
        .limit(1)
    )
    if number is not None:
        query = query.where(attempts.c.number == number)
    row = conn.execute(query).one_or_none()
    if row is None:
        raise NotFound(_why_no_attempt(conn, run_id, task, number))
    return {
        **_attempt(row),
        "dag": row.dag,
        "run_id": run_id,
        "task": task,
        "task_state": row.task_state,
        "run_state": row.run_state,
    }


def sync_status(conn: sa.Connection) -> Json:
    """Return the last git sync: repository, commit, time, error, file errors."""
    state = conn.execute(sa.select(sync_state).order_by(sync_state.c.id)).first()
    errors = conn.execute(sa.select(sync_errors).order_by(sync_errors.c.path)).all()
    return {
        "repo": state.repo if state else None,
        "branch": state.branch if state else None,
        "commit": state.commit if state else None,
        "synced_at": iso(state.synced_at) if state else None,
        "error": state.error if state else None,
        "errors": [
            {
                "path": e.path,
                "commit": e.commit,
                "message": e.message,
                "created_at": iso(e.created_at),
            }
            for e in errors
        ],
    }


# -- pieces ---------------------------------------------------------------


def _dags_query() -> sa.Select[Any]:
    return sa.select(
        dags,
        dag_versions.c.commit.label("version_commit"),
        dag_versions.c.source,
        dag_versions.c.path.label("version_path"),
    ).outerjoin(dag_versions, dag_versions.c.id == dags.c.version_id)


def _latest_runs(conn: sa.Connection, per_dag: int) -> dict[str, list[Json]]:
    """Return the latest `per_dag` runs of every DAG, newest first, in one query."""
    rank = (
        sa.func.row_number()
        .over(partition_by=runs.c.dag, order_by=runs.c.id.desc())
        .label("rank")
    )
    ranked = sa.select(runs, rank).subquery()
    found = conn.execute(
        sa.select(ranked)
        .where(ranked.c.rank <= per_dag)
        .order_by(ranked.c.dag, ranked.c.id.desc())
    ).all()
    latest: dict[str, list[Json]] = {}
    for row in found:
        latest.setdefault(row.dag, []).append(_run_summary(row))
    return latest


def _dag(row: Any, latest: list[Json]) -> Json:
    spec = _spec_of(row.source, row.version_path) if row.source else None
    return {
        "name": row.name,
        "path": row.path,
        "owner": spec.owner if spec else "",
        "description": spec.description if spec else "",
        "schedule": spec.schedule if spec else None,
        "timezone": spec.timezone if spec else "UTC",
        "next_run_at": _next_tick(spec) if spec and row.is_active else None,
        "is_active": bool(row.is_active),
        "error": row.error,
        # The last synced commit holding this version, else where it first came.
        "commit": row.commit or row.version_commit,
        "updated_at": iso(row.updated_at),
        "runs": latest,
    }


def _next_tick(spec: DagSpec) -> str | None:
    """The schedule's next fire time from now, or None for a manual DAG."""
    if not spec.schedule:
        return None
    # Cron fires on whole minutes, so the next tick after this minute began is
    # the next after now: one computation per schedule and minute, not per poll.
    minute = datetime.now(UTC).replace(second=0, microsecond=0)
    return _next_tick_after(spec.schedule, spec.timezone, minute)


@functools.lru_cache(maxsize=1024)
def _next_tick_after(schedule: str, timezone: str, after: datetime) -> str | None:
    from kdag.specs.cron import next_fire_times

    ticks = next_fire_times(schedule, timezone, after=after, count=1)
    return iso(ticks[0]) if ticks else None


def _run_summary(row: Any) -> Json:
    return {
        "id": row.id,
        "state": row.state,
        "logical_date": iso(row.logical_date),
        "trigger": row.trigger,
        "started_at": iso(row.started_at),
        "ended_at": iso(row.ended_at),
    }


def _task(row: Any, spec: DagSpec | None, found: list[Json]) -> Json:
    task_spec = spec.tasks.get(row.name) if spec else None
    return {
        "name": row.name,
        "state": row.state,
        "needs": list(task_spec.needs) if task_spec else [],
        "tries": row.tries,
        "max_attempts": row.max_attempts,
        "next_try_at": iso(row.next_try_at),
        "attempts": found,
    }


def _attempt(row: Any) -> Json:
    return {
        "number": row.number,
        "state": row.state,
        "started_at": iso(row.started_at),
        "ended_at": iso(row.ended_at),
        "exit_code": row.exit_code,
        "reason": row.reason,
        "log_uri": row.log_uri,
        "external_id": row.external_id,
    }


def _why_no_attempt(
    conn: sa.Connection, run_id: int, task: str, number: int | None
) -> str:
    found = conn.execute(
        sa.select(runs.c.id, tasks.c.id.label("task_id"))
        .outerjoin(tasks, (tasks.c.run_id == runs.c.id) & (tasks.c.name == task))
        .where(runs.c.id == run_id)
    ).one_or_none()
    if found is None:
        return f"no run with id {run_id}"
    if found.task_id is None:
        return f"run {run_id} has no task {task!r}"
    if number is None:
        return f"task {task!r} of run {run_id} has not started yet"
    return f"task {task!r} of run {run_id} has no attempt {number}"


def _task_spec(spec: DagSpec, name: str) -> Json:
    task = spec.tasks[name]
    return {
        "name": name,
        "needs": list(task.needs),
        "description": task.description,
        "image": task.image,
        "retries": task.retries,
        "timeout_s": task.timeout.total_seconds() if task.timeout else None,
    }


def _spec_of(source: str | None, path: str | None) -> DagSpec | None:
    if source is None:
        return None
    return _parsed(source, path or "")


@functools.lru_cache(maxsize=512)
def _parsed(source: str, path: str) -> DagSpec | None:
    # Stored versions were valid when loaded; a newer kdag may still disagree.
    from kdag.specs.parsing import parse_dag

    try:
        return parse_dag(source, path)
    except KdagError as error:
        logger.warning("stored version of %s no longer parses: %s", path, error)
        return None
