"""The engine: moves runs and tasks through their states, one step at a time.

    run:   queued -> running -> succeeded | failed | canceled
    task:  pending -> queued -> running -> succeeded | failed | upstream_failed
           (up_for_retry between attempts; canceled when its run is)

`Engine.step()` applies the attempt ends that launchers reported, then
advances every active run: tasks whose needs all succeeded start, tasks whose
needs failed end `upstream_failed`, due retries start again, attempts past
their deadline are stopped, finished runs are closed. It returns whether it
did anything, so the controller's loop knows whether to wait.

One run never stops the others: an attempt that cannot start (a bug, a spec
the engine cannot handle) ends failed with reason InternalError, and a run
that cannot advance is logged with its traceback and backed off. Only a lost
database connection fails the whole step.

Claim protocol, so that several controllers on one database never launch the
same attempt twice: a task is claimed with

    UPDATE tasks SET state='queued', tries=tries+1
    WHERE id=:id AND state=:seen_state AND tries=:seen_tries

and only the controller whose update changed a row inserts the attempt
(unique on task and number) and launches it.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from kdag import db as kdb
from kdag.db.schema import alerts, attempts, dag_versions, dags, runs, tasks
from kdag.engine.backoff import Backoff
from kdag.errors import KdagError, NotFound
from kdag.launching import AttemptEnded, Launch, Launcher
from kdag.launching.pods import pod_labels, pod_name
from kdag.logstore import LogStore, log_key
from kdag.specs.model import DagSpec, EnvValue, TaskSpec
from kdag.specs.parsing import parse_dag

logger = logging.getLogger(__name__)

ACTIVE_RUN = ("queued", "running")
DONE_TASK = ("succeeded", "failed", "upstream_failed", "skipped", "canceled")
BLOCKING = ("failed", "upstream_failed", "canceled")
NOT_THE_TASKS_FAULT = ("ControllerLost", "ControllerStopped")
DATABASE_DOWN = (sa.exc.OperationalError, sa.exc.InterfaceError)


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Engine:
    """Runs and tasks, advanced against one database through one launcher."""

    def __init__(
        self,
        db: sa.Engine,
        launcher: Launcher,
        logs: LogStore,
        *,
        events: queue.Queue[AttemptEnded],
        controller_id: str,
        default_namespace: str = "default",
        workdir_for: Callable[[str, str], Path | None] = lambda commit, path: None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.db = db
        self.launcher = launcher
        self.logs = logs
        self.events = events
        self.controller_id = controller_id
        self.default_namespace = default_namespace
        self.workdir_for = workdir_for
        self.clock = clock
        self._stopping: set[int] = set()
        self.alert_queued = threading.Event()  # set once an alert is committed
        # Runs that failed to advance: 1 s, 2 s, 4 s... up to 5 minutes.
        self._backoff = Backoff(first=timedelta(seconds=1), most=timedelta(minutes=5))

    # -- specs ------------------------------------------------------------

    def spec_of(self, version_id: int, conn: sa.Connection | None = None) -> DagSpec:
        """Return the parsed spec of a stored DAG version (they never change)."""
        if conn is not None:
            return spec_of(conn, version_id)
        with self.db.connect() as own:
            return spec_of(own, version_id)

    # -- creating runs ----------------------------------------------------

    def create_run(
        self,
        conn: sa.Connection,
        *,
        version_id: int,
        logical_date: datetime,
        interval: tuple[datetime, datetime],
        trigger: str,
    ) -> int | None:
        """Insert a run and its tasks; return its id, or None if the tick has one."""
        return create_run(
            conn,
            version_id=version_id,
            logical_date=logical_date,
            interval=interval,
            trigger=trigger,
            now=self.clock(),
        )

    def trigger(self, dag: str) -> int:
        """Create a manual run of the current version of `dag`; return its id."""
        with self.db.begin() as conn:
            return trigger_run(conn, dag, now=self.clock())

    def cancel_run(self, run_id: int) -> None:
        """Cancel a run: tasks not started are canceled, running ones stopped."""
        now = self.clock()
        with self.db.begin() as conn:
            done = conn.execute(
                runs.update()
                .where(runs.c.id == run_id, runs.c.state.in_(ACTIVE_RUN))
                .values(state="canceled", ended_at=now)
            )
            if done.rowcount != 1:
                return
            conn.execute(
                tasks.update()
                .where(
                    tasks.c.run_id == run_id,
                    tasks.c.state.in_(("pending", "up_for_retry")),
                )
                .values(state="canceled", updated_at=now)
            )
            running: Sequence[int] = (
                conn.execute(
                    sa.select(attempts.c.id)
                    .join(tasks)
                    .where(
                        tasks.c.run_id == run_id,
                        attempts.c.state == "running",
                        attempts.c.controller_id == self.controller_id,
                    )
                )
                .scalars()
                .all()
            )
        logger.info("run canceled: run=%s", run_id)
        for attempt_id in running:
            self._stopping.add(attempt_id)
            self.launcher.stop(attempt_id, "Canceled")

    # -- the step ---------------------------------------------------------

    def step(self) -> bool:
        """Apply reported ends, then advance every active run. Return: did work."""
        did_work = self.apply_reported()
        now = self.clock()
        with self.db.connect() as conn:
            active = conn.execute(
                sa.select(runs).where(runs.c.state.in_(ACTIVE_RUN)).order_by(runs.c.id)
            ).all()
        for run in active:
            if not self._backoff.is_waiting(run.id, now):
                did_work |= self._advance_isolated(run, now)
        did_work |= self._stop_overdue()
        return did_work

    def _advance_isolated(self, run: Any, now: datetime) -> bool:
        """Advance one run; an unexpected error backs off that run only."""
        try:
            did_work = self._advance(run)
        except DATABASE_DOWN:
            raise  # not this run's fault: the controller backs off the whole step
        except Exception as error:
            delay = self._backoff.failed(run.id, now)
            logger.exception(
                "cannot advance run, next try in %ss: dag=%s run=%s: %s",
                int(delay.total_seconds()),
                run.dag,
                run.id,
                error,
            )
            return False
        self._backoff.succeeded(run.id)
        return did_work

    def apply_reported(self) -> bool:
        """Apply every attempt end the launchers reported since the last call."""
        did_work = False
        while True:
            try:
                ended = self.events.get_nowait()
            except queue.Empty:
                return did_work
            try:
                self.apply(ended)
            except Exception:
                # NB: put it back, so a lost database connection loses no end.
                self.events.put(ended)
                raise
            did_work = True

    def next_wakeup(self) -> datetime | None:
        """Return when a retry or a deadline is next due, if any."""
        with self.db.connect() as conn:
            retry = conn.execute(
                sa.select(sa.func.min(tasks.c.next_try_at)).where(
                    tasks.c.state == "up_for_retry"
                )
            ).scalar()
            deadline = conn.execute(
                sa.select(sa.func.min(attempts.c.deadline_at)).where(
                    attempts.c.state == "running",
                    attempts.c.controller_id == self.controller_id,
                    attempts.c.id.not_in(self._stopping or [-1]),
                )
            ).scalar()
        found = [m for m in (retry, deadline) if m is not None]
        return min(found) if found else None

    # -- advancing one run --------------------------------------------------

    def _advance(self, run: Any) -> bool:
        spec = self.spec_of(run.version_id)
        now = self.clock()
        did_work = False
        if run.state == "queued":
            if spec.concurrency == "forbid" and self._has_earlier_active_run(run):
                return False  # one at a time: it starts when those are over
            with self.db.begin() as conn:
                conn.execute(
                    runs.update()
                    .where(runs.c.id == run.id)
                    .values(state="running", started_at=now)
                )
            did_work = True
        with self.db.connect() as conn:
            rows = {
                r.name: r
                for r in conn.execute(
                    sa.select(tasks).where(tasks.c.run_id == run.id)
                ).all()
            }
        states = {name: row.state for name, row in rows.items()}

        # Decide, in dependency order, which tasks are blocked and which ready.
        blocked, ready = [], []
        for name in _in_dependency_order(spec):
            row = rows[name]
            needs = [states[n] for n in spec.tasks[name].needs]
            if row.state == "pending" and any(s in BLOCKING for s in needs):
                states[name] = "upstream_failed"
                blocked.append(row)
            elif (row.state == "pending" and all(s == "succeeded" for s in needs)) or (
                row.state == "up_for_retry" and row.next_try_at <= now
            ):
                ready.append(row)
        if blocked:
            self._mark_upstream_failed(run, blocked)
            did_work = True
        for row in ready:
            did_work |= self._launch(run, spec, row)

        if all(s in DONE_TASK for s in states.values()):
            self._finish_run(run, states)
            did_work = True
        return did_work

    def _has_earlier_active_run(self, run: Any) -> bool:
        with self.db.connect() as conn:
            earlier = conn.execute(
                sa.select(runs.c.id)
                .where(
                    runs.c.dag == run.dag,
                    runs.c.id < run.id,
                    runs.c.state.in_(ACTIVE_RUN),
                )
                .limit(1)
            ).first()
        return earlier is not None

    def _mark_upstream_failed(self, run: Any, blocked: list[Any]) -> None:
        now = self.clock()
        with self.db.begin() as conn:
            for row in blocked:
                conn.execute(
                    tasks.update()
                    .where(tasks.c.id == row.id, tasks.c.state == "pending")
                    .values(state="upstream_failed", updated_at=now)
                )
        for row in blocked:
            logger.info(
                "task upstream_failed: dag=%s run=%s task=%s", run.dag, run.id, row.name
            )

    def _launch(self, run: Any, spec: DagSpec, row: Any) -> bool:
        """Claim one task and start its next attempt; False if another got it."""
        now = self.clock()
        number = row.tries + 1
        key = log_key(run.dag, run.id, row.name, number)
        attempt_id = self._claim(
            row, number=number, now=now, log_uri=self.logs.uri(key)
        )
        if attempt_id is None:
            return False

        # NB: from here on the attempt exists; any failure must end it, or it
        # would stay "running" for ever (and nothing here may stop the loop).
        try:
            task = spec.tasks[row.name]
            deadline = now + task.timeout if task.timeout else None
            launch = Launch(
                attempt_id=attempt_id,
                dag=run.dag,
                run_id=run.id,
                task=row.name,
                attempt=number,
                name=pod_name(run.dag, row.name, run.id, number),
                spec=task,
                env=_environment(task, run, number),
                namespace=task.namespace or self.default_namespace,
                labels=pod_labels(run.dag, run.id, row.name, number),
                log_key=key,
                workdir=self.workdir_for(run.commit, spec.path),
            )
            external_id = self.launcher.start(launch)
        except Exception as error:
            self._fail_start(
                run, error, task=row.name, number=number, attempt_id=attempt_id
            )
            return True

        def mark_started() -> None:
            with self.db.begin() as conn:
                conn.execute(
                    attempts.update()
                    .where(attempts.c.id == attempt_id)
                    .values(external_id=external_id, deadline_at=deadline)
                )
                conn.execute(
                    tasks.update()
                    .where(tasks.c.id == row.id, tasks.c.state == "queued")
                    .values(state="running", updated_at=self.clock())
                )

        # NB: the attempt runs now; a dropped connection must not lose its
        # deadline, so this write is tried again on a fresh one.
        kdb.with_retry(mark_started)
        logger.info(
            "task started: dag=%s run=%s task=%s attempt=%s launcher=%s id=%s",
            run.dag,
            run.id,
            row.name,
            number,
            self.launcher.name,
            external_id,
        )
        return True

    def _claim(
        self, row: Any, *, number: int, now: datetime, log_uri: str
    ) -> int | None:
        """Claim a task and insert its attempt; return its id, None if lost."""
        with self.db.begin() as conn:
            claimed = conn.execute(
                tasks.update()
                .where(
                    tasks.c.id == row.id,
                    tasks.c.state == row.state,
                    tasks.c.tries == row.tries,
                )
                .values(state="queued", tries=number, next_try_at=None, updated_at=now)
            )
            if claimed.rowcount != 1:
                return None
            attempt_id: int = conn.execute(
                attempts.insert()
                .values(
                    task_id=row.id,
                    number=number,
                    state="running",
                    launcher=self.launcher.name,
                    controller_id=self.controller_id,
                    started_at=now,
                    log_uri=log_uri,
                )
                .returning(attempts.c.id)
            ).scalar_one()
        return attempt_id

    def _fail_start(
        self, run: Any, error: Exception, *, task: str, number: int, attempt_id: int
    ) -> None:
        """End an attempt that could not start, saying why in its log too."""
        # A launcher's own refusal is expected (LaunchError); anything else is
        # a bug or a spec the engine cannot handle (InternalError).
        if isinstance(error, KdagError):
            reason, message, log = "LaunchError", str(error), logger.warning
        else:
            reason, message = "InternalError", f"{type(error).__name__}: {error}"
            log = logger.exception
        log(
            "launch failed: dag=%s run=%s task=%s attempt=%s: %s",
            run.dag,
            run.id,
            task,
            number,
            message,
        )
        key = log_key(run.dag, run.id, task, number)
        with contextlib.suppress(OSError), self.logs.spool_path(key).open("a") as sink:
            sink.write(f"kdag: could not start this attempt: {message}\n")
        self.events.put(AttemptEnded(attempt_id, False, None, reason, message))

    def _finish_run(self, run: Any, states: dict[str, str]) -> None:
        state = "failed" if any(s in BLOCKING for s in states.values()) else "succeeded"
        now = self.clock()
        with self.db.begin() as conn:
            done = conn.execute(
                runs.update()
                .where(runs.c.id == run.id, runs.c.state.in_(ACTIVE_RUN))
                .values(state=state, ended_at=now)
            )
            if done.rowcount == 1 and state == "failed":
                failed = sorted(n for n, s in states.items() if s == "failed")
                _enqueue_alert(
                    conn,
                    now,
                    {
                        "kind": "run_failed",
                        "dag": run.dag,
                        "run_id": run.id,
                        "failed_tasks": failed,
                        "logical_date": iso(run.logical_date),
                    },
                )
        if state == "failed":
            self.alert_queued.set()
        logger.info("run %s: dag=%s run=%s", state, run.dag, run.id)

    # -- attempt ends -------------------------------------------------------

    def apply(self, ended: AttemptEnded) -> None:
        """Record an attempt's end and move its task on (retry, fail, succeed)."""
        now = self.clock()
        self._stopping.discard(ended.attempt_id)
        with self.db.begin() as conn:
            found = conn.execute(
                sa.select(
                    attempts,
                    tasks.c.name,
                    tasks.c.max_attempts,
                    tasks.c.run_id,
                    runs.c.dag,
                    runs.c.version_id,
                )
                .join(tasks, tasks.c.id == attempts.c.task_id)
                .join(runs, runs.c.id == tasks.c.run_id)
                .where(attempts.c.id == ended.attempt_id)
            ).one_or_none()
            if found is None or found.state != "running":
                return  # already recorded (a duplicate report)
            # NB: conditional, so that of two controllers reporting one end (an
            # orphan both reaped) only the first records it.
            recorded = conn.execute(
                attempts.update()
                .where(attempts.c.id == ended.attempt_id, attempts.c.state == "running")
                .values(
                    state="succeeded" if ended.is_success else "failed",
                    ended_at=now,
                    exit_code=ended.exit_code,
                    reason=ended.reason,
                )
            )
            if recorded.rowcount != 1:
                return
            state, next_try_at = self._task_outcome(conn, found, ended, now)
            conn.execute(
                tasks.update()
                .where(tasks.c.id == found.task_id)
                .values(state=state, next_try_at=next_try_at, updated_at=now)
            )
            if state == "failed":
                _enqueue_alert(
                    conn,
                    now,
                    {
                        "kind": "task_failed",
                        "dag": found.dag,
                        "run_id": found.run_id,
                        "task": found.name,
                        "attempt": found.number,
                        "exit_code": ended.exit_code,
                        "reason": ended.reason,
                        "message": ended.message,
                    },
                )
        if state == "failed":
            self.alert_queued.set()
        log = logger.info if state in ("succeeded", "up_for_retry") else logger.warning
        log(
            "task %s: dag=%s run=%s task=%s attempt=%s exit_code=%s reason=%s",
            state,
            found.dag,
            found.run_id,
            found.name,
            found.number,
            ended.exit_code,
            ended.reason,
        )

    def _task_outcome(
        self, conn: sa.Connection, found: Any, ended: AttemptEnded, now: datetime
    ) -> tuple[str, datetime | None]:
        if ended.is_success:
            return "succeeded", None
        if ended.reason == "Canceled":
            return "canceled", None
        if ended.reason in NOT_THE_TASKS_FAULT:
            # A stopped or lost controller costs the task none of its retries.
            conn.execute(
                tasks.update()
                .where(tasks.c.id == found.task_id)
                .values(max_attempts=found.max_attempts + 1)
            )
            return "up_for_retry", now
        if found.number < found.max_attempts:
            try:
                task = self.spec_of(found.version_id, conn).tasks[found.name]
                return "up_for_retry", now + task.retry_delay
            except DATABASE_DOWN:
                raise
            except Exception:  # a delay past the year 9999, a spec gone bad
                logger.exception(
                    "cannot schedule a retry, failing the task: dag=%s run=%s task=%s",
                    found.dag,
                    found.run_id,
                    found.name,
                )
        return "failed", None

    def _stop_overdue(self) -> bool:
        """Stop this controller's attempts past their deadline; return: any."""
        now = self.clock()
        with self.db.connect() as conn:
            overdue = conn.execute(
                sa.select(
                    attempts.c.id,
                    attempts.c.number,
                    tasks.c.name,
                    runs.c.id.label("run_id"),
                    runs.c.dag,
                )
                .join(tasks, tasks.c.id == attempts.c.task_id)
                .join(runs, runs.c.id == tasks.c.run_id)
                .where(
                    attempts.c.state == "running",
                    attempts.c.deadline_at <= now,
                    attempts.c.controller_id == self.controller_id,
                )
            ).all()
        fresh = [a for a in overdue if a.id not in self._stopping]
        for attempt in fresh:
            self._stopping.add(attempt.id)
            logger.info(
                "task timed out, stopping it: dag=%s run=%s task=%s attempt=%s",
                attempt.dag,
                attempt.run_id,
                attempt.name,
                attempt.number,
            )
            self.launcher.stop(attempt.id, "Timeout")
        return bool(fresh)


