"""Turn cron schedules into runs: each due tick exactly once.

For every active DAG with a schedule, the ticks due are the fire times after
the DAG's last scheduled run (or, for a DAG never run, after the moment it was
first seen: its `schedule_anchor`) up to now. With `catchup: false` only the
latest of them becomes a run; with `catchup: true` every one does. A run's
logical date is its tick; its data interval runs from the tick before it.

A tick becomes a run through an insert that ignores a conflict on the unique
key (dag, logical_date): a restart, or a second controller, that sees the same
tick again creates nothing, and that is never an error.

Concurrency when a tick comes while a run of the DAG is still going:
`allow` starts another, `forbid` skips the tick (it is logged and the anchor
moves past it), `replace` cancels the running one once the new run exists.
A manual run of a `forbid` DAG waits in the engine until the others end.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from kdag.db.schema import dags, runs
from kdag.engine import ACTIVE_RUN, DATABASE_DOWN, Engine, iso
from kdag.engine.backoff import Backoff
from kdag.specs.cron import fire_times, previous_fire_time

logger = logging.getLogger(__name__)
CATCHUP_LIMIT = 1000  # runs at most per DAG and step, so one DAG cannot stall the loop


def dag_backoff() -> Backoff:
    """The back-off for DAGs that fail to schedule: 1 minute, doubling to 1 hour."""
    return Backoff(first=timedelta(minutes=1), most=timedelta(hours=1))


def schedule_due_runs(
    engine: Engine,
    now: datetime,
    *,
    cancel: Callable[[int], None] | None = None,
    backoff: Backoff | None = None,
) -> int:
    """Create the runs due by `now`; return how many were created.

    A DAG that fails (a schedule croniter cannot follow, a bug) is logged and
    skipped, then left alone for a while by `backoff` (kept by the caller
    across steps); the others go on. Only a lost database connection raises.
    """
    backoff = backoff or dag_backoff()
    with engine.db.connect() as conn:
        candidates = conn.execute(
            sa.select(dags).where(dags.c.is_active, dags.c.version_id.is_not(None))
        ).all()
    created = 0
    for dag in candidates:
        item = (dag.name, dag.version_id)  # a new version is tried at once
        if backoff.is_waiting(item, now):
            continue
        try:
            if engine.spec_of(dag.version_id).schedule:
                created += _schedule_dag(engine, dag, now, cancel)
        except DATABASE_DOWN:
            raise
        except Exception as error:
            delay = backoff.failed(item, now)
            logger.exception(
                "cannot schedule dag=%s, next try in %ss: %s",
                dag.name,
                int(delay.total_seconds()),
                error,
            )
            continue
        backoff.succeeded(item)
    return created


def _schedule_dag(
    engine: Engine,
    dag: sa.Row[Any],
    now: datetime,
    cancel: Callable[[int], None] | None,
) -> int:
    spec = engine.spec_of(dag.version_id)
    assert spec.schedule is not None
    with engine.db.begin() as conn:
        last = conn.execute(
            sa.select(sa.func.max(runs.c.logical_date)).where(
                runs.c.dag == dag.name, runs.c.trigger == "schedule"
            )
        ).scalar()
        after = max(last, dag.schedule_anchor) if last else dag.schedule_anchor
        ticks: list[datetime] = []
        for tick in fire_times(spec.schedule, spec.timezone, after=after, until=now):
            ticks.append(tick)
            if spec.catchup and len(ticks) == CATCHUP_LIMIT:
                break  # the later ticks come on the next steps, oldest first
            if not spec.catchup:
                del ticks[:-2]  # the latest runs; the one before starts its interval
        if not ticks:
            return 0
        # A run's data interval is the span from the tick before it to its tick.
        first_start = previous_fire_time(spec.schedule, spec.timezone, before=ticks[0])
        starts = [first_start or after, *ticks[:-1]]
        due = list(zip(starts, ticks, strict=True))
        if not spec.catchup:
            due = due[-1:]

        # Apply the concurrency policy against the runs still going.
        active: Sequence[int] = (
            conn.execute(
                sa.select(runs.c.id).where(
                    runs.c.dag == dag.name, runs.c.state.in_(ACTIVE_RUN)
                )
            )
            .scalars()
            .all()
        )
        if active and spec.concurrency == "forbid":
            conn.execute(
                dags.update()
                .where(dags.c.name == dag.name)
                .values(schedule_anchor=due[-1][1])
            )
            logger.info(
                "tick skipped, a run is still going (concurrency: forbid): "
                "dag=%s logical_date=%s",
                dag.name,
                iso(due[-1][1]),
            )
            return 0
        # NB: canceled once this transaction is over: on SQLite a second
        # writer would wait for it for ever.
        to_cancel = active if spec.concurrency == "replace" else ()

        created = 0
        for start, tick in due:
            run_id = engine.create_run(
                conn,
                version_id=dag.version_id,
                logical_date=tick,
                interval=(start, tick),
                trigger="schedule",
            )
            created += run_id is not None
    if cancel is not None:
        for active_id in to_cancel:
            cancel(active_id)
    return created
