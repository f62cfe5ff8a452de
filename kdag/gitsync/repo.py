"""The DAG repository: fetch a branch, read its DAG files at one commit.

`Repository.fetch()` keeps a bare clone in `cache_dir/repo.git`. Every call
runs `git fetch` with the forced refspec `+refs/heads/<branch>:refs/remotes/
origin/<branch>`, so a rewritten history (force push, amend) replaces the local
ref instead of being refused: the synced commit is always the remote head.

The files are read from that commit's tree, never from a work tree. The commit
is resolved once and every blob comes from its tree, so a snapshot can never
mix two commits, even if the branch moves while it is being read.

The DAG folder (`path`) is normalised (`dags`, `dags/`, `./dags` and `dags//`
are one folder; `.` or empty is the repository root) and a symlinked folder is
followed inside the tree. Below it, every `*.yaml` and `*.yml` is read,
recursively, skipping hidden files and folders, symlinks and submodules.
Snapshot keys are paths from the repository root, as the tree has them
(`dags/a.yaml`, even when reached through a link).

Every failure (network, bad URL, missing branch, a DAG folder missing at that
commit) raises TemporaryError: a snapshot is never empty by accident, so DAGs
do not vanish because of a transient fault or a typo in a commit. This module
is the one place where gitpython's errors are translated.

`checkout(commit)` exports a commit's files (`git archive`) into
`cache_dir/checkouts/<commit>`, once, for the local launcher to run task
commands in. Only the most recently used few are kept.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tarfile
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import git
from gitdb.exc import BadName, BadObject

from kdag.errors import ConfigError, TemporaryError
from kdag.specs.discovery import IGNORE_FILE, ignore_patterns, is_dag_file

logger = logging.getLogger(__name__)

MAX_FILE_BYTES = 1024 * 1024
MAX_LINK_HOPS = 16
SYMLINK_MODE = 0o120000
_COMMIT = re.compile(r"^[0-9a-f]{7,64}$")
_USERINFO = re.compile(r"(://)[^/@\s]+@")
_SCP_LIKE = re.compile(r"^[\w.-]+@[\w.-]+:")


@dataclass(frozen=True)
class Snapshot:
    """The DAG files of one commit, keyed by their path from the repository root.

    `unreadable` maps files that could not be read as text (not UTF-8, too big)
    to the reason, so that they are reported like any other broken file.
    """

    commit: str
    files: dict[str, str]
    unreadable: dict[str, str] = field(default_factory=dict)


def redact(text: str) -> str:
    """Hide credentials written into URLs (`https://user:token@host/...`)."""
    return _USERINFO.sub(r"\1***@", text)


class Repository:
    """One branch of a git repository, cached on local disk."""

    def __init__(
        self,
        url_or_path: str,
        *,
        branch: str,
        path: str,
        cache_dir: Path,
        keep_checkouts: int = 5,
        timeout_s: float = 120.0,
        in_use: Callable[[], set[str]] = set,
    ) -> None:
        if not branch or branch.startswith("-") or ".." in branch:
            raise ConfigError(f"not a branch name: {branch!r}")
        self.url = _remote_url(url_or_path)
        self.branch = branch
        self.path = normalize_path(path)
        self.cache_dir = Path(cache_dir)
        self.keep_checkouts = keep_checkouts
        self.in_use = in_use  # the commits whose checkouts tasks may be running in
        self.timeout_s = timeout_s
        self._lock = threading.Lock()  # one git operation on the cache at a time

    @property
    def label(self) -> str:
        """The remote as shown to people: credentials hidden."""
        return redact(self.url)

    def fetch(self) -> Snapshot:
        """Fetch the branch and read its DAG files at the branch's head.

        Raises TemporaryError when git fails or `path` is not a folder there.
        """
        with self._lock:
            repo = self._open()
            commit = self._fetch_head(repo)
            try:
                files, unreadable = _read_dag_files(commit.tree, self.path)
            except (git.GitError, ValueError, OSError) as exc:
                raise TemporaryError(
                    f"cannot read {commit.hexsha[:12]}: {_reason(exc)}"
                ) from exc
        logger.debug("read %d DAG files at %s", len(files), commit.hexsha[:12])
        return Snapshot(commit=commit.hexsha, files=files, unreadable=unreadable)

    def checkout(self, commit: str) -> Path:
        """Return a folder holding the files of `commit`, exporting it once.

        Raises TemporaryError when the commit is unknown or cannot be exported.
        """
        if not _COMMIT.match(commit):
            raise TemporaryError(f"not a commit id: {commit!r}")
        with self._lock:
            folder = self.cache_dir / "checkouts" / commit
            if folder.is_dir():
                os.utime(folder)  # mark as recently used for pruning
                return folder
            repo = self._open()
            self._ensure_commit(repo, commit)
            self._export(repo, commit, folder)
            self._prune_checkouts(keep=folder)
        logger.info("checked out %s into %s", commit[:12], folder)
        return folder

    # -- fetching ------------------------------------------------------------

    def _open(self) -> git.Repo:
        """Open the bare cache, creating it (and its remote) the first time."""
        where = self.cache_dir / "repo.git"
        try:
            if (where / "HEAD").is_file():
                repo = git.Repo(where)
            else:
                where.mkdir(parents=True, exist_ok=True)
                repo = git.Repo.init(where, bare=True)
            if "origin" not in [r.name for r in repo.remotes]:
                repo.create_remote("origin", self.url)
            elif repo.remotes.origin.url != self.url:
                repo.remotes.origin.set_url(self.url)
        except (git.GitError, OSError) as exc:
            raise TemporaryError(f"git cache {where}: {_reason(exc)}") from exc
        return repo

    def _fetch_head(self, repo: git.Repo) -> git.Commit:
        """Fetch the branch (history rewrites included); return its head commit."""
        ref = f"refs/remotes/origin/{self.branch}"
        try:
            repo.git.fetch(
                "--no-tags",
                "--quiet",
                "origin",
                f"+refs/heads/{self.branch}:{ref}",
                env={"GIT_TERMINAL_PROMPT": "0"},
                kill_after_timeout=self.timeout_s,
            )
            return repo.commit(ref)
        except (git.GitError, ValueError, BadName, BadObject) as exc:
            raise TemporaryError(
                f"cannot fetch branch {self.branch!r} of {self.label}: {_reason(exc)}"
            ) from exc

    # -- checkouts -----------------------------------------------------------

    def _ensure_commit(self, repo: git.Repo, commit: str) -> None:
        """Fetch once if `commit` is not in the cache (a fresh cache, say)."""
        try:
            repo.commit(commit)
            return
        except (ValueError, BadName, BadObject):
            self._fetch_head(repo)
        try:
            repo.commit(commit)
        except (ValueError, BadName, BadObject) as exc:
            raise TemporaryError(f"commit {commit} is not in {self.label}") from exc

    def _export(self, repo: git.Repo, commit: str, folder: Path) -> None:
        """Extract `commit` into `folder`, through a temp folder renamed at once."""
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".export-", dir=folder.parent))
        try:
            archive = staging / "commit.tar"
            with archive.open("wb") as out:
                repo.git.archive("--format=tar", commit, "--", output_stream=out)
            with tarfile.open(archive) as tar:
                tar.extractall(staging / "files", filter="data")
            os.rename(staging / "files", folder)
        except (git.GitError, tarfile.TarError) as exc:
            raise TemporaryError(f"cannot check out {commit}: {_reason(exc)}") from exc
        except OSError as exc:
            if not folder.is_dir():  # else another process exported it first
                raise TemporaryError(f"cannot check out {commit}: {exc}") from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _prune_checkouts(self, *, keep: Path) -> None:
        """Delete all but the `keep_checkouts` most recently used checkouts, and
        those of commits still in use (a task running there would lose its files).
        """
        in_use = self.in_use()
        found = [
            p
            for p in keep.parent.iterdir()
            if p.is_dir() and not p.name.startswith(".") and p != keep
        ]
        found.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        for old in found[max(self.keep_checkouts - 1, 0) :]:
            if old.name in in_use:
                continue
            logger.debug("removing old checkout %s", old)
            shutil.rmtree(old, ignore_errors=True)


def normalize_path(path: str) -> str:
    """Return the DAG folder as a clean relative path, '' for the root.

    Raises ConfigError for an absolute path or one that leaves the repository.
    """
    if path.startswith("/"):
        raise ConfigError(f"the DAG path must be relative to the repository: {path}")
    clean = _resolve_dots(PurePosixPath(path.strip() or ".").parts)
    if clean is None:
        raise ConfigError(f"the DAG path leaves the repository: {path}")
    return clean


def _resolve_dots(parts: tuple[str, ...] | list[str]) -> str | None:
    """Join path parts, applying '.' and '..'; None if '..' goes above the root."""
    kept: list[str] = []
    for part in parts:
        if part == "..":
            if not kept:
                return None
            kept.pop()
        elif part not in (".", ""):
            kept.append(part)
    return "/".join(kept)


def _remote_url(url_or_path: str) -> str:
    """Return a URL as given, and a local path made absolute."""
    if "://" in url_or_path or _SCP_LIKE.match(url_or_path):
        return url_or_path
    return str(Path(url_or_path).expanduser().resolve())


def _reason(exc: BaseException) -> str:
    """Say what git said, in one line, without credentials."""
    if isinstance(exc, git.GitCommandError):
        said = exc.stderr.strip() or str(exc)
        said = said.removeprefix("stderr:").strip().strip("'").strip()
    else:
        said = str(exc) or type(exc).__name__
    return redact(" ".join(said.split()))


# -- reading a tree ------------------------------------------------------------


def _read_dag_files(root: git.Tree, path: str) -> tuple[dict[str, str], dict[str, str]]:
    """Read every DAG file under `path` of `root`: (texts, unreadable reasons)."""
    folder = _find_folder(root, path)
    files: dict[str, str] = {}
    unreadable: dict[str, str] = {}
    for blob in _dag_blobs(folder):
        where = str(blob.path)
        if blob.size > MAX_FILE_BYTES:
            unreadable[where] = f"larger than {MAX_FILE_BYTES} bytes"
            continue
        try:
            files[where] = blob.data_stream.read().decode("utf-8")
        except UnicodeDecodeError as exc:
            unreadable[where] = f"not UTF-8 text ({exc.reason} at byte {exc.start})"
    return files, unreadable


def _find_folder(root: git.Tree, path: str) -> git.Tree:
    """Return the tree at `path`, following symlinks inside the repository."""
    wanted = path
    for _hop in range(MAX_LINK_HOPS):
        node, rest = _walk_down(root, wanted)
        if isinstance(node, git.Tree) and not rest:
            return node
        if isinstance(node, git.Blob) and node.mode == SYMLINK_MODE:
            wanted = _link_target(node, rest)
            continue
        raise TemporaryError(f"no folder {path or '.'!r} at this commit")
    raise TemporaryError(f"too many symlinks resolving {path!r}")


def _walk_down(root: git.Tree, path: str) -> tuple[git.Object | None, list[str]]:
    """Go down `path` as far as trees allow: (the object reached, parts left)."""
    node: git.Object = root
    parts = path.split("/") if path else []
    while parts and isinstance(node, git.Tree):
        try:
            node = node[parts[0]]
        except KeyError:
            return None, parts
        parts = parts[1:]
    return node, parts


def _link_target(link: git.Blob, rest: list[str]) -> str:
    """Return the repository path a symlink (plus what follows it) points to."""
    target = link.data_stream.read().decode("utf-8", errors="replace")
    parent = PurePosixPath(link.path).parent.parts
    if target.startswith("/"):
        raise TemporaryError(f"{link.path} links outside the repository: {target}")
    resolved = _resolve_dots([*parent, *PurePosixPath(target).parts, *rest])
    if resolved is None:
        raise TemporaryError(f"{link.path} links outside the repository: {target}")
    return resolved


def _dag_blobs(folder: git.Tree) -> list[git.Blob]:
    """Every DAG file below `folder`: see kdag.specs.discovery (.kdagignore)."""
    patterns: list[str] = []
    try:
        ignore = folder[IGNORE_FILE]
    except KeyError:
        pass
    else:
        if isinstance(ignore, git.Blob):
            patterns = ignore_patterns(
                ignore.data_stream.read().decode("utf-8", "replace")
            )
    found = [
        blob
        for blob in _blobs_below(folder)
        if is_dag_file(_relative(str(blob.path), folder), patterns)
    ]
    return sorted(found, key=lambda b: str(b.path))


def _blobs_below(folder: git.Tree) -> list[git.Blob]:
    """Every file below `folder`, leaving out hidden folders and symlinks."""
    found = [b for b in folder.blobs if b.mode != SYMLINK_MODE]
    for tree in folder.trees:
        if not tree.name.startswith("."):
            found.extend(_blobs_below(tree))
    return found


def _relative(path: str, folder: git.Tree) -> str:
    base = str(folder.path) if folder.path else ""
    return path[len(base) + 1 :] if base else path
