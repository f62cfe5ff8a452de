"""Git sync: keep the DAG catalog in the database equal to the DAG repository.

`GitSync.sync(now)` is one step of the controller loop:

1. fetch the branch and read its DAG files at its head commit
   (`repo.Repository`);
2. on a fetch failure, record it in `sync_state` and change no DAG: every DAG
   keeps running its current version until the repository answers again;
3. otherwise apply the snapshot to the catalog in one transaction
   (`catalog.apply_snapshot`).

A commit already applied by this process is not parsed again, so a poll that
finds nothing new costs one `git fetch`, and moves `synced_at` (the UI's
"synced at" is the last look). The first sync after a start always applies,
so a kdag upgrade that reads files differently takes effect at once.
"""

from __future__ import annotations

import logging
from datetime import datetime

import sqlalchemy as sa

from kdag.errors import TemporaryError
from kdag.gitsync.catalog import (
    SyncResult,
    apply_snapshot,
    mark_synced,
    record_sync_failure,
)
from kdag.gitsync.repo import Repository, Snapshot, redact

__all__ = ["GitSync", "Repository", "Snapshot", "SyncResult"]

logger = logging.getLogger(__name__)


class GitSync:
    """Sync one repository branch into the catalog of one database."""

    def __init__(
        self, db: sa.Engine, repository: Repository, *, repo_label: str, branch: str
    ) -> None:
        self.db = db
        self.repository = repository
        self.repo_label = redact(repo_label)
        self.branch = branch
        self._applied_commit: str | None = None
        self._last_failure: str | None = None

    def sync(self, now: datetime) -> SyncResult | None:
        """Fetch and apply the branch head; return None when nothing was applied."""
        try:
            snapshot = self.repository.fetch()
        except TemporaryError as exc:
            self._record_failure(now, str(exc))
            return None
        if snapshot.commit == self._applied_commit:
            logger.debug("no new commit: %s", snapshot.commit[:12])
            with self.db.begin() as conn:  # the UI's "synced at": the last look
                mark_synced(conn, commit=snapshot.commit, now=now)
            return None

        with self.db.begin() as conn:
            result = apply_snapshot(
                conn, snapshot, now=now, repo=self.repo_label, branch=self.branch
            )
        self._applied_commit = snapshot.commit
        self._last_failure = None
        logger.info(
            "synced %s@%s: %d DAGs, %d updated, %d broken files, %d deactivated",
            self.repo_label,
            snapshot.commit[:12],
            len(result.loaded),
            len(result.updated),
            len(result.broken),
            len(result.deactivated),
        )
        return result

    def _record_failure(self, now: datetime, message: str) -> None:
        """Keep every DAG as it is; say why the repository could not be read."""
        # Warn when the failure starts or changes, not on every poll it lasts.
        if message != self._last_failure:
            logger.warning("git sync failed, DAGs unchanged: %s", message)
        else:
            logger.debug("git sync still failing: %s", message)
        self._last_failure = message
        self._applied_commit = None  # apply again once it answers, clearing error
        with self.db.begin() as conn:
            record_sync_failure(
                conn, now=now, repo=self.repo_label, branch=self.branch, message=message
            )
