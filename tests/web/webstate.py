"""State for the web tests: DAGs put in the database, and a real engine.

`Controller` is the engine with the local launcher (each task a Python
subprocess), stepped either by the test until a run ends, or by a thread as
the controller's loop would. Nothing here is emulated.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from kdag.db.schema import dags, runs, sync_errors, sync_state
from kdag.engine import ACTIVE_RUN, Engine
from kdag.launching import AttemptEnded
from kdag.launching.local import LocalLauncher
from kdag.logstore import LogStore
from kdag.specs.parsing import parse_dag
from tests.fakes import catalog

logger = logging.getLogger(__name__)
COMMIT = "3f2a9c1d5e7b8a6f4c2d1e0f9a8b7c6d5e4f3a2b"

QUICK = """\
name: quick
description: Two quick tasks, one after the other
owner: data-eng
schedule: "0 6 * * 1-5"
timezone: America/New_York
defaults:
  image: python:3.11
tasks:
  extract:
    command: [python, -c, "print('extracted 3 rows')"]
  load:
    command: [python, -c, "print('loaded')"]
    needs: [extract]
"""

FAILING = """\
name: failing
description: Fails on purpose
defaults:
  image: python:3.11
tasks:
  boom:
    command: [python, -c, "import sys; print('about to fail'); sys.exit(3)"]
  after:
    command: [python, -c, "print('never')"]
    needs: [boom]
"""


def gated_dag(gate: Path, *, name: str = "gated", lines_after: int = 0) -> str:
    """A one-task DAG whose task prints a line, waits for `gate`, prints another
    (after `lines_after` numbered lines)."""
    return f"""\
name: {name}
description: Waits until the test opens the gate
tasks:
  wait:
    image: python:3.11
    env:
      GATE: "{gate}"
    command:
      - python
      - -u
      - -c
      - |
        import os, time
        print("waiting for the gate", flush=True)
        while not os.path.exists(os.environ["GATE"]):
            time.sleep(0.05)
        for i in range({lines_after}):
            print("line", i + 1, flush=True)
        print("gate opened", flush=True)
"""


def add_dag(
    db: sa.Engine,
    source: str,
    *,
    error: str | None = None,
    is_active: bool = True,
) -> str:
    """Store `source` as the current version of its DAG; return the DAG's name."""
    name = parse_dag(source, "dag.yaml").name
    catalog.add_dag(
        db, source, now=datetime.now(UTC), path=f"dags/{name}.yaml", commit=COMMIT
    )
    with db.begin() as conn:
        conn.execute(
            dags.update()
            .where(dags.c.name == name)
            .values(error=error, is_active=is_active)
        )
    return name


def add_broken_dag(db: sa.Engine, name: str, error: str) -> None:
    """Store a DAG that never loaded: no version, only its error."""
    now = datetime.now(UTC)
    with db.begin() as conn:
        conn.execute(
            dags.insert().values(
                name=name,
                path=f"dags/{name}.yaml",
                version_id=None,
                is_active=True,
                error=error,
                schedule_anchor=now,
                updated_at=now,
            )
        )


def add_sync(db: sa.Engine, *, file_errors: dict[str, str]) -> None:
    """Record a git sync of COMMIT, with the files that failed to load."""
    now = datetime.now(UTC)
    with db.begin() as conn:
        conn.execute(
            sync_state.insert().values(
                repo="https://git.example.com/data/dags.git",
                branch="main",
                commit=COMMIT,
                synced_at=now,
            )
        )
        for path, message in file_errors.items():
            conn.execute(
                sync_errors.insert().values(
                    path=path, commit=COMMIT, message=message, created_at=now
                )
            )


class Controller:
    """The engine with a local launcher, stepped by the test or by a thread."""

    def __init__(self, db: sa.Engine, logs: LogStore) -> None:
        self.db = db
        self.events: queue.Queue[AttemptEnded] = queue.Queue()
        self.launcher = LocalLauncher(report=self.events.put, logs=logs)
        self.engine = Engine(
            db, self.launcher, logs, events=self.events, controller_id="test"
        )
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def trigger(self, dag: str) -> int:
        return self.engine.trigger(dag)

    def run_to_end(self, run_id: int, timeout_s: float = 30.0) -> str:
        """Step the engine until the run ends; return its final state."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.engine.step()
            state = self.state_of(run_id)
            if state not in ACTIVE_RUN:
                return state
            self._wait_for_an_end(0.5)
        raise AssertionError(f"run {run_id} did not end within {timeout_s}s")

    def state_of(self, run_id: int) -> str:
        with self.db.connect() as conn:
            query = sa.select(runs.c.state).where(runs.c.id == run_id)
            return str(conn.execute(query).scalar_one())

    def start(self) -> None:
        """Step the engine in a thread, as the controller's loop would."""
        self._thread = threading.Thread(target=self._loop, name="test-controller")
        self._thread.start()

    def close(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.launcher.close()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                did_work = self.engine.step()
            except Exception:
                logger.exception("test controller step failed")
                did_work = False
            if not did_work:
                self._wait_for_an_end(0.2)

    def _wait_for_an_end(self, timeout_s: float) -> None:
        # Wait until a launcher reports, then leave the report for step().
        try:
            ended = self.events.get(timeout=timeout_s)
        except queue.Empty:
            return
        self.events.put(ended)
