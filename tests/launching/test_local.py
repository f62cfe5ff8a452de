"""The local launcher stopping real processes: `sh`, `sleep` and `setsid`, with
a grace period shortened to half a second. Nothing is emulated."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import threading
from pathlib import Path

import pytest

from kdag.launching import AttemptEnded, Launch
from kdag.launching import local as local_launching
from kdag.launching.local import LocalLauncher
from kdag.logstore import LogStore
from tests.fakes.processes import is_running
from tests.launching.conftest import MakeLaunch


@pytest.fixture
def started() -> threading.Event:
    """Set when a task prints the line `started`."""
    return threading.Event()


@pytest.fixture
def local(
    logs: LogStore,
    reports: queue.Queue[AttemptEnded],
    started: threading.Event,
    monkeypatch: pytest.MonkeyPatch,
) -> LocalLauncher:
    monkeypatch.setattr(local_launching, "STOP_GRACE_S", 0.5)

    def on_output(launch: Launch, line: str) -> None:
        if line == "started":
            started.set()

    return LocalLauncher(report=reports.put, logs=logs, on_output=on_output)


def test_a_stop_kills_what_the_leader_left_behind_ignoring_sigterm(
    local: LocalLauncher,
    make_launch: MakeLaunch,
    reports: queue.Queue[AttemptEnded],
    started: threading.Event,
    tmp_path: Path,
) -> None:
    # The leader dies of SIGTERM; the subshell it left ignores it and holds
    # the output open for 60 s.
    pid_file = tmp_path / "pid"
    script = f"(trap '' TERM; exec sleep 60) & echo $! > {pid_file}; echo started; wait"
    launch = make_launch(["sh", "-c", script])
    local.start(launch)
    assert started.wait(10)

    local.stop(launch.attempt_id, "Timeout")
    ended = reports.get(timeout=10)
    assert (ended.reason, ended.exit_code) == ("Timeout", 143)
    assert not is_running(int(pid_file.read_text()))


def test_an_attempt_ends_with_its_leader_and_what_it_left_running_is_killed(
    local: LocalLauncher,
    make_launch: MakeLaunch,
    reports: queue.Queue[AttemptEnded],
    tmp_path: Path,
) -> None:
    # As a container ends with its main process: the background sleep holding
    # the output open neither keeps the attempt going nor outlives it.
    pid_file = tmp_path / "pid"
    script = f"sleep 60 & echo $! > {pid_file}; echo done"
    launch = make_launch(["sh", "-c", script])
    local.start(launch)

    ended = reports.get(timeout=10)
    assert (ended.is_success, ended.reason) == (True, "Completed")
    assert not is_running(int(pid_file.read_text()))
    assert b"done" in local.logs.read(launch.log_key)


def test_a_process_that_left_the_group_does_not_keep_a_finished_attempt_going(
    local: LocalLauncher,
    make_launch: MakeLaunch,
    reports: queue.Queue[AttemptEnded],
    tmp_path: Path,
) -> None:
    pid_file = tmp_path / "pid"
    launch = make_launch(["sh", "-c", f"setsid sleep 60 & echo $! > {pid_file}"])
    local.start(launch)
    try:
        ended = reports.get(timeout=10)
        assert ended.is_success
    finally:
        with contextlib.suppress(ProcessLookupError, FileNotFoundError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
