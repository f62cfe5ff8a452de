"""Git sync into the catalog: real git repositories in temp folders, the real
parser, and real databases (SQLite, then PostgreSQL). Nothing is emulated."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from kdag.db.schema import dag_versions, dags, sync_errors, sync_state
from kdag.gitsync import GitSync, catalog
from kdag.gitsync.repo import Repository
from tests.gitsync.gitrepos import DAG_A, Origin, dag

T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
BOTH_ADDRESSES = pytest.mark.parametrize("sync", ["path", "url"], indirect=True)
BROKEN_A = 'name: a\ntasks:\n  t:\n    image: busybox\n    comand: ["true"]\n'


@pytest.fixture
def origin(tmp_path: Path) -> Origin:
    origin = Origin(tmp_path / "origin")
    origin.write("dags/a.yaml", DAG_A)
    origin.write("dags/b.yaml", dag("b"))
    origin.commit("first")
    return origin


@pytest.fixture
def sync(request: pytest.FixtureRequest, db: sa.Engine, origin: Origin) -> GitSync:
    """A GitSync of origin's dags/ folder, by local path (or file:// URL, with
    `BOTH_ADDRESSES`)."""
    by = getattr(request, "param", "path")
    address = str(origin.folder) if by == "path" else origin.url
    repository = Repository(
        address, branch="main", path="dags", cache_dir=origin.folder.parent / "cache"
    )
    return GitSync(db, repository, repo_label=address, branch="main")


def dag_rows(db: sa.Engine) -> dict[str, Any]:
    with db.connect() as conn:
        query = sa.select(
            dags.c.name,
            dags.c.path,
            dags.c.version_id,
            dags.c.is_active,
            dags.c.error,
            dags.c.schedule_anchor,
            dags.c.updated_at,
            dags.c.commit.label("synced_commit"),
            dag_versions.c.commit,
            dag_versions.c.source,
        )
        joined = query.outerjoin(dag_versions, dag_versions.c.id == dags.c.version_id)
        return {row.name: row for row in conn.execute(joined)}


def error_rows(db: sa.Engine) -> dict[str, Any]:
    with db.connect() as conn:
        return {row.path: row for row in conn.execute(sa.select(sync_errors))}


def state_row(db: sa.Engine) -> Any:
    with db.connect() as conn:
        return conn.execute(sa.select(sync_state)).one()


def version_count(db: sa.Engine) -> int:
    with db.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(dag_versions)).one()[
            0
        ]


@BOTH_ADDRESSES
def test_a_valid_dag_loads_with_its_commit(sync: GitSync, origin: Origin) -> None:
    result = sync.sync(T0)

    assert result is not None
    assert result.commit == origin.head()
    assert result.loaded == result.updated == ("a", "b")
    rows = dag_rows(sync.db)
    assert rows["a"].commit == origin.head()
    assert rows["a"].source == DAG_A
    assert rows["a"].path == "dags/a.yaml"
    assert rows["a"].is_active and rows["a"].error is None
    assert rows["a"].schedule_anchor == T0
    state = state_row(sync.db)
    assert (state.commit, state.synced_at, state.error) == (origin.head(), T0, None)
    assert state.branch == "main"


@BOTH_ADDRESSES
def test_a_changed_dag_gets_a_new_version_and_the_other_keeps_its_own(
    sync: GitSync, origin: Origin
) -> None:
    first = origin.head()
    sync.sync(T0)
    before = dag_rows(sync.db)

    origin.write("dags/a.yaml", dag("a", image="alpine"))
    second = origin.commit("second")
    result = sync.sync(T0 + timedelta(minutes=1))

    assert result is not None and result.updated == ("a",)
    after = dag_rows(sync.db)
    assert after["a"].version_id != before["a"].version_id
    assert after["a"].commit == second
    assert after["b"].version_id == before["b"].version_id
    assert after["b"].commit == first
    assert after["b"].synced_commit == second  # what a new run of b records
    assert after["a"].schedule_anchor == T0  # set on first sight only
    assert version_count(sync.db) == 3


@BOTH_ADDRESSES
def test_a_broken_file_keeps_the_last_good_version(
    sync: GitSync, origin: Origin
) -> None:
    sync.sync(T0)
    good = dag_rows(sync.db)["a"]

    origin.write("dags/a.yaml", BROKEN_A)
    broken = origin.commit("typo")
    result = sync.sync(T0 + timedelta(minutes=1))

    assert result is not None and result.broken == ("dags/a.yaml",)
    row = dag_rows(sync.db)["a"]
    assert row.version_id == good.version_id and row.is_active
    assert row.error.splitlines() == [
        "dags/a.yaml:3:3: tasks.t: 'command' is required",
        "dags/a.yaml:5:5: tasks.t.comand: unknown field (did you mean 'command'?)",
    ]
    error = error_rows(sync.db)["dags/a.yaml"]
    assert (error.commit, error.message) == (broken, row.error)
    assert state_row(sync.db).commit == broken


def test_a_fixed_file_clears_its_error(sync: GitSync, origin: Origin) -> None:
    sync.sync(T0)
    origin.write("dags/a.yaml", BROKEN_A)
    origin.commit("typo")
    sync.sync(T0 + timedelta(minutes=1))

    origin.write("dags/a.yaml", dag("a", image="alpine"))
    fixed = origin.commit("fix")
    sync.sync(T0 + timedelta(minutes=2))

    assert error_rows(sync.db) == {}
    row = dag_rows(sync.db)["a"]
    assert (row.error, row.commit) == (None, fixed)


def test_a_broken_file_never_stops_the_other_dags(
    sync: GitSync, origin: Origin
) -> None:
    origin.write("dags/c.yaml", "name: c\ntasks: [\n")
    origin.write("dags/d.yaml", dag("d"))
    origin.write("dags/e.yaml", "name: e\ntasks:\n  t:\n    needs: [nope]\n")
    origin.commit("more")
    result = sync.sync(T0)

    assert result is not None
    assert result.loaded == ("a", "b", "d")
    assert result.broken == ("dags/c.yaml", "dags/e.yaml")
    errors = error_rows(sync.db)
    assert errors["dags/c.yaml"].message.startswith("dags/c.yaml:3:1: ")
    for line in errors["dags/e.yaml"].message.splitlines():
        assert line.startswith("dags/e.yaml:"), line
    assert set(dag_rows(sync.db)) == {"a", "b", "d"}


def test_a_second_file_claiming_a_dag_name_does_not_take_it(
    sync: GitSync, origin: Origin
) -> None:
    sync.sync(T0)
    origin.write("dags/copy.yaml", dag("a", image="alpine"))
    origin.commit("copy")
    result = sync.sync(T0 + timedelta(minutes=1))

    assert result is not None and result.broken == ("dags/copy.yaml",)
    row = dag_rows(sync.db)["a"]
    assert (row.path, row.source, row.error) == ("dags/a.yaml", DAG_A, None)
    message = error_rows(sync.db)["dags/copy.yaml"].message
    assert message == "dags/copy.yaml:1:1: DAG 'a' is also in dags/a.yaml"


def test_two_new_files_with_one_name_load_neither(
    sync: GitSync, origin: Origin
) -> None:
    origin.write("dags/c1.yaml", dag("c"))
    origin.write("dags/c2.yaml", dag("c", image="alpine"))
    origin.commit("two c")
    result = sync.sync(T0)

    assert result is not None and "c" not in result.loaded
    assert result.broken == ("dags/c1.yaml", "dags/c2.yaml")


def test_a_removed_file_deactivates_its_dag_and_keeps_its_history(
    sync: GitSync, origin: Origin
) -> None:
    sync.sync(T0)
    origin.remove("dags/b.yaml")
    origin.commit("drop b")
    result = sync.sync(T0 + timedelta(minutes=1))

    assert result is not None and result.deactivated == ("b",)
    rows = dag_rows(sync.db)
    assert not rows["b"].is_active and rows["b"].source == dag("b")
    assert rows["a"].is_active

    # Back again later: active, with a fresh anchor so the gap is not caught up.
    later = T0 + timedelta(days=3)
    origin.write("dags/b.yaml", dag("b"))
    origin.commit("b is back")
    sync.sync(later)
    row = dag_rows(sync.db)["b"]
    assert row.is_active and row.schedule_anchor == later
    assert version_count(sync.db) == 2


def test_a_reverted_file_goes_back_to_its_old_version(
    sync: GitSync, origin: Origin
) -> None:
    sync.sync(T0)
    old = dag_rows(sync.db)["a"].version_id
    origin.write("dags/a.yaml", dag("a", image="alpine"))
    origin.commit("change")
    sync.sync(T0 + timedelta(minutes=1))

    origin.write("dags/a.yaml", DAG_A)
    origin.commit("revert")
    sync.sync(T0 + timedelta(minutes=2))
    assert dag_rows(sync.db)["a"].version_id == old
    assert version_count(sync.db) == 3


def test_a_moved_file_is_a_new_version_that_runs_in_its_new_folder(
    sync: GitSync, origin: Origin
) -> None:
    sync.sync(T0)
    old = dag_rows(sync.db)["a"].version_id
    origin.remove("dags/a.yaml")
    origin.write("dags/team/a.yaml", DAG_A)
    origin.commit("move a into team/")
    sync.sync(T0 + timedelta(minutes=1))

    row = dag_rows(sync.db)["a"]
    assert row.version_id != old and row.path == "dags/team/a.yaml"
    with sync.db.connect() as conn:
        path = conn.execute(
            sa.select(dag_versions.c.path).where(dag_versions.c.id == row.version_id)
        ).scalar_one()
    assert path == "dags/team/a.yaml"


@BOTH_ADDRESSES
def test_a_force_pushed_branch_is_followed(sync: GitSync, origin: Origin) -> None:
    first = origin.head()
    origin.write("dags/a.yaml", dag("a", image="alpine"))
    origin.commit("second")
    sync.sync(T0)

    origin.reset_hard(first)
    origin.write("dags/b.yaml", dag("b", image="debian"))
    amended = origin.commit("amended", amend=True)
    sync.sync(T0 + timedelta(minutes=1))

    rows = dag_rows(sync.db)
    assert state_row(sync.db).commit == amended
    assert (rows["a"].source, rows["b"].commit) == (DAG_A, amended)


@BOTH_ADDRESSES
def test_a_failed_fetch_keeps_every_dag_and_records_the_error(
    sync: GitSync, origin: Origin
) -> None:
    first = origin.head()
    sync.sync(T0)
    before = dag_rows(sync.db)

    moved = origin.folder.rename(origin.folder.parent / "moved")
    assert sync.sync(T0 + timedelta(minutes=1)) is None

    assert dag_rows(sync.db) == before
    state = state_row(sync.db)
    assert (state.commit, state.synced_at) == (first, T0)
    assert "does not appear to be a git repository" in state.error

    # The repository answers again: the error goes, nothing else changes.
    moved.rename(origin.folder)
    assert sync.sync(T0 + timedelta(minutes=2)) is not None
    assert state_row(sync.db).error is None
    assert dag_rows(sync.db).keys() == before.keys()


def test_a_wrong_branch_keeps_every_dag(
    db: sa.Engine, origin: Origin, tmp_path: Path
) -> None:
    def sync_of(branch: str) -> GitSync:
        repository = Repository(
            str(origin.folder), branch=branch, path="dags", cache_dir=tmp_path / "c"
        )
        return GitSync(db, repository, repo_label="dags-repo", branch=branch)

    sync_of("main").sync(T0)
    assert sync_of("mian").sync(T0 + timedelta(minutes=1)) is None

    assert set(dag_rows(db)) == {"a", "b"}
    assert all(row.is_active for row in dag_rows(db).values())
    state = state_row(db)
    assert state.branch == "mian" and "couldn't find remote ref" in state.error


def test_a_missing_dag_folder_keeps_every_dag(
    db: sa.Engine, origin: Origin, tmp_path: Path
) -> None:
    sync = GitSync(
        db,
        Repository(
            str(origin.folder), branch="main", path="dags", cache_dir=tmp_path / "c"
        ),
        repo_label="dags-repo",
        branch="main",
    )
    sync.sync(T0)
    origin.git("mv", "dags", "dag")
    origin.commit("oops, renamed the folder")

    assert sync.sync(T0 + timedelta(minutes=1)) is None
    assert all(row.is_active for row in dag_rows(db).values())
    assert "no folder 'dags'" in state_row(db).error


@pytest.mark.parametrize("path", ["dags/", "./dags", "linked"])
def test_the_dag_folder_written_differently_finds_the_same_dags(
    db: sa.Engine, origin: Origin, tmp_path: Path, path: str
) -> None:
    origin.symlink("linked", "dags")
    origin.commit("link")
    repository = Repository(
        str(origin.folder), branch="main", path=path, cache_dir=tmp_path / "c"
    )
    result = GitSync(db, repository, repo_label="r", branch="main").sync(T0)

    assert result is not None and result.loaded == ("a", "b")
    assert dag_rows(db)["a"].path == "dags/a.yaml"


def test_the_commit_recorded_is_the_one_the_files_were_read_from(
    sync: GitSync, origin: Origin, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = origin.head()
    fetch_head = Repository._fetch_head

    def fetch_then_race(self: Repository, git_repo: Any) -> Any:
        commit = fetch_head(self, git_repo)
        origin.write("dags/a.yaml", dag("a", image="alpine"))
        origin.commit("racing")
        fetch_head(self, git_repo)
        return commit

    monkeypatch.setattr(Repository, "_fetch_head", fetch_then_race)
    sync.sync(T0)

    row = dag_rows(sync.db)["a"]
    assert (row.commit, row.source) == (first, DAG_A)
    assert state_row(sync.db).commit == first


def test_nothing_is_parsed_again_when_the_commit_did_not_change(
    sync: GitSync, origin: Origin, monkeypatch: pytest.MonkeyPatch
) -> None:
    sync.sync(T0)
    parsed: list[str] = []
    parse = catalog.parse_dag
    monkeypatch.setattr(
        catalog,
        "parse_dag",
        lambda text, path: parsed.append(path) or parse(text, path),
    )

    assert sync.sync(T0 + timedelta(minutes=1)) is None
    assert parsed == []
    assert state_row(sync.db).synced_at == T0 + timedelta(minutes=1)  # looked again


def test_a_restarted_controller_applies_the_same_commit_without_new_versions(
    sync: GitSync, origin: Origin
) -> None:
    sync.sync(T0)
    again = GitSync(
        sync.db, sync.repository, repo_label=sync.repo_label, branch="main"
    ).sync(T0 + timedelta(minutes=1))

    assert again is not None and again.updated == ()
    assert version_count(sync.db) == 2
