"""Pod manifests and pod ends: pure functions, so no emulator and no client."""

from __future__ import annotations

from typing import Any

import pytest

from kdag.launching import AttemptEnded, Launch
from kdag.launching.kubepods import build_pod, describe_termination
from kdag.launching.pods import pod_labels, pod_name
from kdag.specs.model import SecretRef, TaskSpec


def launch_of(spec: TaskSpec, **env: Any) -> Launch:
    return Launch(
        attempt_id=7,
        dag="loanfile-daily",
        run_id=42,
        task=spec.name,
        attempt=2,
        name=pod_name("loanfile-daily", spec.name, 42, 2),
        spec=spec,
        env=env,
        namespace="data-jobs",
        labels=pod_labels("loanfile-daily", 42, spec.name, 2),
        log_key="loanfile-daily/42/extract/2.log",
    )


EXTRACT = TaskSpec(
    name="extract",
    command=("python", "-m", "etl.extract"),
    args=("--date", "$(KDAG_LOGICAL_DATE)"),
    image="registry.example.com/etl:2024.06.1",
    service_account="etl",
    resources={"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"cpu": 1}},
)


def test_the_pod_is_named_labelled_and_annotated_for_its_attempt() -> None:
    pod = build_pod(launch_of(EXTRACT))

    assert pod["apiVersion"] == "v1"
    assert pod["kind"] == "Pod"
    assert pod["metadata"] == {
        "name": pod_name("loanfile-daily", "extract", 42, 2),
        "namespace": "data-jobs",
        "labels": pod_labels("loanfile-daily", 42, "extract", 2),
        "annotations": {"kdag.dev/attempt-id": "7"},
    }


def test_the_pod_runs_one_task_container_once() -> None:
    pod = build_pod(launch_of(EXTRACT))

    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["serviceAccountName"] == "etl"
    [container] = pod["spec"]["containers"]
    assert container["name"] == "task"
    assert container["image"] == "registry.example.com/etl:2024.06.1"
    assert container["command"] == ["python", "-m", "etl.extract"]
    assert container["args"] == ["--date", "$(KDAG_LOGICAL_DATE)"]


def test_quantities_become_strings() -> None:
    [container] = build_pod(launch_of(EXTRACT))["spec"]["containers"]

    assert container["resources"] == {
        "requests": {"cpu": "250m", "memory": "512Mi"},
        "limits": {"cpu": "1"},
    }


def test_env_keeps_its_order_and_secrets_stay_references() -> None:
    launch = launch_of(
        EXTRACT,
        MODE="daily",
        WAREHOUSE_URL=SecretRef("warehouse", "url"),
        KDAG_RUN_ID="42",
    )
    [container] = build_pod(launch)["spec"]["containers"]

    assert container["env"] == [
        {"name": "MODE", "value": "daily"},
        {
            "name": "WAREHOUSE_URL",
            "valueFrom": {"secretKeyRef": {"name": "warehouse", "key": "url"}},
        },
        {"name": "KDAG_RUN_ID", "value": "42"},
    ]


def test_a_bare_task_leaves_out_what_it_does_not_set() -> None:
    bare = TaskSpec(name="extract", command=("true",), image="busybox")
    pod = build_pod(launch_of(bare))

    assert "serviceAccountName" not in pod["spec"]
    [container] = pod["spec"]["containers"]
    assert set(container) == {"name", "image", "command"}


# -- describe_termination


def pod_in(phase: str, state: dict[str, Any] | None, **status: Any) -> dict[str, Any]:
    containers = [] if state is None else [{"name": "task", "state": state}]
    return {
        "metadata": {"name": "p", "annotations": {"kdag.dev/attempt-id": "7"}},
        "status": {"phase": phase, "containerStatuses": containers, **status},
    }


def terminated(code: int, reason: str, **more: Any) -> dict[str, Any]:
    return {"terminated": {"exitCode": code, "reason": reason, **more}}


def waiting(reason: str, message: str = "") -> dict[str, Any]:
    return {"waiting": {"reason": reason, "message": message}}


@pytest.mark.parametrize(
    ("pod", "ended"),
    [
        (
            pod_in("Succeeded", terminated(0, "Completed")),
            AttemptEnded(7, True, 0, "Completed"),
        ),
        (
            pod_in("Failed", terminated(3, "Error")),
            AttemptEnded(7, False, 3, "Error", "exit code 3"),
        ),
        (
            pod_in("Failed", terminated(137, "OOMKilled")),
            AttemptEnded(7, False, 137, "OOMKilled", "exit code 137"),
        ),
        (
            pod_in("Failed", terminated(128, "StartError", message="exec: not found")),
            AttemptEnded(7, False, 128, "StartError", "exec: not found"),
        ),
        (
            pod_in(
                "Failed",
                terminated(137, "Error"),
                reason="DeadlineExceeded",
                message="Pod was active on the node longer than the specified deadline",
            ),
            AttemptEnded(
                7,
                False,
                137,
                "DeadlineExceeded",
                "Pod was active on the node longer than the specified deadline",
            ),
        ),
        (
            pod_in("Failed", None, reason="Evicted", message="low on memory"),
            AttemptEnded(7, False, None, "Evicted", "low on memory"),
        ),
    ],
    ids=["completed", "error", "oom", "start-error", "deadline", "evicted"],
)
def test_a_finished_pod_says_how_the_attempt_ended(
    pod: dict[str, Any], ended: AttemptEnded
) -> None:
    assert describe_termination(pod) == ended


@pytest.mark.parametrize(
    "reason",
    [
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
    ],
)
def test_a_container_stuck_waiting_ends_the_attempt(reason: str) -> None:
    pod = pod_in("Pending", waiting(reason, "why it waits"))

    assert describe_termination(pod) == AttemptEnded(
        7, False, None, reason, "why it waits"
    )


@pytest.mark.parametrize(
    "pod",
    [
        pod_in("Pending", None),
        pod_in("Pending", waiting("ContainerCreating")),
        pod_in("Running", {"running": {"startedAt": "2024-06-03T10:00:00Z"}}),
    ],
    ids=["unscheduled", "creating", "running"],
)
def test_a_pod_on_its_way_is_not_over(pod: dict[str, Any]) -> None:
    assert describe_termination(pod) is None


def test_a_pod_kdag_did_not_build_is_refused() -> None:
    pod = pod_in("Succeeded", terminated(0, "Completed"))
    del pod["metadata"]["annotations"]

    with pytest.raises(ValueError, match=r"kdag\.dev/attempt-id"):
        describe_termination(pod)
