"""The local launcher: each attempt is a subprocess on this machine.

For laptops and the embedded default. The image is ignored; the command runs
in the DAG file's folder with the task's environment, `$(VAR)` expanded as
Kubernetes would, and this Python's `bin/` first on PATH (so `python` and
`dbt` are the ones kdag was installed with).

Secrets are never written in DAG files; locally, a secret reference takes the
value of the variable of the same name from kdag's own environment, and the
attempt fails with CreateContainerConfigError (as in Kubernetes) if it is not
set.

The attempt ends when its leader exits, as a container ends with its main
process: what the leader left running in its process group is killed then,
and its output gets DRAIN_S to arrive. Stopping (a timeout, a cancel) sends
SIGTERM to the group, then SIGKILL after a grace period, also when the leader
has already exited. A process that left the group (`setsid`) can be neither
killed nor waited for: it never keeps an attempt going.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from kdag.launching import AttemptEnded, Launch, OutputLine, Report, expand_vars
from kdag.logstore import LogStore
from kdag.specs.model import SecretRef

logger = logging.getLogger(__name__)
STOP_GRACE_S = 10.0
DRAIN_S = 1.0  # after a kill, how long the last output may take to arrive


@dataclasses.dataclass
class _Running:
    """One attempt's process, as the launcher's threads share it."""

    process: subprocess.Popen[bytes]
    output_over: threading.Event  # the output closed, or the group was killed
    stop_reason: str | None = None
    follower: threading.Thread | None = None  # reports the end


class LocalLauncher:
    name = "local"

    def __init__(
        self, *, report: Report, logs: LogStore, on_output: OutputLine | None = None
    ) -> None:
        self.report = report
        self.logs = logs
        self.on_output = on_output
        self._running: dict[int, _Running] = {}
        self._lock = threading.Lock()

    def start(self, launch: Launch) -> str:
        spool = self.logs.spool_path(launch.log_key)
        env, missing = self._environment(launch)
        if missing:
            message = f"secret for {', '.join(missing)} not set in kdag's environment"
            spool.write_text(f"kdag: {message}\n")
            self._finish(
                launch,
                AttemptEnded(
                    launch.attempt_id,
                    False,
                    None,
                    "CreateContainerConfigError",
                    message,
                ),
            )
            return ""
        argv = [expand_vars(a, env) for a in (*launch.spec.command, *launch.spec.args)]
        try:
            process = subprocess.Popen(
                argv,
                env={**os.environ, **env},
                cwd=launch.workdir,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as error:
            message = f"cannot start {argv[0]!r}: {error.strerror or error}"
            spool.write_text(f"kdag: {message}\n")
            self._finish(
                launch,
                AttemptEnded(launch.attempt_id, False, 127, "StartError", message),
            )
            return ""
        running = _Running(process, threading.Event())
        running.follower = threading.Thread(
            target=self._follow,
            args=(launch, running, spool),
            name=f"local-{launch.name}",
            daemon=True,
        )
        with self._lock:
            self._running[launch.attempt_id] = running
        running.follower.start()
        return str(process.pid)

    def _environment(self, launch: Launch) -> tuple[dict[str, str], list[str]]:
        env: dict[str, str] = {"PATH": _path_with_our_bin()}
        missing = []
        for name, value in launch.env.items():
            if isinstance(value, SecretRef):
                if name in os.environ:
                    env[name] = os.environ[name]
                else:
                    missing.append(f"{name} ({value.secret}/{value.key})")
            else:
                env[name] = expand_vars(value, env)
        return env, missing

    def _follow(self, launch: Launch, running: _Running, spool: Path) -> None:
        """Wait for the leader and the output, then report the end."""
        copier = threading.Thread(
            target=self._copy_output,
            args=(launch, running, spool),
            name=f"local-output-{launch.name}",
            daemon=True,
        )
        copier.start()
        code = running.process.wait()
        # NB: kill at once what the leader left behind, as Kubernetes does when a
        # container's main process exits; its group id is not reused while
        # members live, and the leader was reaped only now.
        _signal_group(running.process.pid, signal.SIGKILL)
        running.output_over.wait(DRAIN_S)
        copier.join(DRAIN_S)
        with self._lock:
            self._running.pop(launch.attempt_id, None)
        self._finish(launch, _ending(launch.attempt_id, code, running.stop_reason))

    def _copy_output(self, launch: Launch, running: _Running, spool: Path) -> None:
        """Copy output to the spool file line by line, until it closes."""
        assert running.process.stdout is not None
        try:
            with spool.open("wb") as sink:
                for raw in running.process.stdout:
                    sink.write(raw)
                    sink.flush()
                    if self.on_output:
                        line = raw.decode(errors="replace").rstrip("\n")
                        self.on_output(launch, line)
        finally:
            running.output_over.set()

    def _finish(self, launch: Launch, ended: AttemptEnded) -> None:
        try:
            self.logs.upload(launch.log_key)
        except Exception:  # NB: the end must be reported whatever the log does
            logger.exception("log of attempt %s not stored", launch.attempt_id)
        self.report(ended)

    def stop(self, attempt_id: int, reason: str) -> None:
        with self._lock:
            running = self._running.get(attempt_id)
            if running is None:
                return
            running.stop_reason = reason
            _signal_group(running.process.pid, signal.SIGTERM)
        timer = threading.Timer(STOP_GRACE_S, self._kill, (attempt_id, running))
        timer.daemon = True
        timer.start()

    def _kill(self, attempt_id: int, running: _Running) -> None:
        with self._lock:
            # NB: once the attempt is over, its group id may be another's.
            if self._running.get(attempt_id) is not running:
                return
            _signal_group(running.process.pid, signal.SIGKILL)
        running.output_over.set()

    def close(self) -> None:
        """Stop every attempt, as the controller stops, and wait for their ends.

        Their reason, ControllerStopped, costs the tasks no retry.
        """
        with self._lock:
            running = list(self._running.items())
        for attempt_id, _ in running:
            self.stop(attempt_id, "ControllerStopped")
        # NB: wait past the grace period, or the SIGKILL timer dies with us.
        deadline = time.monotonic() + STOP_GRACE_S + 2 * DRAIN_S + 1
        for _, attempt in running:
            if attempt.follower is not None:
                attempt.follower.join(max(0.0, deadline - time.monotonic()))


def _ending(attempt_id: int, code: int, stop_reason: str | None) -> AttemptEnded:
    if code == 0 and stop_reason is None:
        return AttemptEnded(attempt_id, True, 0, "Completed")
    if code < 0:  # killed by a signal: report it as a container runtime would
        exit_code = 128 - code
        name = signal.Signals(-code).name
        return AttemptEnded(
            attempt_id, False, exit_code, stop_reason or "Error", f"killed by {name}"
        )
    return AttemptEnded(
        attempt_id, False, code, stop_reason or "Error", f"exit code {code}"
    )


def _signal_group(leader_pid: int, sig: signal.Signals) -> None:
    # NB: signal the group even when its leader has exited: the group lives on
    # while any member does, and that member is what still runs.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(leader_pid, sig)


def _path_with_our_bin(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    ours = str(Path(sys.executable).parent)
    rest = [p for p in env.get("PATH", "").split(os.pathsep) if p and p != ours]
    return os.pathsep.join([ours, *rest])
