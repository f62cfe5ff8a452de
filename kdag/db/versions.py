"""DAG versions: every distinct DAG file, stored once.

A version is keyed by (DAG, sha256 of path and source). The same text at the
same path is the same version whichever commit brings it back (a revert); the
same text moved to another folder is another, since a task runs in its
file's folder. Git sync and `kdag run` both store versions through here.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime

import sqlalchemy as sa

from kdag.db.schema import dag_versions

logger = logging.getLogger(__name__)


def version_for(
    conn: sa.Connection,
    name: str,
    *,
    path: str,
    source: str,
    commit: str,
    now: datetime,
) -> int:
    """Return the id of the version holding `source` at `path`, inserting it if new.

    NB: the path is part of the key: a task runs in its file's folder, so the
    same text moved to another folder is another version.
    """
    digest = hashlib.sha256(f"{path}\n{source}".encode()).hexdigest()
    found = conn.execute(
        sa.select(dag_versions.c.id).where(
            dag_versions.c.dag == name, dag_versions.c.digest == digest
        )
    ).first()
    if found is not None:
        return int(found.id)
    version_id: int = conn.execute(
        dag_versions.insert()
        .values(
            dag=name,
            commit=commit,
            path=path,
            digest=digest,
            source=source,
            created_at=now,
        )
        .returning(dag_versions.c.id)
    ).scalar_one()
    logger.info(
        "DAG version loaded: dag=%s commit=%s path=%s version=%s",
        name,
        commit[:12],
        path,
        version_id,
    )
    return int(version_id)
