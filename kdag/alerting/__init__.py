"""Failure alerts, sent from an outbox so a failing webhook never loses one.

The engine writes an `alerts` row in the same transaction as the failure it
reports. The controller's alert sender (a thread of its own, so a slow webhook
never slows scheduling) calls `send_due_alerts`, which hands each due row to
the notifier: sent rows are marked; after a TemporaryError, or any unexpected
error, a row is tried again later with a growing delay, for up to a day; after
a PermanentError it is given up at once. Sending one alert never raises.

Several controllers may share the outbox: an alert is claimed before it is
sent, by moving its `next_try_at` a lease ahead with a conditional update, so
only the controller whose update changed the row sends it. A controller that
dies while sending leaves the lease to expire, and the alert is sent again.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from threading import Event
from typing import Any, Protocol

import sqlalchemy as sa

from kdag.db.schema import alerts
from kdag.errors import KdagError, PermanentError

logger = logging.getLogger(__name__)
GIVE_UP_AFTER = timedelta(days=1)
MAX_DELAY = timedelta(minutes=10)
LEASE = timedelta(minutes=2)  # longer than any one send may take


class Notifier(Protocol):
    def send(self, alert: dict[str, Any]) -> None:
        """Deliver one alert; raise TemporaryError if it should be tried again."""
        ...


def send_due_alerts(
    db: sa.Engine, notifier: Notifier, now: datetime, *, stop: Event | None = None
) -> int:
    """Send every due alert, until `stop` is set; return how many went out.

    Raises only if the database cannot be read or written.
    """
    with db.connect() as conn:
        due = conn.execute(
            sa.select(alerts)
            .where(
                alerts.c.sent_at.is_(None),
                alerts.c.next_try_at <= now,
            )
            .order_by(alerts.c.id)
            .limit(50)
        ).all()
    sent = 0
    for row in due:
        if stop is not None and stop.is_set():
            break
        if not _claim(db, row, now):
            continue  # another controller is sending it
        try:
            notifier.send(row.payload)
        except Exception as error:
            if not isinstance(error, KdagError):  # a notifier that breaks its promise
                logger.exception("alert %s: unexpected error from the notifier", row.id)
            _record_failure(db, row, now, error)
            continue
        with db.begin() as conn:
            conn.execute(
                alerts.update()
                .where(alerts.c.id == row.id)
                .values(sent_at=now, tries=row.tries + 1, last_error=None)
            )
        logger.info(
            "alert sent: %s dag=%s run=%s",
            row.payload.get("kind"),
            row.payload.get("dag"),
            row.payload.get("run_id"),
        )
        sent += 1
    return sent


def _claim(db: sa.Engine, row: Any, now: datetime) -> bool:
    """Lease `row` to this controller; return whether the lease was ours to take."""
    with db.begin() as conn:
        leased = conn.execute(
            alerts.update()
            .where(
                alerts.c.id == row.id,
                alerts.c.sent_at.is_(None),
                alerts.c.next_try_at == row.next_try_at,
            )
            .values(next_try_at=now + LEASE)
        )
    return leased.rowcount == 1


def _record_failure(db: sa.Engine, row: Any, now: datetime, error: Exception) -> None:
    tries = row.tries + 1
    delay = min(timedelta(seconds=5 * 2 ** min(tries, 10)), MAX_DELAY)
    gave_up = isinstance(error, PermanentError) or now - row.created_at > GIVE_UP_AFTER
    with db.begin() as conn:
        conn.execute(
            alerts.update()
            .where(alerts.c.id == row.id)
            .values(
                tries=tries,
                next_try_at=now + delay,
                last_error=str(error),
                sent_at=now if gave_up else None,
            )
        )
    if gave_up:
        logger.error("alert given up after %s tries: %s: %s", tries, row.id, error)
    else:
        logger.warning(
            "alert not sent (try %s), retrying in %ss: %s",
            tries,
            int(delay.total_seconds()),
            error,
        )
