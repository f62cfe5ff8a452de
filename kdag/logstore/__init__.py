"""Where task logs live: `file:///dir` (the default) or `s3://bucket/prefix`.

A launcher writes an attempt's output to a local spool file while it runs,
then calls `store.upload(key, spool_path)`. Nothing is lost on the way:

- If the upload fails, the spool file stays where it is and `retry_pending()`
  (called by the controller's loop) tries again later, also after a restart.
- `read(key)` falls back on the spool file, so a running task's log and a log
  whose upload is pending can be read on the machine that ran it.

Keys look like `<dag>/<run id>/<task>/<attempt>.log`.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

from kdag.errors import ConfigError, NotFound, TemporaryError

logger = logging.getLogger(__name__)


def log_key(dag: str, run_id: int, task: str, attempt: int) -> str:
    return f"{dag}/{run_id}/{task}/{attempt}.log"


class Backend(Protocol):
    """What a storage service must do; the spool logic is shared."""

    def put(self, key: str, path: Path) -> None: ...
    def get(self, key: str) -> bytes: ...  # raises NotFound
    def uri(self, key: str) -> str: ...


class LogStore:
    """A backend with a local spool in front of it."""

    def __init__(self, backend: Backend, spool_dir: Path) -> None:
        self.backend = backend
        self.spool_dir = spool_dir

    def spool_path(self, key: str) -> Path:
        path = self.spool_dir / key
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def uri(self, key: str) -> str:
        return self.backend.uri(key)

    def key_of(self, uri: str) -> str:
        """Return the key of a URI this store gave out."""
        return uri.removeprefix(self.backend.uri(""))

    def upload(self, key: str, *, keep_spool: bool = False) -> bool:
        """Store the spool file of `key`; return False if it stays pending."""
        path = self.spool_dir / key
        if not path.exists():
            return True
        try:
            self.backend.put(key, path)
        except (TemporaryError, OSError) as error:
            logger.warning("log upload failed, will retry: %s: %s", key, error)
            return False
        if not keep_spool:
            try:
                path.unlink(missing_ok=True)
            except OSError as error:  # stored already: a retry only uploads it again
                logger.warning("spool file left behind: %s: %s", key, error)
        return True

    def retry_pending(self, *, busy: set[str] | frozenset[str] = frozenset()) -> int:
        """Upload spool files left by failed uploads; return how many went up."""
        done = 0
        if not self.spool_dir.exists():
            return 0
        for path in sorted(self.spool_dir.rglob("*.log")):
            key = path.relative_to(self.spool_dir).as_posix()
            if key not in busy and self.upload(key):
                done += 1
                logger.info("uploaded pending log %s", key)
        return done

    def read(self, key: str) -> bytes:
        """Return the log of `key`: the spool file while it exists, else the store."""
        spooled = self.spool_dir / key
        if spooled.exists():
            return spooled.read_bytes()
        return self.backend.get(key)


class FileBackend:
    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, key: str, path: Path) -> None:
        target = self.root / key
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".partial")
            shutil.copyfile(path, partial)
            os.replace(partial, target)
        except OSError as error:
            raise TemporaryError(f"cannot write {target}: {error}") from error

    def get(self, key: str) -> bytes:
        try:
            return (self.root / key).read_bytes()
        except FileNotFoundError as error:
            raise NotFound(f"no log at {self.uri(key)}") from error

    def uri(self, key: str) -> str:
        return f"{self.root.resolve().as_uri().rstrip('/')}/{key}"


def open_store(uri: str, *, spool_dir: Path, s3_endpoint_url: str = "") -> LogStore:
    """Return the log store that `uri` names."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return LogStore(FileBackend(Path(unquote(parsed.path))), spool_dir)
    if parsed.scheme == "s3":
        from kdag.logstore.s3 import S3Backend

        backend = S3Backend(
            parsed.netloc, parsed.path.strip("/"), endpoint_url=s3_endpoint_url or None
        )
        return LogStore(backend, spool_dir)
    raise ConfigError(f"logs URI must start with file:// or s3://, not {uri!r}")
