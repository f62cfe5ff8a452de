"""Fixtures for the launcher tests: a Kubernetes API, a log store, launches.

Real: the `kubernetes` client loading a kubeconfig the test writes, HTTP on
127.0.0.1, task processes, the file log store. Emulated: the API server and
its kubelet (`tests/fakes/kube_emulator.py`).
"""

from __future__ import annotations

import itertools
import queue
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from kdag.launching import AttemptEnded, Launch
from kdag.launching.kubernetes import KubernetesLauncher
from kdag.launching.pods import pod_labels, pod_name
from kdag.logstore import LogStore, log_key, open_store
from kdag.specs.model import EnvValue, TaskSpec
from tests.fakes.kube_emulator import KubeEmulator

NAMESPACE = "data-jobs"  # where every test launch runs
MakeLaunch = Callable[..., Launch]


@pytest.fixture
def kube() -> Iterator[KubeEmulator]:
    with KubeEmulator() as emulator:
        yield emulator


@pytest.fixture
def kubeconfig(
    kube: KubeEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A kubeconfig pointing at the emulator, named by KUBECONFIG."""
    path = kube.write_kubeconfig(tmp_path / "kubeconfig", namespace=NAMESPACE)
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return path


@pytest.fixture
def logs(tmp_path: Path) -> LogStore:
    return open_store(tmp_path.joinpath("logs").as_uri(), spool_dir=tmp_path / "spool")


@pytest.fixture
def reports() -> queue.Queue[AttemptEnded]:
    return queue.Queue()


@pytest.fixture
def launcher(
    kubeconfig: Path, logs: LogStore, reports: queue.Queue[AttemptEnded]
) -> Iterator[KubernetesLauncher]:
    """The launcher under test, configured through the kubeconfig."""
    launcher = KubernetesLauncher(report=reports.put, logs=logs)
    yield launcher
    launcher.close()


@pytest.fixture
def make_launch() -> MakeLaunch:
    """Build a `Launch` as the engine does, with a fresh attempt id each time."""
    attempt_ids = itertools.count(101)

    def make(
        command: Sequence[str],
        *,
        args: Sequence[str] = (),
        image: str = "python:3.11-slim",
        env: Mapping[str, EnvValue] | None = None,
        dag: str = "loanfile-daily",
        task: str = "extract",
        run_id: int = 42,
        attempt: int = 1,
        **spec: Any,
    ) -> Launch:
        task_spec = TaskSpec(
            name=task,
            command=tuple(command),
            image=image,
            args=tuple(args),
            env=dict(env or {}),
            **spec,
        )
        kdag_env: dict[str, EnvValue] = {
            "KDAG_DAG": dag,
            "KDAG_RUN_ID": str(run_id),
            "KDAG_TASK": task,
            "KDAG_ATTEMPT": str(attempt),
        }
        return Launch(
            attempt_id=next(attempt_ids),
            dag=dag,
            run_id=run_id,
            task=task,
            attempt=attempt,
            name=pod_name(dag, task, run_id, attempt),
            spec=task_spec,
            env={**kdag_env, **task_spec.env},  # as the engine: kdag's come first
            namespace=NAMESPACE,
            labels=pod_labels(dag, run_id, task, attempt),
            log_key=log_key(dag, run_id, task, attempt),
        )

    return make
