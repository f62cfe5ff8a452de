"""The kubernetes launcher against the Kubernetes API emulator.

Real: the `kubernetes` client and its kubeconfig loading, HTTP, the task
processes, the log store, kubectl. Emulated: the API server and the kubelet
(`tests/fakes/kube_emulator.py`), which runs each pod as a local process.
Every wait is on a queue or on the emulator's state, never a sleep.
"""

from __future__ import annotations

import json
import queue
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kdag.errors import ConfigError, PermanentError, TemporaryError
from kdag.launching import AttemptEnded, Launch
from kdag.launching.kubernetes import KubernetesLauncher
from kdag.logstore import LogStore
from kdag.specs.model import SecretRef
from tests.fakes.kube_emulator import KubeEmulator

WAIT_S = 10

Reports = queue.Queue[AttemptEnded]
MakeLaunch = Callable[..., Launch]


def python(code: str) -> list[str]:
    """The command that runs `code` with this Python."""
    return [sys.executable, "-c", code]


class Gate:
    """Holds a task's process until the test lets it go.

    The process connects to a socket and blocks reading it; closing our end
    lets it finish. No sleeps: the test knows the process runs once
    `wait_for_process()` returns.
    """

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(WAIT_S)
        self._conn: socket.socket | None = None
        port = self._server.getsockname()[1]
        self.code = (
            "import socket\n"
            f"gate = socket.create_connection(('127.0.0.1', {port}))\n"
            "print('waiting', flush=True)\n"
            "gate.recv(1)\n"
            "print('released', flush=True)\n"
        )

    def wait_for_process(self) -> None:
        self._conn, _ = self._server.accept()

    def release(self) -> None:
        if self._conn is not None:
            self._conn.close()

    def close(self) -> None:
        self.release()
        self._server.close()


@pytest.fixture
def gate() -> Iterator[Gate]:
    holder = Gate()
    yield holder
    holder.close()


def run(launcher: KubernetesLauncher, reports: Reports, launch: Launch) -> AttemptEnded:
    """Start the attempt and return what the launcher reports about its end."""
    assert launcher.start(launch) == launch.name
    ended = reports.get(timeout=WAIT_S)
    assert ended.attempt_id == launch.attempt_id
    return ended


def log_text(logs: LogStore, launch: Launch) -> str:
    return logs.read(launch.log_key).decode()


def test_a_pod_that_succeeds_is_completed_with_its_log_stored_and_is_deleted(
    launcher: KubernetesLauncher,
    reports: Reports,
    logs: LogStore,
    kube: KubeEmulator,
    make_launch: MakeLaunch,
) -> None:
    launch = make_launch(python("print('hello from the pod')"))

    ended = run(launcher, reports, launch)

    assert ended == AttemptEnded(launch.attempt_id, True, 0, "Completed")
    assert log_text(logs, launch) == "hello from the pod\n"
    assert not logs.spool_path(launch.log_key).exists()  # uploaded, not pending
    assert (launch.namespace, launch.name) not in kube.pods


def test_a_pod_that_exits_3_is_an_error_with_its_log_stored(
    launcher: KubernetesLauncher,
    reports: Reports,
    logs: LogStore,
    make_launch: MakeLaunch,
) -> None:
    code = (
        "import sys; print('to stdout'); print('to stderr', file=sys.stderr); exit(3)"
    )
    launch = make_launch(python(code))

    ended = run(launcher, reports, launch)

    assert ended == AttemptEnded(launch.attempt_id, False, 3, "Error", "exit code 3")
    assert sorted(log_text(logs, launch).splitlines()) == ["to stderr", "to stdout"]


def test_env_values_and_a_secret_reference_reach_the_process(
    launcher: KubernetesLauncher,
    reports: Reports,
    logs: LogStore,
    kube: KubeEmulator,
    make_launch: MakeLaunch,
) -> None:
    kube.create_secret("data-jobs", "warehouse", {"url": "postgresql://wh/prod"})
    code = "import os; print(*(os.environ[v] for v in ('MODE', 'OUT', 'WH')))"
    env = {
        "MODE": "daily",
        "OUT": "s3://exports/$(KDAG_RUN_ID)",  # kdag's variables come first
        "WH": SecretRef("warehouse", "url"),
    }
    launch = make_launch(python(code), env=env, run_id=5)

    ended = run(launcher, reports, launch)

    assert ended.reason == "Completed"
    assert log_text(logs, launch) == "daily s3://exports/5 postgresql://wh/prod\n"


