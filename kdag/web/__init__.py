"""The web process: a JSON API under /api/v1 and a server-rendered UI.

`create_app` takes everything it needs (the database, the log store, and a
`trigger(dag) -> run id` callable that the controller supplies so a new run
wakes its loop) and returns a Flask app with two blueprints: `api` and `ui`.

Live pages use htmx polling, see `kdag.web.ui`. Errors answer JSON
`{"error": message}` under /api and a small HTML page elsewhere, never a
traceback. POST, PUT, PATCH and DELETE requests coming from another site's
page are refused (403), judged by the `Sec-Fetch-Site` and `Origin` headers
that browsers send, so a page elsewhere cannot trigger runs; clients such as
curl send neither and pass.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import Flask, current_app, render_template, request
from werkzeug.exceptions import Forbidden, HTTPException, MethodNotAllowed

from kdag import errors
from kdag.db import with_retry
from kdag.logstore import LogStore, log_key
from kdag.web import formatting

logger = logging.getLogger(__name__)
T = TypeVar("T")
UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


@dataclasses.dataclass(frozen=True)
class WebContext:
    """What every view reads from: set once by `create_app`."""

    db: sa.Engine
    logs: LogStore
    trigger: Callable[[str], int]
    runs_shown: int
    base_url: str

    def read(self, query: Callable[[sa.Connection], T]) -> T:
        """Run a read-only `query` on a connection of its own, again if lost."""

        def work() -> T:
            with self.db.connect() as conn:
                return query(conn)

        return with_retry(work)

    def log_of(self, attempt: dict[str, Any]) -> bytes:
        """Return the log of an attempt from `kdag.reading.get_attempt`.

        A running attempt that has written nothing yet has an empty log; a
        finished one without a stored log raises NotFound.
        """
        key = log_key(
            attempt["dag"], attempt["run_id"], attempt["task"], attempt["number"]
        )
        try:
            try:
                return self.logs.read(key)
            except FileNotFoundError:
                # NB: the spool file went away between the store's check and
                # its read (the upload finished): the store has it now.
                return self.logs.read(key)
        except errors.NotFound:
            if attempt["state"] == "running":
                return b""
            raise

    def absolute(self, path: str) -> str:
        """Return `path` as a full URL, on the configured base URL if any."""
        return (self.base_url or request.host_url).rstrip("/") + path


def context() -> WebContext:
    """Return the context of the app serving the current request."""
    found: WebContext = current_app.extensions["kdag"]
    return found


def create_app(
    *,
    db: sa.Engine,
    logs: LogStore,
    trigger: Callable[[str], int],
    runs_shown: int = 25,
    base_url: str = "",
) -> Flask:
    """Return the kdag web app serving `db` and `logs`."""
    from kdag.web import api, ui

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024  # no request of ours needs more
    app.extensions["kdag"] = WebContext(
        db=db,
        logs=logs,
        trigger=trigger,
        runs_shown=runs_shown,
        base_url=base_url.rstrip("/"),
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]
    formatting.register(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(ui.bp)
    app.before_request(_refuse_cross_site)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(errors.NotFound, _not_found)
    app.register_error_handler(errors.TemporaryError, _unavailable)
    app.register_error_handler(errors.PermanentError, _refused)
    app.register_error_handler(Exception, _internal_error)
    return app


# -- cross-site requests ----------------------------------------------------


def _refuse_cross_site() -> None:
    if request.method not in UNSAFE_METHODS:
        return
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        if site not in ("same-origin", "none"):
            raise Forbidden("cross-site requests may not change anything")
        return
    origin = request.headers.get("Origin")
    if origin and urlsplit(origin).netloc != request.host:
        raise Forbidden("cross-origin requests may not change anything")


# -- errors -------------------------------------------------------------------


def _is_api() -> bool:
    return request.path == "/api" or request.path.startswith("/api/")


def _error(message: str, status: int, headers: dict[str, str] | None = None) -> Any:
    if _is_api():
        return {"error": message}, status, headers or {}
    page = render_template("error.html", status=status, message=message)
    return page, status, headers or {}


def _http_error(error: HTTPException) -> Any:
    status = error.code or 500
    headers = dict(error.get_headers())
    headers.pop("Content-Type", None)
    if status == 404 and not request.url_rule:
        message = f"nothing at {request.path}"
    elif isinstance(error, MethodNotAllowed):
        allowed = ", ".join(sorted(error.valid_methods or []))
        message = f"{request.method} is not allowed here (allowed: {allowed})"
    else:
        message = error.description or error.name
    return _error(message, status, headers)


def _not_found(error: errors.NotFound) -> Any:
    return _error(str(error), 404)


def _refused(error: errors.PermanentError) -> Any:
    return _error(str(error), 409)


def _unavailable(error: errors.TemporaryError) -> Any:
    logger.warning("answering 503: %s", error)
    retry_after = str(max(1, round(error.delay_s)))
    return _error(str(error), 503, {"Retry-After": retry_after})


def _internal_error(error: Exception) -> Any:
    logger.error(
        "unexpected error on %s %s", request.method, request.path, exc_info=error
    )
    return _error("internal error; the server log has the details", 500)
