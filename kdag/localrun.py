"""`kdag run FILE`: one DAG run on this machine, now, with task output in the
terminal. It is the controller's own engine on an in-memory database, with
the local launcher and a throw-away log folder, so a DAG behaves here as it
will under the controller."""

from __future__ import annotations

import io
import itertools
import tempfile
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from kdag import db as kdb
from kdag.db.schema import attempts, dags, runs, tasks
from kdag.db.versions import version_for
from kdag.engine import trigger_run
from kdag.launching import Launch
from kdag.settings import Settings

COLOURS = itertools.cycle(["cyan", "magenta", "yellow", "green", "blue", "bright_red"])


def run_file(
    file: Path,
    *,
    only: tuple[str, ...] = (),
    echo: Callable[[str], None] = print,
    db_url: str = "sqlite://",
) -> bool:
    """Run the DAG in `file` (or some of its tasks); return whether it succeeded."""
    import click

    source = file.read_text(encoding="utf-8")
    if only:
        source = _only_tasks(source, only)
    with tempfile.TemporaryDirectory(prefix="kdag-run-") as scratch:
        settings = Settings(data_dir=Path(scratch), db_url=db_url)
        db = kdb.connect(db_url)
        kdb.migrate(db)
        colours: dict[str, str] = {}
        lock = threading.Lock()

        def on_output(launch: Launch, line: str) -> None:
            colour = colours.setdefault(launch.task, next(COLOURS))
            tag = (
                launch.task
                if launch.attempt == 1
                else f"{launch.task}#{launch.attempt}"
            )
            with lock:
                echo(f"{click.style(tag, fg=colour)} | {line}")

        from kdag.controller import build_controller

        controller = build_controller(settings, on_output=on_output, db=db)
        run_id = _start(db, source, str(file.resolve()))
        stop = threading.Event()
        try:
            state = _drive(controller, run_id, stop)
        except KeyboardInterrupt:
            controller.engine.cancel_run(run_id)
            controller.engine.launcher.close()
            raise
        _summarise(db, run_id, echo)
        controller.engine.launcher.close()
        db.dispose()
        return bool(state == "succeeded")


def _start(db: sa.Engine, source: str, path: str) -> int:
    now = datetime.now(UTC)
    with db.begin() as conn:
        from kdag.specs.parsing import parse_dag

        name = parse_dag(source, path).name
        version_id = version_for(
            conn, name, path=path, source=source, commit="local", now=now
        )
        values = {"path": path, "version_id": version_id, "is_active": True}
        updated = conn.execute(
            dags.update().where(dags.c.name == name).values(updated_at=now, **values)
        )
        if updated.rowcount == 0:
            conn.execute(
                dags.insert().values(
                    name=name, schedule_anchor=now, updated_at=now, **values
                )
            )
        return trigger_run(conn, name, now=now)


def _drive(controller: Any, run_id: int, stop: threading.Event) -> str:
    """Step the controller until the run is over; return its final state."""
    while True:
        controller.wake.clear()
        did_work = controller.step()
        with controller.db.connect() as conn:
            state = conn.execute(
                sa.select(runs.c.state).where(runs.c.id == run_id)
            ).scalar()
        if state not in ("queued", "running"):
            return str(state)
        if not did_work:
            controller.wake.wait(controller._idle_s())


def _summarise(db: sa.Engine, run_id: int, echo: Callable[[str], None]) -> None:
    with db.connect() as conn:
        run = conn.execute(sa.select(runs).where(runs.c.id == run_id)).one()
        rows = conn.execute(
            sa.select(tasks).where(tasks.c.run_id == run_id).order_by(tasks.c.id)
        ).all()
        last = {
            a.task_id: a
            for a in conn.execute(
                sa.select(attempts)
                .join(tasks)
                .where(tasks.c.run_id == run_id)
                .order_by(attempts.c.number)
            )
        }
    echo("")
    for row in rows:
        attempt = last.get(row.id)
        detail = ""
        if attempt is not None and attempt.ended_at is not None:
            seconds = (attempt.ended_at - attempt.started_at).total_seconds()
            detail = f"{seconds:.1f}s, attempt {attempt.number}"
            if attempt.state == "failed":
                detail += f", {attempt.reason}, exit code {attempt.exit_code}"
        echo(f"  {row.name:<24} {row.state:<16} {detail}")
    took = (run.ended_at - run.created_at).total_seconds() if run.ended_at else 0
    echo(f"run {run.state} in {took:.2f}s")


def _only_tasks(source: str, only: tuple[str, ...]) -> str:
    """Return the DAG's source with just the `only` tasks and no needs between them
    and the rest."""
    from ruamel.yaml import YAML

    yaml = YAML(typ="rt")
    document = yaml.load(source)
    for name in list(document["tasks"]):
        if name not in only:
            del document["tasks"][name]
    for task in document["tasks"].values():
        kept = [n for n in task.get("needs") or () if n in only]
        if "needs" in task:
            if kept:
                task["needs"] = kept
            else:
                del task["needs"]
    out = io.StringIO()
    yaml.dump(document, out)
    return out.getvalue()
