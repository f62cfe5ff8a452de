"""Fetching and reading DAG files: real git repositories in temp folders, fetched
by local path and by file:// URL through gitpython. Nothing is emulated."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdag.errors import ConfigError, TemporaryError
from kdag.gitsync.repo import Repository, normalize_path, redact
from tests.gitsync.gitrepos import DAG_A, Origin, dag


@pytest.fixture
def origin(tmp_path: Path) -> Origin:
    """A repository with dags/a.yaml, dags/team/b.yml and files to skip."""
    origin = Origin(tmp_path / "origin")
    origin.write("dags/a.yaml", DAG_A)
    origin.write("dags/team/b.yml", dag("b"))
    origin.write("dags/README.md", "not a DAG")
    origin.write("dags/.hidden/c.yaml", dag("c"))
    origin.write("other/d.yaml", dag("d"))
    origin.commit("first")
    return origin


@pytest.fixture(params=["path", "url"])
def address(request: pytest.FixtureRequest, origin: Origin) -> str:
    """The origin as a local path, then as a file:// URL."""
    return str(origin.folder) if request.param == "path" else origin.url


def repository(address: str, tmp_path: Path, *, path: str = "dags", **options: object):
    return Repository(
        address, branch="main", path=path, cache_dir=tmp_path / "cache", **options
    )


def test_fetch_reads_the_dag_files_of_the_branch_head(
    origin: Origin, address: str, tmp_path: Path
) -> None:
    snapshot = repository(address, tmp_path).fetch()
    assert snapshot.commit == origin.head()
    assert snapshot.files == {"dags/a.yaml": DAG_A, "dags/team/b.yml": dag("b")}


def test_every_fetch_follows_new_commits(
    origin: Origin, address: str, tmp_path: Path
) -> None:
    repo = repository(address, tmp_path)
    repo.fetch()
    origin.write("dags/a.yaml", dag("a", image="alpine"))
    second = origin.commit("second")

    snapshot = repo.fetch()
    assert snapshot.commit == second
    assert snapshot.files["dags/a.yaml"] == dag("a", image="alpine")


@pytest.mark.parametrize("path", ["dags", "dags/", "./dags", "dags//", "./dags/."])
def test_the_dag_folder_can_be_written_in_several_ways(
    origin: Origin, tmp_path: Path, path: str
) -> None:
    snapshot = repository(str(origin.folder), tmp_path, path=path).fetch()
    assert sorted(snapshot.files) == ["dags/a.yaml", "dags/team/b.yml"]


def test_a_symlinked_dag_folder_is_followed_inside_the_tree(
    origin: Origin, tmp_path: Path
) -> None:
    origin.symlink("current", "dags")
    origin.write("deploy/README.md", "")
    origin.symlink("deploy/dags", "../current")  # a link to a link
    origin.commit("links")

    for path in ("current", "deploy/dags/", "deploy/dags/team"):
        snapshot = repository(str(origin.folder), tmp_path, path=path).fetch()
        assert "dags/team/b.yml" in snapshot.files, path
    snapshot = repository(str(origin.folder), tmp_path, path="current").fetch()
    assert sorted(snapshot.files) == ["dags/a.yaml", "dags/team/b.yml"]


@pytest.mark.parametrize("path", [".", "", "./"])
def test_the_root_is_walked_recursively_without_hidden_folders(
    origin: Origin, tmp_path: Path, path: str
) -> None:
    origin.write(".github/workflows/ci.yml", "on: push\n")
    origin.write(".pre-commit-config.yaml", "repos: []\n")
    origin.commit("ci")
    snapshot = repository(str(origin.folder), tmp_path, path=path).fetch()
    assert sorted(snapshot.files) == ["dags/a.yaml", "dags/team/b.yml", "other/d.yaml"]


def test_a_force_pushed_branch_is_followed(
    origin: Origin, address: str, tmp_path: Path
) -> None:
    first = origin.head()
    origin.write("dags/a.yaml", dag("a", image="alpine"))
    origin.commit("second")
    repo = repository(address, tmp_path)
    repo.fetch()

    # Rewrite history: drop the second commit, then amend the first one.
    origin.reset_hard(first)
    origin.write("dags/a.yaml", dag("a", image="debian"))
    amended = origin.commit("first, amended", amend=True)

    snapshot = repo.fetch()
    assert snapshot.commit == amended != first
    assert snapshot.files["dags/a.yaml"] == dag("a", image="debian")


def test_a_missing_branch_is_a_temporary_error(origin: Origin, tmp_path: Path) -> None:
    repo = Repository(
        str(origin.folder), branch="nope", path="dags", cache_dir=tmp_path / "c"
    )
    with pytest.raises(TemporaryError, match="nope"):
        repo.fetch()


def test_a_vanished_remote_is_a_temporary_error(
    origin: Origin, address: str, tmp_path: Path
) -> None:
    repo = repository(address, tmp_path)
    repo.fetch()
    origin.folder.rename(tmp_path / "moved")
    with pytest.raises(TemporaryError, match="cannot fetch"):
        repo.fetch()


def test_a_dag_folder_missing_at_the_commit_is_a_temporary_error(
    origin: Origin, tmp_path: Path
) -> None:
    with pytest.raises(TemporaryError, match="no folder 'dag'"):
        repository(str(origin.folder), tmp_path, path="dag").fetch()
    # A file where the folder should be is no better.
    with pytest.raises(TemporaryError, match="no folder"):
        repository(str(origin.folder), tmp_path, path="dags/a.yaml").fetch()


