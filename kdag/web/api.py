"""The JSON API, under /api/v1. The shapes are those of `kdag.reading`.

    GET  /health                                   {"status": "ok"}
    GET  /dags                                     {"dags": [dag with latest runs]}
    GET  /dags/<dag>                               the DAG, its tasks and runs
    POST /dags/<dag>/runs                          trigger: 201 {"id", "url"}
    GET  /runs/<id>                                the run, its tasks, attempts
    GET  /runs/<id>/tasks/<task>/log               latest attempt's log, text
    GET  /runs/<id>/tasks/<task>/attempts/<n>/log  one attempt's log, text
    GET  /sync                                     the last git sync

Errors answer `{"error": message}` (see `kdag.web`).
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, request, url_for
from werkzeug.exceptions import BadRequest

from kdag import reading
from kdag.web import context

bp = Blueprint("api", __name__, url_prefix="/api/v1")
JSON_KINDS = {
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


@bp.get("/health")
def health() -> Any:
    return {"status": "ok"}


@bp.get("/dags")
def list_dags() -> Any:
    shown = context().runs_shown
    return {"dags": context().read(lambda conn: reading.list_dags(conn, shown))}


@bp.get("/dags/<dag>")
def get_dag(dag: str) -> Any:
    return context().read(lambda conn: reading.get_dag(conn, dag))


@bp.post("/dags/<dag>/runs")
def trigger(dag: str) -> Any:
    # The body is optional; nothing in it is read yet, but it must be an object.
    _json_object_or_nothing()
    run_id = context().trigger(dag)
    page = context().absolute(url_for("ui.run", run_id=run_id))
    location = url_for("api.get_run", run_id=run_id)
    return {"id": run_id, "url": page}, 201, {"Location": location}


@bp.get("/runs/<int:run_id>")
def get_run(run_id: int) -> Any:
    return context().read(lambda conn: reading.get_run(conn, run_id))


@bp.get("/runs/<int:run_id>/tasks/<task>/log")
@bp.get("/runs/<int:run_id>/tasks/<task>/attempts/<int:number>/log")
def log(run_id: int, task: str, number: int | None = None) -> Response:
    attempt = context().read(
        lambda conn: reading.get_attempt(conn, run_id, task, number)
    )
    response = Response(context().log_of(attempt), mimetype="text/plain")
    response.headers["X-Kdag-Attempt"] = str(attempt["number"])
    response.headers["X-Kdag-Attempt-State"] = attempt["state"]
    return response


@bp.get("/sync")
def sync() -> Any:
    return context().read(reading.sync_status)


def _json_object_or_nothing() -> dict[str, Any]:
    """Return the request's JSON object, {} for no body; raise BadRequest."""
    body = request.get_data(cache=True)
    if not body.strip():
        return {}
    if not request.is_json:
        raise BadRequest("send the body as JSON, with Content-Type: application/json")
    try:
        found = json.loads(body)
    except ValueError as error:
        raise BadRequest(f"the body is not valid JSON: {error}") from error
    if not isinstance(found, dict):
        kind = JSON_KINDS.get(type(found), "something else")
        raise BadRequest(f"the body must be a JSON object, not {kind}")
    return found
