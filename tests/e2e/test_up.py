"""`kdag up` as a user starts it, on the example DAGs, as real processes.

Real parts: the `kdag` command in its own process (controller and web), a git
repository made in a temp folder from dags-example/, SQLite, the local log
folder, the local launcher, HTTP on 127.0.0.1, and the `kdag trigger` and
`kdag status` commands in processes of their own. Nothing is emulated.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.gitsync.gitrepos import Origin

ROOT = Path(__file__).resolve().parents[2]
KDAG = str(Path(sys.executable).parent / "kdag")


@dataclass
class Up:
    """A running `kdag up`: its address, its data folder, its process."""

    url: str
    data_dir: Path
    process: subprocess.Popen[str]

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as answer:
            return json.loads(answer.read())

    def text(self, path: str) -> str:
        with urllib.request.urlopen(self.url + path, timeout=10) as answer:
            return str(answer.read().decode())

    def close(self) -> None:
        """Kill the process if it still runs, and reap it."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)

    def kdag(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run another kdag command against the same data folder."""
        return subprocess.run(
            [KDAG, *args, "--data-dir", str(self.data_dir)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(what: str, check: Callable[[], Any], timeout_s: float) -> Any:
    """Return check()'s first truthy answer; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            found = check()
        except (urllib.error.URLError, ConnectionError):
            found = None
        if found:
            return found
        time.sleep(0.1)  # polling a condition, with a deadline
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def start_up(repo: Path, path: str, data_dir: Path) -> Up:
    """Start `kdag up` on `path` of the repository `repo`, on a free port."""
    port = free_port()
    command = [KDAG, "up", "--repo", str(repo), "--path", path]
    command += ["--port", str(port), "--data-dir", str(data_dir)]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    return Up(f"http://127.0.0.1:{port}", data_dir, process)


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    # The team's DAG repository: a copy of dags-example/, committed.
    origin = Origin(tmp_path / "dags-repo")
    shutil.copytree(
        ROOT / "dags-example",
        origin.folder / "dags-example",
        ignore=shutil.ignore_patterns("output", "target", "logs", "__pycache__"),
    )
    origin.commit("the examples")
    running = start_up(origin.folder, "dags-example", tmp_path / "kdag-data")
    try:
        yield running
    finally:
        running.close()


def test_up_syncs_the_examples_runs_them_green_and_stops_on_sigterm(up: Up) -> None:
    # Both example DAGs arrive from git, with their commit.
    def loaded() -> dict[str, Any] | None:
        dags = {d["name"]: d for d in up.get("/api/v1/dags")["dags"]}
        return dags if {"hello", "nycflights-daily"} <= set(dags) else None

    dags = wait_for("the example DAGs", loaded, 60)
    assert all(d["commit"] and not d["error"] for d in dags.values())

    # `kdag trigger` in another process queues a run that the controller starts.
    triggered = up.kdag("trigger", "hello")
    assert triggered.returncode == 0, triggered.stderr
    assert triggered.stdout.startswith("run ")
    hello_id = int(triggered.stdout.split()[1])
    hello = wait_for("hello to end", lambda: _ended(up, hello_id), 60)
    assert hello["state"] == "succeeded", hello
    log = up.text(f"/api/v1/runs/{hello_id}/tasks/hello/log")
    assert f"hello from hello run {hello_id}" in log

    # The real-data DAG, triggered through the API, ends green with its figures.
    request = urllib.request.Request(
        up.url + "/api/v1/dags/nycflights-daily/runs", data=b"", method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 201
        flights_id = json.loads(answer.read())["id"]
    flights = wait_for("nycflights-daily to end", lambda: _ended(up, flights_id), 300)
    assert flights["state"] == "succeeded", flights
    summary = up.text(f"/api/v1/runs/{flights_id}/tasks/summarise/log")
    assert "336,776" in summary

    # The dashboard and `kdag status` show both runs green.
    dashboard = up.text("/")
    assert "nycflights-daily" in dashboard and f"/runs/{flights_id}" in dashboard
    status = up.kdag("status", "--json")
    assert status.returncode == 0, status.stderr
    latest = {d["name"]: d["runs"][0] for d in json.loads(status.stdout)["dags"]}
    assert latest["hello"]["state"] == latest["nycflights-daily"]["state"]
    assert latest["hello"]["state"] == "succeeded"
    words = up.kdag("status")
    assert words.returncode == 0, words.stderr
    assert "nycflights-daily" in words.stdout and "succeeded" in words.stdout

    # SIGTERM stops controller and web cleanly.
    up.process.send_signal(signal.SIGTERM)
    assert up.process.wait(timeout=30) == 0
    output = up.process.stdout.read() if up.process.stdout else ""
    assert "Traceback" not in output, output


def _ended(up: Up, run_id: int) -> dict[str, Any] | None:
    run: dict[str, Any] = up.get(f"/api/v1/runs/{run_id}")
    return None if run["state"] in ("queued", "running") else run