def test_a_symlink_out_of_the_repository_is_a_temporary_error(
    origin: Origin, tmp_path: Path
) -> None:
    origin.symlink("outside", "../../somewhere")
    origin.commit("bad link")
    with pytest.raises(TemporaryError, match="outside the repository"):
        repository(str(origin.folder), tmp_path, path="outside").fetch()


@pytest.mark.parametrize("path", ["/dags", "..", "dags/../.."])
def test_a_dag_path_outside_the_repository_is_a_config_error(path: str) -> None:
    with pytest.raises(ConfigError):
        normalize_path(path)


def test_a_snapshot_reads_one_commit_even_if_the_branch_moves_meanwhile(
    origin: Origin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = repository(str(origin.folder), tmp_path)
    first = origin.head()
    fetch_head = Repository._fetch_head

    def fetch_then_race(self: Repository, git_repo: object) -> object:
        """Resolve the head, then let the remote and the local ref move on."""
        commit = fetch_head(self, git_repo)  # type: ignore[arg-type]
        origin.write("dags/a.yaml", dag("a", image="alpine"))
        origin.write("dags/new.yaml", dag("new"))
        origin.commit("racing")
        fetch_head(self, git_repo)  # type: ignore[arg-type]
        return commit

    monkeypatch.setattr(Repository, "_fetch_head", fetch_then_race)
    snapshot = repo.fetch()
    assert snapshot.commit == first
    assert snapshot.files == {"dags/a.yaml": DAG_A, "dags/team/b.yml": dag("b")}


def test_files_that_are_not_text_are_reported_not_dropped(
    origin: Origin, tmp_path: Path
) -> None:
    (origin.folder / "dags/latin1.yaml").write_bytes(b"name: caf\xe9\n")
    origin.commit("latin-1")
    snapshot = repository(str(origin.folder), tmp_path).fetch()
    assert "dags/latin1.yaml" not in snapshot.files
    assert "not UTF-8" in snapshot.unreadable["dags/latin1.yaml"]


def test_checkout_exports_a_commit_once_and_keeps_the_latest_few(
    origin: Origin, tmp_path: Path
) -> None:
    repo = repository(str(origin.folder), tmp_path, keep_checkouts=2)
    commits = [repo.fetch().commit]
    folder = repo.checkout(commits[0])
    assert (folder / "dags/a.yaml").read_text() == DAG_A
    assert repo.checkout(commits[0]) == folder

    # Two more commits: the oldest checkout goes, the latest two stay.
    for image in ("alpine", "debian"):
        origin.write("dags/a.yaml", dag("a", image=image))
        origin.commit(image)
        commits.append(repo.fetch().commit)
        repo.checkout(commits[-1])
    kept = sorted(p.name for p in folder.parent.iterdir())
    assert kept == sorted(commits[1:])
    assert "debian" in (folder.parent / commits[2] / "dags/a.yaml").read_text()


def test_checkout_keeps_the_folders_of_commits_still_in_use(
    origin: Origin, tmp_path: Path
) -> None:
    in_use: set[str] = set()
    repo = repository(
        str(origin.folder), tmp_path, keep_checkouts=1, in_use=lambda: in_use
    )
    first = repo.fetch().commit
    folder = repo.checkout(first)
    in_use.add(first)  # a run of the first commit is still going

    origin.write("dags/a.yaml", dag("a", image="alpine"))
    origin.commit("alpine")
    repo.checkout(repo.fetch().commit)
    assert folder.is_dir()

    # Once that run is over, the next prune takes its folder.
    in_use.clear()
    origin.write("dags/a.yaml", dag("a", image="debian"))
    origin.commit("debian")
    repo.checkout(repo.fetch().commit)
    assert not folder.exists()


def test_checkout_of_an_unknown_commit_is_a_temporary_error(
    origin: Origin, tmp_path: Path
) -> None:
    repo = repository(str(origin.folder), tmp_path)
    with pytest.raises(TemporaryError):
        repo.checkout("0" * 40)
    with pytest.raises(TemporaryError):
        repo.checkout("--output=/tmp/x")


def test_checkout_fetches_a_commit_missing_from_a_fresh_cache(
    origin: Origin, tmp_path: Path
) -> None:
    folder = repository(str(origin.folder), tmp_path).checkout(origin.head())
    assert (folder / "dags/team/b.yml").is_file()


def test_credentials_in_urls_are_hidden() -> None:
    said = "fatal: unable to access 'https://bot:s3cret@git.example.com/dags.git/'"
    assert (
        redact(said)
        == "fatal: unable to access 'https://***@git.example.com/dags.git/'"
    )


def test_kdagignore_leaves_out_yaml_that_is_not_a_dag(
    origin: Origin, tmp_path: Path
) -> None:
    origin.write("dags/.kdagignore", "# dbt's own YAML\nproject/\n")
    origin.write("dags/project/dbt_project.yml", "name: flights\nversion: '1.0'\n")
    origin.commit("a dbt project beside the DAGs")

    snapshot = repository(str(origin.folder), tmp_path).fetch()
    assert sorted(snapshot.files) == ["dags/a.yaml", "dags/team/b.yml"]
