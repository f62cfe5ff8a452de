"""Alerts through the real slack-sdk webhook client to a local HTTP receiver,
from the outbox table of a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from kdag.alerting import send_due_alerts
from kdag.alerting.slack import SlackNotifier
from kdag.db.schema import alerts
from tests.fakes.slack_receiver import SlackReceiver

NOW = datetime(2024, 7, 1, 12, tzinfo=UTC)
TASK_FAILED = {
    "kind": "task_failed",
    "dag": "loans",
    "run_id": 7,
    "task": "extract",
    "attempt": 3,
    "exit_code": 3,
    "reason": "Error",
    "message": "",
}


def enqueue(db: sa.Engine, payload: dict) -> None:
    with db.begin() as conn:
        conn.execute(
            alerts.insert().values(
                payload=payload, created_at=NOW, tries=0, next_try_at=NOW
            )
        )


def outbox(db: sa.Engine) -> list[sa.Row]:
    with db.connect() as conn:
        return conn.execute(sa.select(alerts).order_by(alerts.c.id)).all()


def test_a_failed_task_posts_dag_run_task_attempt_reason_and_a_link(
    db: sa.Engine,
) -> None:
    enqueue(db, TASK_FAILED)
    with SlackReceiver() as slack:
        notifier = SlackNotifier(slack.url, base_url="https://kdag.example.com/")
        assert send_due_alerts(db, notifier, NOW) == 1
        message = slack.next_message()

    text = message["text"]
    for part in ("loans", "extract", "run 7", "attempt 3", "Error", "exit code 3"):
        assert part in text
    link = "https://kdag.example.com/runs/7/tasks/extract/attempts/3"
    assert link in text
    assert message["blocks"][1]["elements"][0]["url"] == link
    assert outbox(db)[0].sent_at == NOW


def test_a_failing_webhook_is_retried_later_and_nothing_is_lost(db: sa.Engine) -> None:
    enqueue(db, TASK_FAILED)
    with SlackReceiver() as slack:
        slack.failures = [500]
        notifier = SlackNotifier(slack.url, base_url="http://ui")
        assert send_due_alerts(db, notifier, NOW) == 0
        (row,) = outbox(db)
        assert row.sent_at is None and row.tries == 1 and "500" in row.last_error

        # Not due again yet; then due, and delivered.
        assert send_due_alerts(db, notifier, NOW + timedelta(seconds=1)) == 0
        assert send_due_alerts(db, notifier, row.next_try_at) == 1
        assert slack.next_message()["text"].count("extract") >= 1
    assert slack.messages.empty()


def test_an_unreachable_webhook_is_recorded_not_raised(db: sa.Engine) -> None:
    with socket.socket() as probe:  # a port with nobody listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    enqueue(
        db,
        {
            "kind": "run_failed",
            "dag": "loans",
            "run_id": 9,
            "failed_tasks": ["extract"],
            "logical_date": "2024-07-01T10:00:00Z",
        },
    )
    notifier = SlackNotifier(f"http://127.0.0.1:{port}/hook", base_url="http://ui")

    assert send_due_alerts(db, notifier, NOW) == 0
    (row,) = outbox(db)
    assert row.sent_at is None and "unreachable" in row.last_error


def test_a_webhook_url_without_a_scheme_is_given_up_not_raised(db: sa.Engine) -> None:
    enqueue(db, TASK_FAILED)
    notifier = SlackNotifier("hooks.slack.com/services/T0/B0/XX", base_url="http://ui")

    assert send_due_alerts(db, notifier, NOW) == 0
    (row,) = outbox(db)
    # Retrying the same URL cannot help: the alert is given up at once.
    assert row.sent_at == NOW and "unusable" in row.last_error


class Broken:
    """A notifier that breaks its promise to raise only kdag's errors."""

    def __init__(self, stop: threading.Event | None = None) -> None:
        self.stop = stop
        self.sent: list[dict] = []

    def send(self, alert: dict) -> None:
        self.sent.append(alert)
        if self.stop is not None:
            self.stop.set()
        raise RuntimeError("a bug in the notifier")


def test_any_error_of_a_notifier_is_recorded_and_retried_not_raised(
    db: sa.Engine,
) -> None:
    enqueue(db, TASK_FAILED)
    assert send_due_alerts(db, Broken(), NOW) == 0
    (row,) = outbox(db)
    assert row.sent_at is None and row.tries == 1 and "bug" in row.last_error
    assert row.next_try_at > NOW


def test_sending_stops_between_alerts_when_asked(db: sa.Engine) -> None:
    enqueue(db, TASK_FAILED)
    enqueue(db, TASK_FAILED)
    stop = threading.Event()
    notifier = Broken(stop)  # asks to stop while sending the first
    send_due_alerts(db, notifier, NOW, stop=stop)
    assert len(notifier.sent) == 1
    assert [r.tries for r in outbox(db)] == [1, 0]


class Recording:
    """A notifier that records what it sends and can run something meanwhile."""

    def __init__(self, meanwhile: Callable[[], None] = lambda: None) -> None:
        self.sent: list[dict] = []
        self.meanwhile = meanwhile

    def send(self, alert: dict) -> None:
        self.sent.append(alert)
        meanwhile, self.meanwhile = self.meanwhile, lambda: None
        meanwhile()


def test_two_controllers_never_send_the_same_alert(db: sa.Engine) -> None:
    enqueue(db, {**TASK_FAILED, "attempt": 1})
    enqueue(db, {**TASK_FAILED, "attempt": 2})
    # While A sends the first alert, B drains the outbox: it takes the second
    # only, and A, holding a stale view of the second, leaves it alone.
    b = Recording()
    a = Recording(meanwhile=lambda: send_due_alerts(db, b, NOW))
    send_due_alerts(db, a, NOW)

    assert [x["attempt"] for x in a.sent] == [1]
    assert [x["attempt"] for x in b.sent] == [2]
    assert all(row.sent_at == NOW for row in outbox(db))