def test_a_missing_secret_ends_the_attempt_with_create_container_config_error(
    launcher: KubernetesLauncher,
    reports: Reports,
    logs: LogStore,
    make_launch: MakeLaunch,
) -> None:
    env = {"WAREHOUSE_URL": SecretRef("warehouse", "url")}
    launch = make_launch(python("print('never')"), env=env)

    ended = run(launcher, reports, launch)

    assert (ended.reason, ended.exit_code) == ("CreateContainerConfigError", None)
    assert 'secret "warehouse" not found' in ended.message
    assert "CreateContainerConfigError" in log_text(logs, launch)


def test_kdag_variables_are_expanded_in_args_by_kubernetes(
    launcher: KubernetesLauncher,
    reports: Reports,
    logs: LogStore,
    make_launch: MakeLaunch,
) -> None:
    code = "import sys; print(' '.join(sys.argv[1:]))"
    args = ["run=$(KDAG_RUN_ID)", "task=$(KDAG_TASK)", "$$(KDAG_DAG)", "$(UNSET)"]
    launch = make_launch(python(code), args=args, run_id=77)

    run(launcher, reports, launch)

    assert log_text(logs, launch) == "run=77 task=extract $(KDAG_DAG) $(UNSET)\n"


def test_an_image_that_cannot_be_pulled_ends_the_attempt(
    launcher: KubernetesLauncher,
    reports: Reports,
    logs: LogStore,
    kube: KubeEmulator,
    make_launch: MakeLaunch,
) -> None:
    image = "registry.example.com/does-not-exist:1.0"
    launch = make_launch(python("print('never')"), image=image)

    ended = run(launcher, reports, launch)

    assert ended.reason in ("ErrImagePull", "ImagePullBackOff")
    assert (ended.is_success, ended.exit_code) == (False, None)
    assert image in ended.message
    assert image in log_text(logs, launch)
    assert (launch.namespace, launch.name) not in kube.pods


def test_a_command_that_cannot_be_executed_ends_with_start_error(
    launcher: KubernetesLauncher,
    reports: Reports,
    make_launch: MakeLaunch,
) -> None:
    launch = make_launch(["no-such-program-anywhere"])

    ended = run(launcher, reports, launch)

    assert (ended.reason, ended.exit_code) == ("StartError", 128)
    assert "no-such-program-anywhere" in ended.message


def test_stop_deletes_the_pod_and_reports_the_reason(
    launcher: KubernetesLauncher,
    reports: Reports,
    logs: LogStore,
    kube: KubeEmulator,
    make_launch: MakeLaunch,
    gate: Gate,
) -> None:
    launch = make_launch(python(gate.code))
    launcher.start(launch)
    gate.wait_for_process()
    kube.wait_until(lambda: b"waiting" in kube.log_of(launch.namespace, launch.name))

    launcher.stop(launch.attempt_id, "Timeout")

    ended = reports.get(timeout=WAIT_S)
    assert (ended.attempt_id, ended.is_success) == (launch.attempt_id, False)
    assert (ended.reason, ended.exit_code) == ("Timeout", None)
    assert log_text(logs, launch).startswith("waiting\n")  # what it wrote so far
    kube.wait_until(lambda: (launch.namespace, launch.name) not in kube.pods)
    assert reports.empty()  # the pod's end is not reported a second time


def test_the_pod_carries_kdags_labels_and_the_attempt_annotation(
    launcher: KubernetesLauncher,
    reports: Reports,
    kube: KubeEmulator,
    make_launch: MakeLaunch,
    gate: Gate,
) -> None:
    launch = make_launch(python(gate.code), task="publish", run_id=9, attempt=3)
    launcher.start(launch)
    gate.wait_for_process()

    pod = kube.pods[(launch.namespace, launch.name)]
    assert pod["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "kdag",
        "kdag.dev/dag": "loanfile-daily",
        "kdag.dev/run": "9",
        "kdag.dev/task": "publish",
        "kdag.dev/attempt": "3",
    }
    assert pod["metadata"]["annotations"] == {
        "kdag.dev/attempt-id": str(launch.attempt_id)
    }
    assert pod["spec"]["restartPolicy"] == "Never"
    gate.release()
    assert reports.get(timeout=WAIT_S).reason == "Completed"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_sees_the_pods_through_the_same_kubeconfig(
    launcher: KubernetesLauncher,
    reports: Reports,
    kubeconfig: Path,
    tmp_path: Path,
    make_launch: MakeLaunch,
    gate: Gate,
) -> None:
    launch = make_launch(python(gate.code))
    launcher.start(launch)
    gate.wait_for_process()

    found = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), "--cache-dir", str(tmp_path),
         "get", "pods", "-l", "app.kubernetes.io/managed-by=kdag", "-o", "json"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip

    [pod] = json.loads(found.stdout)["items"]
    assert pod["metadata"]["name"] == launch.name
    assert pod["metadata"]["namespace"] == launch.namespace
    assert pod["status"]["phase"] == "Running"
    gate.release()
    assert reports.get(timeout=WAIT_S).reason == "Completed"


