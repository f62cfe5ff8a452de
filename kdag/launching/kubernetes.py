"""The kubernetes launcher: one pod per attempt, watched until it is over.

`start()` creates the pod that `kubepods.build_pod` describes and returns at
once. A 409 AlreadyExists for a pod of the same attempt (its annotation says
so) means an earlier call created it: the launcher adopts it.

A thread per attempt then follows the pod: it lists it (a field selector on
its name), and, unless that already shows the end, watches it from the list's
resourceVersion with a server-side timeout. Each event goes through
`kubepods.describe_termination`. When the watch ends for any reason (its
timeout, 410 Gone because the version is too old, a dropped connection), the
thread lists again and watches again, so no change is missed; repeated
failures back off up to 30 s. Once the attempt is over, the thread copies the
pod's log into the log store's spool file and uploads it, deletes the pod, and
reports the `AttemptEnded`.

`stop()` ends an attempt from the outside (Timeout, Canceled): it saves the
log written so far, deletes the pod with a short grace period and reports the
end with that reason. Exactly one of the thread and `stop()` ends an attempt:
whichever first claims it (takes it out of `_attempts`) does the work.

`close()` stops following and leaves the pods running (see the README's Known
limitations: a restarted controller does not adopt them yet).

Errors of the Kubernetes client (`ApiException`, urllib3's) are translated
here and nowhere else: 5xx, 408, 429 and connection failures become
`TemporaryError` (with the server's Retry-After when it sends one), other 4xx
answers (403 Forbidden, 422 Invalid...) `PermanentError`.

Configuration is found as kubectl finds it: the in-cluster service account,
else the kubeconfig that KUBECONFIG names, else ~/.kube/config.

NB: importing the client takes a while; only the controller imports this
module, and only when the kubernetes launcher is chosen, so that `kdag
--version` and the local launcher stay fast.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any

import kubernetes.client
import kubernetes.config
import kubernetes.watch
import urllib3
from kubernetes.client import ApiException

from kdag.errors import ConfigError, KdagError, PermanentError, TemporaryError
from kdag.launching import AttemptEnded, Launch, Report
from kdag.launching.kubepods import (
    CONTAINER,
    attempt_id_of,
    build_pod,
    describe_termination,
)
from kdag.logstore import LogStore

logger = logging.getLogger(__name__)

STOP_GRACE_S = 5
WATCH_TIMEOUT_S = 300
REQUEST_TIMEOUT_S = 30.0
RETRY_MAX_S = 30.0
CLOSE_WAIT_S = 2.0
TEMPORARY_STATUSES = frozenset({408, 429})
PLAIN_EXITS = frozenset({"Completed", "Error"})


@dataclasses.dataclass
class _Attempt:
    launch: Launch
    is_done: threading.Event = dataclasses.field(default_factory=threading.Event)
    watch: Any = None  # the kubernetes.watch.Watch streaming now, if any
    thread: threading.Thread | None = None


class KubernetesLauncher:
    name = "kubernetes"

    def __init__(
        self,
        *,
        report: Report,
        logs: LogStore,
        stop_grace_s: int = STOP_GRACE_S,
        watch_timeout_s: int = WATCH_TIMEOUT_S,
    ) -> None:
        self.report = report
        self.logs = logs
        self.stop_grace_s = stop_grace_s
        self.watch_timeout_s = watch_timeout_s
        # NB: Any, not the client's types: they want model objects, not manifests
        self._api: Any = kubernetes.client.ApiClient(_load_configuration())
        self._core: Any = kubernetes.client.CoreV1Api(self._api)
        self._attempts: dict[int, _Attempt] = {}
        self._lock = threading.Lock()

    def start(self, launch: Launch) -> str:
        with _translated(f"creating pod {_where(launch)}"):
            is_new = self._create(launch)
        logger.info(
            "pod %s: dag=%s run=%s task=%s attempt=%s pod=%s",
            "created" if is_new else "adopted",
            launch.dag,
            launch.run_id,
            launch.task,
            launch.attempt,
            _where(launch),
        )
        attempt = _Attempt(launch)
        attempt.thread = threading.Thread(
            target=self._follow,
            args=(attempt,),
            name=f"kube-{launch.name}",
            daemon=True,
        )
        with self._lock:
            self._attempts[launch.attempt_id] = attempt
        attempt.thread.start()
        return launch.name

    def _create(self, launch: Launch) -> bool:
        """Create the pod; return False if it already existed for this attempt."""
        try:
            self._core.create_namespaced_pod(
                launch.namespace, build_pod(launch), _request_timeout=REQUEST_TIMEOUT_S
            )
            return True
        except ApiException as exc:
            if exc.status != HTTPStatus.CONFLICT:
                raise
        existing = self._core.read_namespaced_pod(
            launch.name,
            launch.namespace,
            _preload_content=False,
            _request_timeout=REQUEST_TIMEOUT_S,
        )
        try:
            is_ours = attempt_id_of(_read_json(existing)) == launch.attempt_id
        except ValueError:
            is_ours = False
        if not is_ours:
            raise PermanentError(f"pod {_where(launch)} exists for another attempt")
        return False

    def stop(self, attempt_id: int, reason: str) -> None:
        attempt = self._claim(attempt_id)
        if attempt is None:
            return  # already over, or not ours
        ended = AttemptEnded(
            attempt_id, False, None, reason, f"stopped by kdag: {reason}"
        )
        threading.Thread(
            target=self._finish,
            args=(attempt.launch, ended),
            kwargs={"grace_s": self.stop_grace_s},
            name=f"kube-stop-{attempt.launch.name}",
            daemon=True,
        ).start()

    def close(self) -> None:
        with self._lock:
            attempts = list(self._attempts.values())
            self._attempts.clear()
        for attempt in attempts:
            _stop_following(attempt)
        # NB: a watch stopped before its response arrived ends only at its next
        # event or timeout; no report can follow (nothing is left to claim), so
        # the wait for the threads is short
        deadline = time.monotonic() + CLOSE_WAIT_S
        for attempt in attempts:
            if attempt.thread is not None:
                attempt.thread.join(timeout=max(0.0, deadline - time.monotonic()))
        if attempts:
            logger.info("stopped following %d pods; they keep running", len(attempts))
        self._api.close()

    def _claim(self, attempt_id: int) -> _Attempt | None:
        """Take the attempt out of the followed ones; None if someone else did."""
        with self._lock:
            attempt = self._attempts.pop(attempt_id, None)
        if attempt is not None:
            _stop_following(attempt)
        return attempt

    # -- following one pod (in its own thread)

    def _follow(self, attempt: _Attempt) -> None:
        try:
            ended = self._wait_for_end(attempt)
        except Exception as exc:  # the attempt must end even if following it broke
            logger.exception("following pod %s failed", _where(attempt.launch))
            ended = AttemptEnded(
                attempt.launch.attempt_id, False, None, "LauncherError", str(exc)
            )
        if ended is not None and self._claim(attempt.launch.attempt_id) is not None:
            self._finish(attempt.launch, ended)

    def _wait_for_end(self, attempt: _Attempt) -> AttemptEnded | None:
        """Return how the attempt ended; None if it stopped being followed first."""
        failures = 0
        while not attempt.is_done.is_set():
            try:
                with _translated(f"watching pod {_where(attempt.launch)}"):
                    ended = self._watch_once(attempt)
            except KdagError as error:
                if attempt.is_done.is_set():
                    return None
                failures += 1
                self._back_off(attempt, error, failures)
                continue
            failures = 0
            if ended is not None:
                return ended
        return None

    def _back_off(self, attempt: _Attempt, error: KdagError, failures: int) -> None:
        """Wait before watching again: not at all after one failure (a dropped
        stream is routine), then 1, 2, 4... up to 30 s."""
        if failures == 1:
            logger.info("%s; watching again", error)
            return
        delay = min(RETRY_MAX_S, 2.0 ** (failures - 2))
        logger.warning("%s; again in %.0fs", error, delay)
        attempt.is_done.wait(delay)

    def _watch_once(self, attempt: _Attempt) -> AttemptEnded | None:
        """List the pod, then watch it from there until the watch ends."""
        launch = attempt.launch
        pod, version = self._list_pod(launch)
        ended = _judge(launch, pod)
        if ended is not None or attempt.is_done.is_set():
            return ended
        attempt.watch = kubernetes.watch.Watch()  # type: ignore[no-untyped-call]
        try:
            for event in attempt.watch.stream(
                self._core.list_namespaced_pod,
                launch.namespace,
                field_selector=f"metadata.name={launch.name}",
                resource_version=version,
                timeout_seconds=self.watch_timeout_s,
                _request_timeout=(REQUEST_TIMEOUT_S, self.watch_timeout_s + 30),
            ):
                if attempt.is_done.is_set():
                    return None
                if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                    gone = event["type"] == "DELETED"
                    ended = _judge(launch, event["raw_object"], is_deleted=gone)
                    if ended is not None:
                        return ended
        except ApiException as exc:
            if exc.status != HTTPStatus.GONE:
                raise
            logger.debug("watch of pod %s expired; listing again", _where(launch))
        finally:
            attempt.watch = None
        return None

    def _list_pod(self, launch: Launch) -> tuple[dict[str, Any] | None, str]:
        """Return the pod (None if it is gone) and the list's resourceVersion."""
        response = self._core.list_namespaced_pod(
            launch.namespace,
            field_selector=f"metadata.name={launch.name}",
            _preload_content=False,
            _request_timeout=REQUEST_TIMEOUT_S,
        )
        listing = _read_json(response)
        items = listing.get("items") or []
        return (items[0] if items else None), listing["metadata"]["resourceVersion"]

    # -- ending an attempt: log, pod, report

    def _finish(
        self, launch: Launch, ended: AttemptEnded, *, grace_s: int | None = None
    ) -> None:
        try:
            self._save_log(launch, ended)
        except Exception:  # the end must still be reported
            logger.exception("saving the log of pod %s failed", _where(launch))
        with _logged(f"deleting pod {_where(launch)}"):
            self._core.delete_namespaced_pod(
                launch.name,
                launch.namespace,
                grace_period_seconds=grace_s,
                _request_timeout=REQUEST_TIMEOUT_S,
            )
        logger.info(
            "pod ended: dag=%s run=%s task=%s attempt=%s pod=%s reason=%s exit_code=%s",
            launch.dag,
            launch.run_id,
            launch.task,
            launch.attempt,
            _where(launch),
            ended.reason,
            ended.exit_code,
        )
        self.report(ended)

    def _save_log(self, launch: Launch, ended: AttemptEnded) -> None:
        """Copy the pod's log to the spool file, add why it ended, upload it."""
        spool = self.logs.spool_path(launch.log_key)
        notes = []
        try:
            with _translated(f"reading the log of pod {_where(launch)}"):
                self._copy_log(launch, spool)
        except KdagError as error:
            notes.append(f"kdag: no log: {error}")
        if ended.reason not in PLAIN_EXITS:
            notes.append(f"kdag: {ended.reason}: {ended.message}")
        if notes:
            with spool.open("a") as sink:
                sink.write("".join(f"{note}\n" for note in notes))
        self.logs.upload(launch.log_key)

    def _copy_log(self, launch: Launch, spool: Path) -> None:
        response = self._core.read_namespaced_pod_log(
            launch.name,
            launch.namespace,
            container=CONTAINER,
            _preload_content=False,
            _request_timeout=(REQUEST_TIMEOUT_S, 5 * REQUEST_TIMEOUT_S),
        )
        try:
            with spool.open("wb") as sink:
                for chunk in response.stream(64 * 1024):
                    sink.write(chunk)
        finally:
            response.release_conn()


