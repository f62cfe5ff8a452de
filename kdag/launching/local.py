"""The local launcher: each attempt is a subprocess on this machine.

For laptops and the embedded default. The image is ignored; the command runs
in the DAG file's folder with the task's environment, `$(VAR)` expanded as
Kubernetes would, and this Python's `bin/` first on PATH (so `python` and
`dbt` are the ones kdag was installed with).

Secrets are never written in DAG files; locally, a secret reference takes the
value of the variable of the same name from kdag's own environment, and the
attempt fails with CreateContainerConfigError (as in Kubernetes) if it is not
set.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

from kdag.launching import AttemptEnded, Launch, OutputLine, Report, expand_vars
from kdag.logstore import LogStore
from kdag.specs.model import SecretRef

logger = logging.getLogger(__name__)
STOP_GRACE_S = 10.0


class LocalLauncher:
    name = "local"

    def __init__(
        self, *, report: Report, logs: LogStore, on_output: OutputLine | None = None
    ) -> None:
        self.report = report
        self.logs = logs
        self.on_output = on_output
        self._processes: dict[int, subprocess.Popen[bytes]] = {}
        self._stop_reasons: dict[int, str] = {}
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
        with self._lock:
            self._processes[launch.attempt_id] = process
        threading.Thread(
            target=self._follow,
            args=(launch, process, spool),
            name=f"local-{launch.name}",
            daemon=True,
        ).start()
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

    def _follow(
        self, launch: Launch, process: subprocess.Popen[bytes], spool: Path
    ) -> None:
        """Copy output to the spool file line by line, then report the end."""
        assert process.stdout is not None
        with spool.open("wb") as sink:
            for raw in process.stdout:
                sink.write(raw)
                sink.flush()
                if self.on_output:
                    self.on_output(launch, raw.decode(errors="replace").rstrip("\n"))
        code = process.wait()
        with self._lock:
            self._processes.pop(launch.attempt_id, None)
            stop_reason = self._stop_reasons.pop(launch.attempt_id, None)
        self._finish(launch, _ending(launch.attempt_id, code, stop_reason))

    def _finish(self, launch: Launch, ended: AttemptEnded) -> None:
        self.logs.upload(launch.log_key)
        self.report(ended)

    def stop(self, attempt_id: int, reason: str) -> None:
        with self._lock:
            process = self._processes.get(attempt_id)
            if process is None:
                return
            self._stop_reasons[attempt_id] = reason
        _signal_group(process, signal.SIGTERM)
        timer = threading.Timer(STOP_GRACE_S, _signal_group, (process, signal.SIGKILL))
        timer.daemon = True
        timer.start()

    def close(self) -> None:
        with self._lock:
            running = list(self._processes)
        for attempt_id in running:
            self.stop(attempt_id, "Canceled")


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


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


def _path_with_our_bin(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    ours = str(Path(sys.executable).parent)
    rest = [p for p in env.get("PATH", "").split(os.pathsep) if p and p != ours]
    return os.pathsep.join([ours, *rest])
