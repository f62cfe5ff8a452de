"""The DAG catalog: write one snapshot of the repository into the database.

`apply_snapshot` runs inside the caller's transaction, so a commit is applied
whole or not at all. For each file of the snapshot:

- a valid DAG makes its content the DAG's current version. Versions are keyed
  by (DAG, sha256 of path and source): a new `dag_versions` row only when the
  content or the file's place changed, otherwise the row that already holds
  it is reused (so a revert goes back to the old version). `dags` points at
  it, active, no error. `schedule_anchor` is set when the DAG is first seen,
  and again when it comes back after being inactive, so that its absence is
  never caught up.
- a broken file (parse errors, unreadable, or a DAG name claimed by two files)
  gets a `sync_errors` row with every `path:line:col: message` line. A DAG
  that came from that path keeps its `version_id`, so it keeps running its last
  good version, and shows the error. When two files claim one name, the file
  the DAG already comes from keeps it; with no such file, neither wins.
- an active DAG whose file is gone is deactivated; its versions and runs stay.

`sync_errors` rows of fixed files are deleted; `sync_state` (row 1) records
the commit applied. The `sync_state` row is read with FOR UPDATE first, so on
PostgreSQL two controllers applying snapshots take turns.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from kdag.db.schema import dags, sync_errors, sync_state
from kdag.db.versions import version_for
from kdag.errors import SpecErrors
from kdag.gitsync.repo import Snapshot
from kdag.specs.parsing import parse_dag

logger = logging.getLogger(__name__)
SYNC_STATE_ID = 1
_NAME_LINE = re.compile(r"^name\s*:")


@dataclass(frozen=True)
class SyncResult:
    """What one applied snapshot changed.

    loaded: DAG names valid at `commit`; updated: those whose current version
    changed (new DAGs included); broken: paths that could not be loaded;
    deactivated: DAG names whose file is gone.
    """

    commit: str
    loaded: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    broken: tuple[str, ...] = ()
    deactivated: tuple[str, ...] = ()


def apply_snapshot(
    conn: sa.Connection, snapshot: Snapshot, *, now: datetime, repo: str, branch: str
) -> SyncResult:
    """Write `snapshot` into the catalog; return what changed."""
    claim_sync_state(conn, repo=repo, branch=branch)
    sources, problems = _parse_all(snapshot)
    current = {row.name: row for row in conn.execute(sa.select(dags))}

    # Decide which file each DAG name comes from; the losers are broken files.
    owners, ambiguous = _pick_owners(sources, current)
    problems.update(ambiguous)
    updated: list[str] = []
    for name, path in sorted(owners.items()):
        source, row = sources[path][1], current.get(name)
        if _load_dag(
            conn,
            name,
            path=path,
            source=source,
            commit=snapshot.commit,
            now=now,
            row=row,
        ):
            updated.append(name)

    # DAGs whose file is broken keep their version; those with no file stop.
    erring = _dag_errors(current, owners, problems, sources)
    _set_dag_errors(conn, erring, current, now)
    gone = [
        name
        for name, row in sorted(current.items())
        if row.is_active and name not in owners and name not in erring
    ]
    _deactivate(conn, gone, current, now)

    _write_sync_errors(conn, problems, commit=snapshot.commit, now=now)
    _save_sync_state(conn, commit=snapshot.commit, synced_at=now, error=None)
    return SyncResult(
        commit=snapshot.commit,
        loaded=tuple(sorted(owners)),
        updated=tuple(updated),
        broken=tuple(sorted(problems)),
        deactivated=tuple(gone),
    )


def record_sync_failure(
    conn: sa.Connection, *, now: datetime, repo: str, branch: str, message: str
) -> None:
    """Record that the repository could not be read; DAGs stay as they are.

    `sync_state` keeps the last good commit and `synced_at`; `now` is unused
    until it gets a column for when the failure started.
    """
    claim_sync_state(conn, repo=repo, branch=branch)
    _save_sync_state(conn, error=message)


def mark_synced(conn: sa.Connection, *, commit: str, now: datetime) -> None:
    """Record that the branch head is still `commit`, as of `now`."""
    conn.execute(
        sync_state.update()
        .where(sync_state.c.id == SYNC_STATE_ID, sync_state.c.commit == commit)
        .values(synced_at=now)
    )


def claim_sync_state(conn: sa.Connection, *, repo: str, branch: str) -> None:
    """Lock the sync_state row (creating it), so that appliers take turns."""
    query = sa.select(sync_state).where(sync_state.c.id == SYNC_STATE_ID)
    row = conn.execute(query.with_for_update()).first()
    if row is None:
        conn.execute(
            sync_state.insert().values(id=SYNC_STATE_ID, repo=repo, branch=branch)
        )
    elif (row.repo, row.branch) != (repo, branch):
        _save_sync_state(conn, repo=repo, branch=branch)


# -- reading the files ----------------------------------------------------------


def _parse_all(
    snapshot: Snapshot,
) -> tuple[dict[str, tuple[str, str]], dict[str, str]]:
    """Parse every file: ({path: (DAG name, source)}, {path: error lines})."""
    sources: dict[str, tuple[str, str]] = {}
    problems = {
        path: f"{path}:1:1: {reason}" for path, reason in snapshot.unreadable.items()
    }
    for path, text in sorted(snapshot.files.items()):
        try:
            sources[path] = (parse_dag(text, path).name, text)
        except SpecErrors as exc:
            problems[path] = "\n".join(str(e) for e in exc.errors)
        except Exception as exc:  # a parser bug must not stop the other files
            logger.exception("unexpected error parsing %s", path)
            problems[path] = f"{path}:1:1: internal error reading this file: {exc}"
    return sources, problems


def _pick_owners(
    sources: dict[str, tuple[str, str]], current: dict[str, Any]
) -> tuple[dict[str, str], dict[str, str]]:
    """Map each DAG name to its one file: ({name: path}, {losing path: error})."""
    claims: dict[str, list[str]] = defaultdict(list)
    for path, (name, _source) in sorted(sources.items()):
        claims[name].append(path)
    owners: dict[str, str] = {}
    losers: dict[str, str] = {}
    for name, paths in claims.items():
        row = current.get(name)
        keeper = row.path if row is not None and row.path in paths else None
        if len(paths) == 1:
            keeper = paths[0]
        if keeper is not None:
            owners[name] = keeper
        for path in paths:
            if path != keeper:
                others = ", ".join(p for p in paths if p != path)
                line = _name_line(sources[path][1])
                losers[path] = f"{path}:{line}:1: DAG {name!r} is also in {others}"
    return owners, losers


def _name_line(source: str) -> int:
    """Return the line of the top-level `name:` key (1 if not found)."""
    for number, line in enumerate(source.splitlines(), start=1):
        if _NAME_LINE.match(line):
            return number
    return 1


# -- writing the catalog ----------------------------------------------------------


def _load_dag(
    conn: sa.Connection,
    name: str,
    *,
    path: str,
    source: str,
    commit: str,
    now: datetime,
    row: Any,
) -> bool:
    """Make `source` the DAG's current version; return whether that changed."""
    version_id = version_for(
        conn, name, path=path, source=source, commit=commit, now=now
    )
    values = {
        "path": path,
        "version_id": version_id,
        "is_active": True,
        "error": None,
        "commit": commit,
    }
    if row is None:
        conn.execute(
            dags.insert().values(
                name=name, schedule_anchor=now, updated_at=now, **values
            )
        )
    elif not row.is_active:
        logger.info("DAG reactivated: dag=%s commit=%s", name, commit[:12])
        conn.execute(
            dags.update()
            .where(dags.c.name == name)
            .values(schedule_anchor=now, updated_at=now, **values)
        )
    elif any(getattr(row, key) != value for key, value in values.items()):
        conn.execute(
            dags.update().where(dags.c.name == name).values(updated_at=now, **values)
        )
    return row is None or row.version_id != version_id


