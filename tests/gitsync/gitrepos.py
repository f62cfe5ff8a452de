"""A real git repository in a temp folder, driven by the git CLI, as the remote.

Nothing is emulated: kdag fetches from it by local path or `file://` URL.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

# Keep the machine's own git settings (signing, hooks, templates) out of tests.
GIT_ENV = {
    **os.environ,
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_DATE": "2024-06-01T12:00:00Z",
    "GIT_COMMITTER_DATE": "2024-06-01T12:00:00Z",
}


def dag(name: str, *, image: str = "busybox") -> str:
    """Return the text of a valid one-task DAG file."""
    return f'name: {name}\ntasks:\n  t:\n    image: {image}\n    command: ["true"]\n'


DAG_A = dag("a")


class Origin:
    """The team's DAG repository: write files, commit, rewrite history."""

    def __init__(self, folder: Path, *, branch: str = "main") -> None:
        self.folder = folder
        self.branch = branch
        folder.mkdir(parents=True)
        self.git("init", "--quiet", "-b", branch)
        self.git("config", "user.name", "Test Author")
        self.git("config", "user.email", "author@example.com")

    @property
    def url(self) -> str:
        return self.folder.as_uri()

    def git(self, *args: str) -> str:
        done = subprocess.run(
            ["git", *args],
            cwd=self.folder,
            env=GIT_ENV,
            check=True,
            capture_output=True,
            text=True,
        )
        return done.stdout.strip()

    def write(self, path: str, text: str) -> None:
        target = self.folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    def remove(self, path: str) -> None:
        self.git("rm", "--quiet", path)

    def symlink(self, path: str, target: str) -> None:
        (self.folder / path).symlink_to(target)

    def commit(self, message: str = "change", *, amend: bool = False) -> str:
        """Commit everything in the folder; return the new head commit."""
        self.git("add", "--all")
        extra = ["--amend"] if amend else []
        self.git("commit", "--quiet", "--allow-empty", "-m", message, *extra)
        return self.head()

    def head(self) -> str:
        return self.git("rev-parse", "HEAD")

    def reset_hard(self, commit: str) -> None:
        """Move the branch back, as a force push of older history would."""
        self.git("reset", "--quiet", "--hard", commit)