_SPECS: dict[tuple[str, int], DagSpec] = {}


def spec_of(conn: sa.Connection, version_id: int) -> DagSpec:
    """Return the parsed spec of a stored DAG version (cached: they never change)."""
    key = (str(conn.engine.url), version_id)
    if key not in _SPECS:
        row = conn.execute(
            sa.select(dag_versions).where(dag_versions.c.id == version_id)
        ).one()
        _SPECS[key] = parse_dag(row.source, row.path)
    return _SPECS[key]


def create_run(
    conn: sa.Connection,
    *,
    version_id: int,
    logical_date: datetime,
    interval: tuple[datetime, datetime],
    trigger: str,
    now: datetime,
) -> int | None:
    """Insert a run and its tasks; return its id, or None if the tick has one."""
    version = conn.execute(
        sa.select(dag_versions).where(dag_versions.c.id == version_id)
    ).one()
    spec = spec_of(conn, version_id)
    commit = _commit_of(conn, version)
    insert = (
        _insert_ignoring_conflict(conn, runs)
        .values(
            dag=version.dag,
            version_id=version_id,
            commit=commit,
            logical_date=logical_date,
            data_interval_start=interval[0],
            data_interval_end=interval[1],
            trigger=trigger,
            state="queued",
            created_at=now,
        )
        .returning(runs.c.id)
    )
    run_id = conn.execute(insert).scalar()
    if run_id is None:
        return None
    conn.execute(
        tasks.insert(),
        [
            {
                "run_id": run_id,
                "name": task.name,
                "state": "pending",
                "tries": 0,
                "max_attempts": task.max_attempts,
                "updated_at": now,
            }
            for task in spec.tasks.values()
        ],
    )
    logger.info(
        "run created: dag=%s run=%s logical_date=%s trigger=%s commit=%s",
        version.dag,
        run_id,
        iso(logical_date),
        trigger,
        commit[:12],
    )
    return int(run_id)