# -- the watch survives what a real API server does to it


def test_a_dropped_watch_is_resumed_without_missing_the_end(
    launcher: KubernetesLauncher,
    reports: Reports,
    kube: KubeEmulator,
    make_launch: MakeLaunch,
    gate: Gate,
) -> None:
    launch = make_launch(python(gate.code))
    launcher.start(launch)
    gate.wait_for_process()
    kube.wait_until(lambda: kube.watches_served == 1)

    kube.drop_watches()
    kube.wait_until(lambda: kube.watches_served == 2)  # listed and watching again
    gate.release()

    assert reports.get(timeout=WAIT_S).reason == "Completed"


def test_an_expired_watch_is_listed_again(
    launcher: KubernetesLauncher,
    reports: Reports,
    kube: KubeEmulator,
    make_launch: MakeLaunch,
    gate: Gate,
) -> None:
    kube.expire_next_watches(1)
    launch = make_launch(python(gate.code))
    launcher.start(launch)
    gate.wait_for_process()
    kube.wait_until(lambda: kube.watches_served == 2)  # 410 Gone, then again
    gate.release()

    assert reports.get(timeout=WAIT_S).reason == "Completed"


def test_a_pod_deleted_by_someone_else_ends_the_attempt(
    launcher: KubernetesLauncher,
    reports: Reports,
    kube: KubeEmulator,
    make_launch: MakeLaunch,
    gate: Gate,
) -> None:
    launch = make_launch(python(gate.code))
    launcher.start(launch)
    gate.wait_for_process()

    kube.delete_pod(launch.namespace, launch.name, grace_s=0)

    ended = reports.get(timeout=WAIT_S)
    assert (ended.reason, ended.is_success) == ("PodDeleted", False)


# -- creating the pod


def test_a_pod_created_by_an_earlier_start_is_adopted(
    kubeconfig: Path,
    logs: LogStore,
    reports: Reports,
    launcher: KubernetesLauncher,
    make_launch: MakeLaunch,
    gate: Gate,
) -> None:
    launch = make_launch(python(gate.code))
    # a controller that created the pod, then went away
    earlier = KubernetesLauncher(report=reports.put, logs=logs)
    earlier.start(launch)
    earlier.close()
    gate.wait_for_process()

    assert launcher.start(launch) == launch.name
    gate.release()

    assert reports.get(timeout=WAIT_S).reason == "Completed"
    assert reports.empty()


def test_a_pod_of_another_attempt_under_the_same_name_is_refused(
    launcher: KubernetesLauncher,
    make_launch: MakeLaunch,
    gate: Gate,
) -> None:
    first = make_launch(python(gate.code))
    launcher.start(first)
    gate.wait_for_process()
    second = make_launch(python(gate.code))  # same name, another attempt id
    assert second.name == first.name

    with pytest.raises(PermanentError, match="exists for another attempt"):
        launcher.start(second)


def test_a_pod_the_api_rejects_is_a_permanent_error(
    launcher: KubernetesLauncher, make_launch: MakeLaunch
) -> None:
    launch = make_launch(python("print('never')"), image="")

    with pytest.raises(PermanentError, match=r"Invalid: .*image: Required value"):
        launcher.start(launch)


def test_an_api_that_does_not_answer_is_a_temporary_error(
    kube: KubeEmulator,
    kubeconfig: Path,
    logs: LogStore,
    reports: Reports,
    make_launch: MakeLaunch,
) -> None:
    launcher = KubernetesLauncher(report=reports.put, logs=logs)
    kube.stop()  # the kubeconfig now names a closed port

    with pytest.raises(TemporaryError, match="cannot reach the Kubernetes API"):
        launcher.start(make_launch(python("print('never')")))
    launcher.close()


def test_no_configuration_at_all_is_a_config_error(
    tmp_path: Path, logs: LogStore, reports: Reports, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)

    with pytest.raises(ConfigError, match="kubeconfig"):
        KubernetesLauncher(report=reports.put, logs=logs)
