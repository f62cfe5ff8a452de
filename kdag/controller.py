"""The controller: one process whose loop syncs git, schedules, advances runs.

`Controller.step()` does one pass and returns whether it did any work:

1. heartbeat, and reap attempts left running by a controller that is gone;
2. sync the DAG repository, once every poll interval;
3. create the runs whose ticks are due;
4. advance runs (`Engine.step`): apply attempt ends, start ready tasks.

`Controller.run(stop)` repeats it. Between steps it waits on a wake-up that a
launcher sets when an attempt ends (and the web sets on a trigger), or until
the next retry, deadline or tick is due, at most `tick_s`. So a task's end
starts the next task at once, not on the next tick of a fixed sleep.

One failing step is logged and backed off; it never ends the loop.

Beside the loop, `run` keeps two threads: one records the heartbeat every few
seconds, so a step that waits long on git or the database never makes this
controller look dead to the others; the other (the housekeeper) sends alerts
from the outbox and retries failed log uploads, so a webhook or a log store
that hangs delays only them, never a step of the loop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import socket
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from kdag import db as kdb
from kdag.alerting import Notifier, send_due_alerts
from kdag.db.schema import attempts, controllers, runs
from kdag.engine import ACTIVE_RUN, DATABASE_DOWN, Engine, utc_now
from kdag.engine.backoff import Backoff
from kdag.errors import KdagError
from kdag.launching import AttemptEnded, Launcher, OutputLine
from kdag.logstore import LogStore, open_store
from kdag.scheduling import dag_backoff, schedule_due_runs
from kdag.settings import Settings

logger = logging.getLogger(__name__)
HEARTBEAT_EVERY = timedelta(seconds=5)
STALE_AFTER = timedelta(seconds=60)
LOG_RETRY_EVERY = timedelta(seconds=30)
ALERT_POLL_S = 5.0  # how often the alert sender looks for due retries
BACKGROUND_STOP_WAIT_S = 15.0  # a send in flight ends within its client's timeout


@dataclass
class Controller:
    engine: Engine
    logs: LogStore
    wake: threading.Event
    sync: Any = None  # kdag.gitsync.GitSync, when a repository is configured
    notifier: Notifier | None = None
    poll_interval: timedelta = timedelta(seconds=30)
    tick_s: float = 1.0
    _due: dict[str, datetime] = field(default_factory=dict)
    _dag_backoff: Backoff = field(default_factory=dag_backoff)

    @property
    def db(self) -> sa.Engine:
        return self.engine.db

    def step(self) -> bool:
        """Do one pass of the loop; return whether anything happened."""
        now = self.engine.clock()
        did_work = False
        if self._is_due("heartbeat", now, HEARTBEAT_EVERY):
            self._heartbeat(now)
            did_work |= self._reap_orphans(now)
        if self.sync is not None and self._is_due("sync", now, self.poll_interval):
            did_work |= self.sync.sync(now) is not None
        created = schedule_due_runs(
            self.engine, now, cancel=self.engine.cancel_run, backoff=self._dag_backoff
        )
        did_work |= created > 0
        did_work |= self.engine.step()
        return did_work

    def run(self, stop: threading.Event) -> None:
        """Step until `stop` is set; isolate and back off any failing step."""
        logger.info("controller %s started", self.engine.controller_id)
        done = threading.Event()
        beat = self._start_thread("kdag-heartbeat", self._beat, done)
        keeper = self._start_thread("kdag-housekeeper", self._keep_house, done)
        try:
            self._loop(stop)
        finally:
            self._stop_threads(done, beat, keeper)
            self.engine.launcher.close()
            self._record_last_ends()
            logger.info("controller %s stopped", self.engine.controller_id)

    def _loop(self, stop: threading.Event) -> None:
        backoff_s = 1.0
        while not stop.is_set():
            self.wake.clear()
            try:
                did_work = self.step()
                backoff_s = 1.0
            except Exception as error:  # the loop must outlive any one failure
                log = logger.warning if _is_expected(error) else logger.exception
                log("controller step failed, next try in %.0fs: %s", backoff_s, error)
                stop.wait(backoff_s)
                backoff_s = min(backoff_s * 2, 30.0)
                continue
            if not did_work:
                self.wake.wait(self._idle_s())

    def _record_last_ends(self) -> None:
        """Record the ends the launcher reported while stopping, if the database
        lets us; otherwise the next controller fails them as ControllerLost."""
        try:
            self.engine.apply_reported()
        except Exception as error:
            logger.warning("attempt ends not recorded at stop: %s", error)

    def _start_thread(
        self, name: str, body: Callable[[threading.Event], None], done: threading.Event
    ) -> threading.Thread:
        thread = threading.Thread(target=body, args=(done,), name=name, daemon=True)
        thread.start()
        return thread

    def _stop_threads(self, done: threading.Event, *threads: threading.Thread) -> None:
        done.set()
        self.engine.alert_queued.set()  # wake the housekeeper, so it sees `done`
        for thread in threads:
            thread.join(BACKGROUND_STOP_WAIT_S)
            if thread.is_alive():  # a daemon: it cannot keep the process alive
                logger.warning("%s still waiting on I/O; leaving it", thread.name)

    def _beat(self, done: threading.Event) -> None:
        """Say this controller lives, every few seconds, however long a step takes.

        NB: a step may wait long on git or the database; were the heartbeat in
        the loop, another controller would take this one for dead and run its
        tasks a second time.
        """
        while not done.wait(HEARTBEAT_EVERY.total_seconds()):
            try:
                self._heartbeat(self.engine.clock())
            except Exception as error:
                log = logger.warning if _is_expected(error) else logger.exception
                log("heartbeat not recorded: %s", error)

    def _keep_house(self, done: threading.Event) -> None:
        """Send due alerts and retry failed log uploads, away from the loop.

        It wakes when the engine commits an alert, else every few seconds, so
        a webhook or a log store that hangs delays only this, never a step.
        """
        queued = self.engine.alert_queued
        while not done.is_set():
            queued.clear()  # before reading, so an alert committed meanwhile wakes us
            now = self.engine.clock()
            try:
                if self.notifier is not None:
                    send_due_alerts(self.db, self.notifier, now, stop=done)
                if self._is_due("logs", now, LOG_RETRY_EVERY):
                    self.logs.retry_pending(busy=self._busy_log_keys())
            except Exception as error:  # the database is away: the loop says so too
                log = logger.warning if _is_expected(error) else logger.exception
                log("housekeeping failed, next try in %.0fs: %s", ALERT_POLL_S, error)
            queued.wait(ALERT_POLL_S)

    def _idle_s(self) -> float:
        upcoming = self.engine.next_wakeup()
        if upcoming is None:
            return self.tick_s
        wait = (upcoming - self.engine.clock()).total_seconds()
        return max(0.0, min(self.tick_s, wait))

    def _is_due(self, what: str, now: datetime, every: timedelta) -> bool:
        if now < self._due.get(what, now):
            return False
        self._due[what] = now + every
        return True

    def _heartbeat(self, now: datetime) -> None:
        me = self.engine.controller_id
        with self.db.begin() as conn:
            seen = conn.execute(
                controllers.update()
                .where(controllers.c.id == me)
                .values(heartbeat_at=now)
            )
            if seen.rowcount == 0:
                conn.execute(
                    controllers.insert().values(
                        id=me,
                        hostname=socket.gethostname(),
                        pid=os.getpid(),
                        started_at=now,
                        heartbeat_at=now,
                    )
                )

    def _reap_orphans(self, now: datetime) -> bool:
        """Fail the attempts of controllers that are gone, so their tasks retry."""
        with self.db.connect() as conn:
            alive = {row.id: row for row in conn.execute(sa.select(controllers))}
            running = conn.execute(
                sa.select(
                    attempts.c.id,
                    attempts.c.controller_id,
                    attempts.c.launcher,
                    attempts.c.external_id,
                ).where(attempts.c.state == "running")
            ).all()
        orphans = [
            a
            for a in running
            if a.controller_id != self.engine.controller_id
            and _is_gone(alive.get(a.controller_id), now)
        ]
        for attempt in orphans:
            logger.warning(
                "attempt %s lost with controller %s: failing it",
                attempt.id,
                attempt.controller_id,
            )
            _kill_left_behind(attempt, alive.get(attempt.controller_id))
            self.engine.events.put(
                AttemptEnded(
                    attempt.id,
                    False,
                    None,
                    "ControllerLost",
                    "the controller that ran this attempt stopped",
                )
            )
        return bool(orphans)

    def _busy_log_keys(self) -> set[str]:
        with self.db.connect() as conn:
            uris: Sequence[str] = (
                conn.execute(
                    sa.select(attempts.c.log_uri).where(attempts.c.state == "running")
                )
                .scalars()
                .all()
            )
        return {self.logs.key_of(uri) for uri in uris}


def _is_gone(controller: Any, now: datetime) -> bool:
    if controller is None or now - controller.heartbeat_at > STALE_AFTER:
        return True
    if controller.hostname == socket.gethostname():
        try:
            os.kill(controller.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
    return False


def _kill_left_behind(attempt: Any, controller: Any) -> None:
    """Kill the process group of a local attempt whose controller died here.

    A killed controller leaves its task processes running; its retry must not
    run beside them. NB: the group id is the old leader's pid, which the
    system does not hand out again while the group has members.
    """
    is_here = controller is not None and controller.hostname == socket.gethostname()
    if attempt.launcher != "local" or not is_here or not attempt.external_id:
        return
    with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
        os.killpg(int(attempt.external_id), signal.SIGKILL)
        logger.warning("killed what attempt %s left running", attempt.id)


def _is_expected(error: Exception) -> bool:
    return isinstance(error, (KdagError, *DATABASE_DOWN))


def new_controller_id() -> str:
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def build_controller(
    settings: Settings,
    *,
    on_output: OutputLine | None = None,
    db: sa.Engine | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> Controller:
    """Wire a controller from settings: database, logs, launcher, git, Slack."""
    if db is None:
        db = kdb.connect(settings.effective_db_url)
        kdb.with_retry(lambda: kdb.migrate(db))
    logs = open_store(
        settings.effective_logs_uri,
        spool_dir=settings.data_dir / "spool",
        s3_endpoint_url=settings.s3_endpoint_url,
    )
    events: queue.Queue[AttemptEnded] = queue.Queue()
    wake = threading.Event()

    def report(ended: AttemptEnded) -> None:
        events.put(ended)
        wake.set()

    launcher = make_launcher(
        settings.launcher, report=report, logs=logs, on_output=on_output
    )
    sync = _make_sync(settings, db)
    engine = Engine(
        db,
        launcher,
        logs,
        events=events,
        controller_id=new_controller_id(),
        default_namespace=settings.namespace,
        clock=clock,
        workdir_for=_workdir_finder(sync if settings.launcher == "local" else None),
    )
    notifier = None
    if settings.slack_webhook_url:
        from kdag.alerting.slack import SlackNotifier

        notifier = SlackNotifier(
            settings.slack_webhook_url, base_url=settings.effective_base_url
        )
    return Controller(
        engine=engine,
        logs=logs,
        wake=wake,
        sync=sync,
        notifier=notifier,
        poll_interval=timedelta(seconds=settings.poll_interval_s),
    )


def make_launcher(
    name: str,
    *,
    report: Callable[[AttemptEnded], None],
    logs: LogStore,
    on_output: OutputLine | None = None,
) -> Launcher:
    if name == "kubernetes":
        from kdag.launching.kubernetes import KubernetesLauncher

        return KubernetesLauncher(report=report, logs=logs)
    from kdag.launching.local import LocalLauncher

    return LocalLauncher(report=report, logs=logs, on_output=on_output)


def _make_sync(settings: Settings, db: sa.Engine) -> Any:
    if not settings.repo:
        return None
    from kdag.gitsync import GitSync
    from kdag.gitsync.repo import Repository

    def commits_in_use() -> set[str]:
        with db.connect() as conn:
            found = conn.execute(
                sa.select(runs.c.commit).where(runs.c.state.in_(ACTIVE_RUN)).distinct()
            )
            return set(found.scalars())

    repository = Repository(
        settings.repo,
        branch=settings.branch,
        path=settings.path,
        cache_dir=settings.data_dir / "git",
        in_use=commits_in_use,
    )
    return GitSync(db, repository, repo_label=settings.repo, branch=settings.branch)


def _workdir_finder(sync: Any) -> Callable[[str, str], Path | None]:
    def find(commit: str, path: str) -> Path | None:
        if commit in ("", "local"):  # `kdag run FILE`: the file's own folder
            return Path(path).parent if path else None
        if sync is None:
            return None
        return Path(sync.repository.checkout(commit)) / Path(path).parent

    return find