def _judge(
    launch: Launch, pod: dict[str, Any] | None, *, is_deleted: bool = False
) -> AttemptEnded | None:
    """Return the attempt's end if `pod` (None: not found) shows one."""
    ended = describe_termination(pod) if pod is not None else None
    if ended is None and (pod is None or is_deleted):
        message = f"pod {_where(launch)} was deleted before it ended"
        return AttemptEnded(launch.attempt_id, False, None, "PodDeleted", message)
    return ended


def _read_json(response: Any) -> Any:
    """Return the JSON body of a raw (not preloaded) response, and release it."""
    try:
        return json.loads(response.data)
    finally:
        response.release_conn()


def _stop_following(attempt: _Attempt) -> None:
    attempt.is_done.set()
    watch = attempt.watch
    if watch is not None:
        watch.stop()


def _where(launch: Launch) -> str:
    return f"{launch.namespace}/{launch.name}"


def _load_configuration() -> Any:
    """Return the client configuration: in-cluster, else the kubeconfig."""
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration
        )
        return configuration
    except kubernetes.config.ConfigException:
        pass
    # NB: the client reads KUBECONFIG once, when it is first imported; read it now
    path = os.environ.get("KUBECONFIG") or "~/.kube/config"
    try:
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=path, client_configuration=configuration, persist_config=False
        )
    except (kubernetes.config.ConfigException, OSError, ValueError) as exc:
        raise ConfigError(
            f"no Kubernetes API to talk to: not in a cluster, and kubeconfig {path}: "
            f"{exc}"
        ) from exc
    return configuration


