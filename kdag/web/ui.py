"""The web UI: server-rendered pages that stay live through htmx polling.

Each page holds a "live" element: a fragment of the page with its own URL
under /fragments. The element asks that URL again every two seconds, passing
the version (a hash of the HTML) it shows; the server answers 204 No Content
when nothing changed, which htmx leaves alone, or the new element, which
replaces the old one. An element whose content can no longer change (a
finished run) is rendered without the polling attributes, so it stops asking.

Logs tail differently, since they only grow: the page shows the log up to its
last complete line, and the tail element asks for what came after that byte
offset. The answer appends the new lines to the <pre> (an out-of-band swap)
and replaces the tail element with one holding the new offset, or, once the
attempt has ended, with one that no longer polls.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

from flask import Blueprint, redirect, render_template, request, url_for
from markupsafe import Markup

from kdag import errors, reading
from kdag.web import context

bp = Blueprint("ui", __name__)
POLL_EVERY = "2s"
LOG_SHOWN_BYTES = 1 << 20  # a longer log shows its end; the API has it whole
RUN_CREATED = "kdag-run-created"  # the htmx event a trigger fires on the page


@dataclasses.dataclass(frozen=True)
class Live:
    """A rendered live element and the version it shows."""

    html: Markup
    version: str


@bp.context_processor
def _polling() -> dict[str, str]:
    return {"poll_every": POLL_EVERY}


# -- the dashboard --------------------------------------------------------------


@bp.get("/")
def dashboard() -> Any:
    return render_template("dashboard.html", board=_board().html)


@bp.get("/fragments/dashboard")
def dashboard_fragment() -> Any:
    return _answer(_board())


def _board() -> Live:
    shown = context().runs_shown
    dags, sync = context().read(
        lambda conn: (reading.list_dags(conn, shown), reading.sync_status(conn))
    )
    return _live(
        "_board.html",
        element_id="board",
        url=url_for("ui.dashboard_fragment"),
        is_live=True,
        also=f"{RUN_CREATED} from:body",
        dags=dags,
        sync=sync,
    )


@bp.post("/dags/<dag>/trigger")
def trigger(dag: str) -> Any:
    """Create a run: a flash message for htmx, else a redirect to the run."""
    is_htmx = request.headers.get("HX-Request") == "true"
    try:
        run_id = context().trigger(dag)
    except (errors.NotFound, errors.TemporaryError) as error:
        if not is_htmx:
            raise
        status = 404 if isinstance(error, errors.NotFound) else 503
        return render_template("_flash.html", error=str(error)), status
    if not is_htmx:
        return redirect(url_for("ui.run", run_id=run_id), 303)
    flash = render_template("_flash.html", dag=dag, run_id=run_id)
    return flash, 200, {"HX-Trigger": RUN_CREATED}


# -- a DAG --------------------------------------------------------------------


@bp.get("/dags/<dag>")
def dag(dag: str) -> Any:
    found, live = _dag_runs(dag)
    return render_template("dag.html", dag=found, runs=live.html)


@bp.get("/fragments/dags/<dag>")
def dag_fragment(dag: str) -> Any:
    return _answer(_dag_runs(dag)[1])


def _dag_runs(name: str) -> tuple[dict[str, Any], Live]:
    found = context().read(lambda conn: reading.get_dag(conn, name))
    live = _live(
        "_dag_runs.html",
        element_id="dag-runs",
        url=url_for("ui.dag_fragment", dag=name),
        is_live=True,
        also=f"{RUN_CREATED} from:body",
        dag=found,
    )
    return found, live


# -- a run --------------------------------------------------------------------


@bp.get("/runs/<int:run_id>")
def run(run_id: int) -> Any:
    found, live = _run(run_id)
    return render_template("run.html", run=found, tasks=live.html)


@bp.get("/fragments/runs/<int:run_id>")
def run_fragment(run_id: int) -> Any:
    return _answer(_run(run_id)[1])


def _run(run_id: int) -> tuple[dict[str, Any], Live]:
    found = context().read(lambda conn: reading.get_run(conn, run_id))
    live = _live(
        "_run.html",
        element_id="run-live",
        url=url_for("ui.run_fragment", run_id=run_id),
        is_live=found["is_active"],
        run=found,
    )
    return found, live


@bp.get("/runs/<int:run_id>/tasks/<task>")
def latest_attempt(run_id: int, task: str) -> Any:
    attempt = context().read(lambda conn: reading.get_attempt(conn, run_id, task))
    target = url_for("ui.log", run_id=run_id, task=task, number=attempt["number"])
    return redirect(target)


# -- a log ----------------------------------------------------------------------


@bp.get("/runs/<int:run_id>/tasks/<task>/attempts/<int:number>")
def log(run_id: int, task: str, number: int) -> Any:
    run, attempt = context().read(
        lambda conn: (
            reading.get_run(conn, run_id),
            reading.get_attempt(conn, run_id, task, number),
        )
    )
    data = context().log_of(attempt)
    is_running = attempt["state"] == "running"
    shown = _complete_lines(data) if is_running else data
    offset = len(shown)
    is_cut = offset > LOG_SHOWN_BYTES
    if is_cut:
        tail = shown[-LOG_SHOWN_BYTES:]
        shown = tail[tail.find(b"\n") + 1 :]
    return render_template(
        "log.html",
        run=run,
        task=next(t for t in run["tasks"] if t["name"] == task),
        attempt=attempt,
        text=shown.decode(errors="replace"),
        offset=offset,
        is_cut=is_cut,
    )


@bp.get("/fragments/runs/<int:run_id>/tasks/<task>/attempts/<int:number>/tail")
def log_tail(run_id: int, task: str, number: int) -> Any:
    offset = max(0, request.args.get("offset", 0, type=int))
    attempt = context().read(
        lambda conn: reading.get_attempt(conn, run_id, task, number)
    )
    is_running = attempt["state"] == "running"
    chunk = context().log_of(attempt)[offset:]
    if is_running:
        chunk = _complete_lines(chunk)
        if not chunk:
            return "", 204
    return render_template(
        "_log_tail.html",
        attempt=attempt,
        chunk=chunk.decode(errors="replace"),
        offset=offset + len(chunk),
        is_running=is_running,
    )


def _complete_lines(data: bytes) -> bytes:
    """Cut a growing log after its last newline (a line may be half written)."""
    return data[: data.rfind(b"\n") + 1]


# -- live elements ----------------------------------------------------------------


def _live(
    template: str,
    *,
    element_id: str,
    url: str,
    is_live: bool,
    also: str = "",
    **values: Any,
) -> Live:
    """Render `template` inside a live element polling `url` while `is_live`."""
    inner = render_template(template, **values)
    version = hashlib.sha256(f"{is_live}\n{inner}".encode()).hexdigest()[:16]
    html = render_template(
        "_live.html",
        element_id=element_id,
        url=url,
        version=version,
        is_live=is_live,
        also=also,
        inner=Markup(inner),
    )
    return Live(Markup(html), version)


def _answer(live: Live) -> Any:
    """Answer a poll: 204 if the caller already shows this version."""
    if request.args.get("v") == live.version:
        return "", 204
    return live.html
