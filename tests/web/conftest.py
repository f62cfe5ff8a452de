"""Fixtures of the web tests: a log store, a controller, the app, its client.

Real parts: the database of `db` (SQLite and PostgreSQL), the engine and the
local launcher, the file log store, Flask's test client.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from kdag.logstore import LogStore, open_store
from kdag.web import create_app
from tests.web.webstate import Controller


@pytest.fixture
def logs(tmp_path: Path) -> LogStore:
    return open_store((tmp_path / "logs").as_uri(), spool_dir=tmp_path / "spool")


@pytest.fixture
def controller(db: sa.Engine, logs: LogStore) -> Iterator[Controller]:
    found = Controller(db, logs)
    yield found
    found.close()


@pytest.fixture
def app(db: sa.Engine, logs: LogStore, controller: Controller) -> Flask:
    return create_app(db=db, logs=logs, trigger=controller.trigger)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