# -- the one place where the client's errors become kdag's


@contextlib.contextmanager
def _translated(doing: str) -> Iterator[None]:
    """Raise the client's failures as TemporaryError or PermanentError."""
    try:
        yield
    except ApiException as exc:
        raise _api_error(doing, exc) from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise TemporaryError(
            f"{doing}: cannot reach the Kubernetes API: {exc}"
        ) from exc


@contextlib.contextmanager
def _logged(doing: str) -> Iterator[None]:
    """Log a failure as a warning and go on; a 404 (already gone) is no failure."""
    try:
        with _translated(doing):
            yield
    except KdagError as error:
        cause = error.__cause__
        if not (
            isinstance(cause, ApiException) and cause.status == HTTPStatus.NOT_FOUND
        ):
            logger.warning("%s", error)


def _api_error(doing: str, exc: ApiException) -> KdagError:
    status = exc.status or 0
    message = f"{doing}: {_status_message(exc)}"
    if status == 0 or status in TEMPORARY_STATUSES or status >= 500:
        return TemporaryError(message, delay_s=_retry_after_s(exc))
    return PermanentError(message)


def _status_message(exc: ApiException) -> str:
    """Return the message of the Status object the API sent, or the HTTP reason."""
    try:
        status = json.loads(exc.body or "")
    except ValueError:
        status = None
    if isinstance(status, dict) and status.get("message"):
        return f"{status.get('reason') or exc.status}: {status['message']}"
    return f"HTTP {exc.status} {exc.reason or ''}".rstrip()


def _retry_after_s(exc: ApiException, default_s: float = 5.0) -> float:
    value = (exc.headers or {}).get("Retry-After", "")
    return float(value) if str(value).isdigit() else default_s
