"""Start the long-running processes: the web server, and `kdag up`'s pair."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import sqlalchemy as sa

if TYPE_CHECKING:
    from werkzeug.serving import BaseWSGIServer

from kdag import db as kdb
from kdag.errors import ConfigError
from kdag.logstore import open_store
from kdag.settings import Settings

logger = logging.getLogger(__name__)


def open_db(settings: Settings) -> sa.Engine:
    """Connect to the configured database and bring its schema up to date."""
    engine = kdb.connect(settings.effective_db_url)
    kdb.with_retry(lambda: kdb.migrate(engine))
    return engine


def serve_web(
    settings: Settings,
    *,
    stop: threading.Event,
    db: sa.Engine | None = None,
    on_trigger: Callable[[], None] = lambda: None,
) -> None:
    """Serve the UI and API on settings.host:port until `stop` is set."""
    server = make_web_server(
        settings, db=db or open_db(settings), on_trigger=on_trigger
    )
    thread = threading.Thread(target=server.serve_forever, name="web", daemon=True)
    thread.start()
    logger.info("web UI at http://%s:%s", settings.host, settings.port)
    stop.wait()
    server.shutdown()


def make_web_server(
    settings: Settings, *, db: sa.Engine, on_trigger: Callable[[], None]
) -> BaseWSGIServer:
    """Bind the web server's port; raise ConfigError if it cannot be had."""
    from werkzeug.serving import make_server

    from kdag.engine import trigger_run, utc_now
    from kdag.web import create_app

    logs = open_store(
        settings.effective_logs_uri,
        spool_dir=settings.data_dir / "spool",
        s3_endpoint_url=settings.s3_endpoint_url,
    )

    def trigger(dag: str) -> int:
        with db.begin() as conn:
            run_id = trigger_run(conn, dag, now=utc_now())
        on_trigger()
        return run_id

    app = create_app(
        db=db,
        logs=logs,
        trigger=trigger,
        runs_shown=settings.runs_shown,
        base_url=settings.effective_base_url,
    )
    try:
        return make_server(settings.host, settings.port, app, threaded=True)
    except (OSError, SystemExit) as error:  # werkzeug exits when the port is taken
        raise ConfigError(
            f"cannot serve the web UI on {settings.host}:{settings.port}: "
            "the address is in use or not this machine's (see --host, --port)"
        ) from error


def serve_all(settings: Settings, *, stop: threading.Event) -> None:
    """Run the controller in this thread and the web server beside it."""
    from kdag.controller import build_controller

    db = open_db(settings)
    controller = build_controller(settings, db=db)
    # NB: bind the port before the controller starts, so a port in use stops both.
    server = make_web_server(settings, db=db, on_trigger=controller.wake.set)
    web = threading.Thread(target=server.serve_forever, name="web", daemon=True)
    web.start()
    logger.info("web UI at http://%s:%s", settings.host, settings.port)
    try:
        controller.run(stop)
    finally:
        server.shutdown()
