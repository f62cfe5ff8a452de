"""Settings, built once at start from flags and KDAG_* variables, then passed down.

Nothing reads the environment at import time: `Settings.load(env, **flags)` is
the one place where variables become settings, and it checks them strictly.
"""

from __future__ import annotations

import dataclasses
import math
import os
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kdag.errors import ConfigError

LAUNCHERS = ("local", "kubernetes")

# Which variable feeds which setting; flags given on the command line win.
ENV_VARS = {
    "db_url": "KDAG_DB_URL",
    "logs_uri": "KDAG_LOGS_URI",
    "repo": "KDAG_REPO",
    "branch": "KDAG_BRANCH",
    "path": "KDAG_PATH",
    "poll_interval_s": "KDAG_POLL_INTERVAL",
    "launcher": "KDAG_LAUNCHER",
    "slack_webhook_url": "KDAG_SLACK_WEBHOOK_URL",
    "base_url": "KDAG_BASE_URL",
    "host": "KDAG_HOST",
    "port": "KDAG_PORT",
    "data_dir": "KDAG_DATA_DIR",
    "s3_endpoint_url": "KDAG_S3_ENDPOINT_URL",
    "namespace": "KDAG_NAMESPACE",
    "runs_shown": "KDAG_RUNS_SHOWN",
    "log_format": "KDAG_LOG_FORMAT",
}


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything a kdag process needs to know, checked."""

    data_dir: Path = Path(".kdag")
    db_url: str = ""  # empty: SQLite in data_dir
    logs_uri: str = ""  # empty: file:// in data_dir
    repo: str = ""  # a git URL or a local path; empty: no git sync
    branch: str = "main"
    path: str = "."  # the folder of DAG files inside the repository
    poll_interval_s: float = 30.0
    launcher: str = "local"
    slack_webhook_url: str = ""
    base_url: str = ""  # empty: http://host:port
    host: str = "127.0.0.1"
    port: int = 8080
    s3_endpoint_url: str = ""
    namespace: str = "default"  # for tasks that name none
    runs_shown: int = 25
    log_format: str = "text"

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, **flags: Any) -> Settings:
        """Build settings from variables, then flags (None means not given)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            var = ENV_VARS.get(field.name)
            if var and env.get(var, "") != "":
                values[field.name] = env[var]
            if flags.get(field.name) is not None:
                values[field.name] = flags[field.name]
        unknown = set(flags) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")
        return cls(**_convert(values)).checked()

    def checked(self) -> Settings:
        """Return self, or raise ConfigError naming the bad setting."""
        if self.launcher not in LAUNCHERS:
            raise ConfigError(
                f"launcher must be one of {', '.join(LAUNCHERS)}, not {self.launcher!r}"
            )
        if not 0 < self.poll_interval_s < math.inf:
            raise ConfigError("poll interval must be a positive number of seconds")
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be between 1 and 65535, not {self.port}")
        if self.runs_shown < 1:
            raise ConfigError("runs shown must be at least 1")
        if self.logs_uri:
            _check_logs_uri(self.logs_uri)
        for name, url in (
            ("Slack webhook URL", self.slack_webhook_url),
            ("base URL", self.base_url),
            ("S3 endpoint URL", self.s3_endpoint_url),
        ):
            if url and not _is_http_url(url):
                raise ConfigError(f"{name} must be an http:// or https:// URL: {url!r}")
        if self.data_dir.exists() and not self.data_dir.is_dir():
            raise ConfigError(f"data folder {self.data_dir} is a file, not a folder")
        if self.log_format not in ("text", "json"):
            raise ConfigError("log format must be text or json")
        return self

    @property
    def effective_db_url(self) -> str:
        return self.db_url or f"sqlite:///{(self.data_dir / 'kdag.db').resolve()}"

    @property
    def effective_logs_uri(self) -> str:
        return self.logs_uri or (self.data_dir / "logs").resolve().as_uri()

    @property
    def effective_base_url(self) -> str:
        return (self.base_url or f"http://{self.host}:{self.port}").rstrip("/")


def _check_logs_uri(uri: str) -> None:
    """Raise ConfigError unless `uri` is file:///absolute/path or s3://bucket[/prefix]."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ConfigError(
                f"logs URI {uri!r} is not a local folder: write file:///absolute/path "
                "(three slashes)"
            )
    elif parts.scheme == "s3":
        if not parts.netloc:
            raise ConfigError(
                f"logs URI {uri!r} names no bucket: write s3://bucket/prefix"
            )
    else:
        raise ConfigError(f"logs URI must start with file:// or s3://, not {uri!r}")


def _is_http_url(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _convert(values: dict[str, Any]) -> dict[str, Any]:
    """Turn strings from the environment into the types the fields hold."""
    types = {"poll_interval_s": float, "port": int, "runs_shown": int, "data_dir": Path}
    out = dict(values)
    for name, kind in types.items():
        if name in out and not isinstance(out[name], kind):
            try:
                out[name] = kind(out[name])
            except ValueError as exc:
                var = ENV_VARS.get(name, name)
                raise ConfigError(f"{var}: not a valid {kind.__name__}") from exc
    return out