def _commit_of(conn: sa.Connection, version: Any) -> str:
    """The commit a run records: the DAG's last synced commit while this version
    is its current one (the content is the same there), else the version's own."""
    synced = conn.execute(
        sa.select(dags.c.commit).where(
            dags.c.name == version.dag, dags.c.version_id == version.id
        )
    ).scalar()
    return str(synced or version.commit)


def trigger_run(conn: sa.Connection, dag: str, *, now: datetime) -> int:
    """Create a manual run of the current version of `dag`; return its id.

    Raises NotFound for a DAG that does not exist, never loaded, or was removed.
    """
    row = conn.execute(sa.select(dags).where(dags.c.name == dag)).one_or_none()
    if row is None or row.version_id is None:
        raise NotFound(f"no DAG named {dag!r}")
    if not row.is_active:
        raise NotFound(f"DAG {dag!r} was removed from the repository")
    for nudge in range(1000):  # two triggers in one microsecond: keep both
        moment = now + timedelta(microseconds=nudge)
        run_id = create_run(
            conn,
            version_id=row.version_id,
            logical_date=moment,
            interval=(moment, moment),
            trigger="manual",
            now=now,
        )
        if run_id is not None:
            return run_id
    raise AssertionError("could not find a free logical date")


def _environment(task: TaskSpec, run: Any, attempt: int) -> dict[str, EnvValue]:
    """kdag's variables first, so the task's own values can refer to them."""
    ours: dict[str, EnvValue] = dict(_kdag_env(run, task.name, attempt))
    return {**ours, **{k: v for k, v in task.env.items() if k not in ours}}


