"""Start the long-running processes: the web server, and `kdag up`'s pair."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import sqlalchemy as sa

from kdag import db as kdb
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
    from werkzeug.serving import make_server

    from kdag.engine import trigger_run, utc_now
    from kdag.web import create_app

    db = db or open_db(settings)
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
    server = make_server(settings.host, settings.port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="web", daemon=True)
    thread.start()
    logger.info("web UI at http://%s:%s", settings.host, settings.port)
    stop.wait()
    server.shutdown()


def serve_all(settings: Settings, *, stop: threading.Event) -> None:
    """Run the controller in this thread and the web server beside it."""
    from kdag.controller import build_controller

    db = open_db(settings)
    controller = build_controller(settings, db=db)
    web = threading.Thread(
        target=serve_web,
        name="web-main",
        daemon=True,
        kwargs={
            "settings": settings,
            "stop": stop,
            "db": db,
            "on_trigger": controller.wake.set,
        },
    )
    web.start()
    controller.run(stop)
    web.join(timeout=5)
