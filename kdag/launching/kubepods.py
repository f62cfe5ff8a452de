"""Pod manifests in and attempt ends out: pure functions, no I/O, no client import.

`build_pod` turns a `Launch` into the Pod kdag creates: one container named
`task`, `restartPolicy: Never` (retries are kdag's, so each attempt is its own
pod), the attempt's labels, and its attempt id in an annotation so that the
pod alone says which attempt it runs.

`describe_termination` reads a pod in the API's JSON shape (camelCase, as a
watch event carries it) and says whether the attempt is over:

- the pod has finished (phase Succeeded or Failed): the container's
  `state.terminated` gives the exit code and reason (Completed, Error,
  OOMKilled, StartError...); a pod-level reason (DeadlineExceeded, Evicted)
  wins, since it says why the kubelet ended it;
- the container waits in a state that does not end on its own (an image that
  cannot be pulled, a missing Secret): waiting longer would only delay the
  failure until the task's timeout, so the attempt ends now with that reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kdag.launching import AttemptEnded, Launch
from kdag.specs.model import EnvValue, SecretRef

CONTAINER = "task"
ATTEMPT_ANNOTATION = "kdag.dev/attempt-id"
FINISHED_PHASES = frozenset({"Succeeded", "Failed"})
STUCK_WAITING = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
    }
)


def build_pod(launch: Launch) -> dict[str, Any]:
    """Return the Pod manifest for one attempt."""
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [_container(launch)],
    }
    if launch.spec.service_account:
        spec["serviceAccountName"] = launch.spec.service_account
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": launch.name,
            "namespace": launch.namespace,
            "labels": dict(launch.labels),
            "annotations": {ATTEMPT_ANNOTATION: str(launch.attempt_id)},
        },
        "spec": spec,
    }


def _container(launch: Launch) -> dict[str, Any]:
    task = launch.spec
    container: dict[str, Any] = {"name": CONTAINER, "image": task.image}
    if task.command:
        container["command"] = list(task.command)
    if task.args:
        container["args"] = list(task.args)
    if launch.env:
        # NB: order matters: Kubernetes expands $(VAR) in a value only from the
        # variables listed before it
        container["env"] = [_env_var(name, v) for name, v in launch.env.items()]
    resources = _resources(task.resources)
    if resources:
        container["resources"] = resources
    return container


def _env_var(name: str, value: EnvValue) -> dict[str, Any]:
    if isinstance(value, SecretRef):
        ref = {"name": value.secret, "key": value.key}
        return {"name": name, "valueFrom": {"secretKeyRef": ref}}
    return {"name": name, "value": value}


def _resources(resources: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Copy requests and limits, quantities as strings ("250m", "1Gi", "2")."""
    return {
        group: {name: str(quantity) for name, quantity in amounts.items()}
        for group, amounts in resources.items()
        if amounts
    }


def describe_termination(pod: Mapping[str, Any]) -> AttemptEnded | None:
    """Return how the attempt ended if the pod says it is over, else None.

    Raises ValueError for a pod without kdag's attempt-id annotation.
    """
    attempt_id = attempt_id_of(pod)
    status = pod.get("status") or {}
    state = _container_state(status)
    if status.get("phase") in FINISHED_PHASES:
        return _finished(attempt_id, status, state.get("terminated") or {})
    waiting = state.get("waiting") or {}
    if waiting.get("reason") in STUCK_WAITING:
        reason = waiting["reason"]
        return AttemptEnded(attempt_id, False, None, reason, waiting.get("message", ""))
    return None


def attempt_id_of(pod: Mapping[str, Any]) -> int:
    """Return the attempt id a kdag pod carries in its annotation."""
    metadata = pod.get("metadata") or {}
    value = (metadata.get("annotations") or {}).get(ATTEMPT_ANNOTATION, "")
    if not str(value).isdigit():
        name = metadata.get("name", "?")
        raise ValueError(f"pod {name} has no {ATTEMPT_ANNOTATION} annotation")
    return int(value)


def _container_state(status: Mapping[str, Any]) -> Mapping[str, Any]:
    for container in status.get("containerStatuses") or []:
        if container.get("name") == CONTAINER:
            return container.get("state") or {}
    return {}


def _finished(
    attempt_id: int, status: Mapping[str, Any], terminated: Mapping[str, Any]
) -> AttemptEnded:
    exit_code = terminated.get("exitCode")
    is_success = status.get("phase") == "Succeeded" and exit_code == 0
    reason = status.get("reason") or terminated.get("reason")
    reason = reason or ("Completed" if is_success else "Error")
    message = status.get("message") or terminated.get("message") or ""
    if not message and not is_success and exit_code is not None:
        message = f"exit code {exit_code}"
    return AttemptEnded(attempt_id, is_success, exit_code, reason, message)