def _kdag_env(run: Any, task: str, attempt: int) -> dict[str, str]:
    return {
        "KDAG_DAG": run.dag,
        "KDAG_RUN_ID": str(run.id),
        "KDAG_TASK": task,
        "KDAG_ATTEMPT": str(attempt),
        "KDAG_LOGICAL_DATE": iso(run.logical_date),
        "KDAG_DATA_INTERVAL_START": iso(run.data_interval_start),
        "KDAG_DATA_INTERVAL_END": iso(run.data_interval_end),
    }


def _in_dependency_order(spec: DagSpec) -> tuple[str, ...]:
    order: list[str] = []
    placed: set[str] = set()
    while len(order) < len(spec.tasks):
        for name, task in spec.tasks.items():
            if name not in placed and all(n in placed for n in task.needs):
                order.append(name)
                placed.add(name)
    return tuple(order)


def _insert_ignoring_conflict(conn: sa.Connection, table: sa.Table) -> Any:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table).on_conflict_do_nothing()


def _enqueue_alert(conn: sa.Connection, now: datetime, payload: dict[str, Any]) -> None:
    conn.execute(
        alerts.insert().values(
            payload=payload, created_at=now, tries=0, next_try_at=now
        )
    )


def active_attempts(conn: sa.Connection, controller_id: str) -> Iterator[Any]:
    """Yield this controller's running attempts (for reaping after a restart)."""
    yield from conn.execute(
        sa.select(attempts).where(
            attempts.c.state == "running", attempts.c.controller_id == controller_id
        )
    )