def _dag_errors(
    current: dict[str, Any],
    owners: dict[str, str],
    problems: dict[str, str],
    sources: dict[str, tuple[str, str]],
) -> dict[str, str]:
    """Return {DAG name: error} for known DAGs that no file could load."""
    erring: dict[str, str] = {}
    for name, row in current.items():
        if name not in owners and row.path in problems:
            erring[name] = problems[row.path]
    # A name claimed by several files, none of them its own: keep it, show why.
    for path, (name, _source) in sources.items():
        if name in current and name not in owners and path in problems:
            erring[name] = "\n".join(filter(None, [erring.get(name), problems[path]]))
    return erring


def _set_dag_errors(
    conn: sa.Connection, erring: dict[str, str], current: dict[str, Any], now: datetime
) -> None:
    """Show each error on its DAG, which keeps its last good version."""
    for name, message in sorted(erring.items()):
        logger.warning(
            "DAG keeps its last good version: dag=%s version=%s path=%s",
            name,
            current[name].version_id,
            current[name].path,
        )
        if current[name].error != message:
            conn.execute(
                dags.update()
                .where(dags.c.name == name)
                .values(error=message, updated_at=now)
            )


def _deactivate(
    conn: sa.Connection, names: list[str], current: dict[str, Any], now: datetime
) -> None:
    """Stop scheduling DAGs whose file is gone; keep their history."""
    for name in names:
        logger.info("DAG deactivated: dag=%s (no file at %s)", name, current[name].path)
        conn.execute(
            dags.update()
            .where(dags.c.name == name)
            .values(is_active=False, error=None, updated_at=now)
        )


def _write_sync_errors(
    conn: sa.Connection, problems: dict[str, str], *, commit: str, now: datetime
) -> None:
    """Make sync_errors list exactly the broken files, keeping when each broke."""
    for path, message in sorted(problems.items()):
        logger.warning("cannot load %s at %s:\n%s", path, commit[:12], message)
    existing = {row.path: row.message for row in conn.execute(sa.select(sync_errors))}
    fixed = [path for path in existing if path not in problems]
    if fixed:
        conn.execute(sync_errors.delete().where(sync_errors.c.path.in_(fixed)))
    for path, message in problems.items():
        values = {"commit": commit, "message": message, "created_at": now}
        if path not in existing:
            conn.execute(sync_errors.insert().values(path=path, **values))
        elif existing[path] != message:
            conn.execute(
                sync_errors.update().where(sync_errors.c.path == path).values(**values)
            )


def _save_sync_state(conn: sa.Connection, **values: Any) -> None:
    conn.execute(
        sync_state.update().where(sync_state.c.id == SYNC_STATE_ID).values(**values)
    )
