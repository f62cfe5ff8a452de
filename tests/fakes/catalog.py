"""Put a DAG straight into the catalog tables, as git sync would."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from kdag.db.schema import dags
from kdag.db.versions import version_for
from kdag.specs.parsing import parse_dag


def add_dag(
    db: sa.Engine,
    source: str,
    *,
    now: datetime,
    path: str = "dags/x.yaml",
    commit: str = "c0ffee",
) -> int:
    """Store `source` as the current version of its DAG; return the version id."""
    name = parse_dag(source, path).name
    with db.begin() as conn:
        version_id = version_for(
            conn, name, path=path, source=source, commit=commit, now=now
        )
        exists = conn.execute(sa.select(dags.c.name).where(dags.c.name == name)).first()
        values = {
            "path": path,
            "version_id": version_id,
            "is_active": True,
            "updated_at": now,
        }
        if exists:
            conn.execute(dags.update().where(dags.c.name == name).values(**values))
        else:
            conn.execute(dags.insert().values(name=name, schedule_anchor=now, **values))
    return version_id
