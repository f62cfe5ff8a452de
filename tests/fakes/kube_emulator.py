"""A small Kubernetes API server for tests: real HTTP, pods that run as processes.

`KubeEmulator` serves part of the core/v1 API on 127.0.0.1 (a free port) with
`http.server`, so the real `kubernetes` client and `kubectl` talk to it through
a kubeconfig it writes. Behaviour follows the published API (api-concepts,
api-conventions, the Pod and Secret references):

- Objects get a `uid`, a `creationTimestamp` and a `resourceVersion` taken from
  one global counter that every change increases. Lists carry the counter's
  value in `metadata.resourceVersion`; list items carry no kind/apiVersion.
- Errors are `Status` objects: 404 NotFound, 409 AlreadyExists, 422 Invalid
  (with `details.causes`), 400 BadRequest (bad selectors, bad quantities, a
  namespace that does not match the URL, logs of a container still waiting).
- `watch=true` streams `{"type", "object"}` JSON lines in a chunked response.
  Without a resourceVersion (or with "0") it starts with synthetic ADDED
  events for what exists; with one it sends the changes after it. A version
  older than the kept history gets HTTP 200 and one ERROR event carrying a
  410 Expired Status, as the API server does. `timeoutSeconds` ends the stream.
- Label selectors (`=`, `==`, `!=`, `in`, `notin`, `key`, `!key`) and the pod
  field selectors the API supports (`metadata.name`, `status.phase`, ...).
- A kubelet per pod: Pending (ContainerCreating) -> Running -> Succeeded or
  Failed, with `containerStatuses[0].state` as a kubelet reports it. The
  container's command and args, `$(VAR)` expanded the Kubernetes way, run as a
  local process in a scratch folder with the container's env (plain values,
  `secretKeyRef` read from stored Secrets, `fieldRef` to the pod's metadata);
  stdout and stderr become the pod's log. Each state change is driven by the
  process itself (started, exited), never by a timer.
- Failures a kubelet reports: an image whose name contains "does-not-exist"
  waits in ErrImagePull then ImagePullBackOff; a malformed image reference
  waits in InvalidImageName; a missing Secret or key waits in
  CreateContainerConfigError until the Secret is created; a command that
  cannot be executed ends in state.terminated reason StartError, exit code 128.
- DELETE with a grace period marks the pod (`deletionTimestamp`), sends
  SIGTERM to the process group and SIGKILL when the grace period is over; the
  pod disappears (a DELETED event) once its process is gone. A pod with no
  process, or a grace period of 0, disappears at once.

Not emulated: authentication and authorization (any token is accepted), other
resource kinds (only pods, pods/log and secrets; every namespace exists),
PUT/PATCH, pagination (`limit` is ignored, no `continue`), bookmarks,
protobuf, server-side printing (Tables), scheduling (every pod lands on one
node), images (the image is ignored apart from the cases above), resource
limits and OOMKilled, restart policies other than Never (every pod runs its
container once), `activeDeadlineSeconds`, init and sidecar containers (a pod
must have exactly one container), volumes (accepted and ignored), ConfigMaps.
Tests may force the error paths a real server shows rarely:
`expire_next_watches()` (410 Expired) and `drop_watches()` (a broken stream).
"""

from __future__ import annotations

import base64
import bisect
import contextlib
import copy
import dataclasses
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

logger = logging.getLogger(__name__)

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace, name)

NODE_NAME = "emulator-node"
DEFAULT_WATCH_TIMEOUT_S = 1800.0
DEFAULT_GRACE_S = 30
START_ERROR_EXIT_CODE = 128

_SUBDOMAIN = re.compile(
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
)
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_QUANTITY = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?\d+)?")
_PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE = re.compile(
    rf"(?:[A-Za-z0-9.-]+(?::\d+)?/)?{_PATH_PART}(?:/{_PATH_PART})*"
    r"(?::[\w][\w.-]{0,127})?(?:@[A-Za-z][A-Za-z0-9]*:[0-9a-fA-F]{32,})?"
)
_SUBDOMAIN_MESSAGE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
    "characters, '-' or '.', and must start and end with an alphanumeric character "
    "(e.g. 'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
_LABEL_MESSAGE = (
    "a valid label must be an empty string or consist of alphanumeric characters, "
    "'-', '_' or '.', and must start and end with an alphanumeric character"
)
_QUANTITY_MESSAGE = (
    "quantities must match the regular expression "
    "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
)
_POD_FIELDS = {
    "metadata.name": ("metadata", "name"),
    "metadata.namespace": ("metadata", "namespace"),
    "spec.nodeName": ("spec", "nodeName"),
    "spec.restartPolicy": ("spec", "restartPolicy"),
    "spec.schedulerName": ("spec", "schedulerName"),
    "spec.serviceAccountName": ("spec", "serviceAccountName"),
    "status.phase": ("status", "phase"),
    "status.podIP": ("status", "podIP"),
    "status.nominatedNodeName": ("status", "nominatedNodeName"),
}


# -- Status objects --------------------------------------------------------------------


class ApiError(Exception):
    """A failed request, answered with a `Status` object."""

    def __init__(
        self, code: int, reason: str, message: str, details: Obj | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.status: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }
        if details is not None:
            self.status["details"] = details


def _not_found(kind: str, name: str) -> ApiError:
    details = {"name": name, "kind": kind}
    return ApiError(404, "NotFound", f'{kind} "{name}" not found', details)


def _already_exists(kind: str, name: str) -> ApiError:
    details = {"name": name, "kind": kind}
    return ApiError(409, "AlreadyExists", f'{kind} "{name}" already exists', details)


def _bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


@dataclasses.dataclass(frozen=True)
class _Cause:
    field: str
    reason: str  # FieldValueRequired, FieldValueInvalid, FieldValueNotSupported
    message: str


def _required(field: str) -> _Cause:
    return _Cause(field, "FieldValueRequired", "Required value")


def _invalid(field: str, value: str, why: str) -> _Cause:
    return _Cause(
        field, "FieldValueInvalid", f"Invalid value: {json.dumps(value)}: {why}"
    )


def _invalid_error(kind: str, name: str, causes: list[_Cause]) -> ApiError:
    texts = [f"{c.field}: {c.message}" for c in causes]
    summary = texts[0] if len(texts) == 1 else f"[{', '.join(texts)}]"
    details = {
        "name": name,
        "kind": kind,
        "causes": [dataclasses.asdict(c) for c in causes],
    }
    return ApiError(422, "Invalid", f'{kind} "{name}" is invalid: {summary}', details)


# -- Validation, as the API server does it before storing ------------------------------


def _subdomain_causes(field: str, name: str) -> list[_Cause]:
    if len(name) > 253:
        return [_invalid(field, name, "must be no more than 253 characters")]
    if not _SUBDOMAIN.fullmatch(name):
        return [_invalid(field, name, _SUBDOMAIN_MESSAGE)]
    return []


def _qualified_name_ok(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _SUBDOMAIN.fullmatch(prefix)):
        return False
    return len(name) <= 63 and bool(_LABEL_NAME.fullmatch(name))


def _metadata_causes(metadata: Obj) -> list[_Cause]:
    causes = []
    for key, value in (metadata.get("labels") or {}).items():
        if not _qualified_name_ok(key):
            causes.append(_invalid("metadata.labels", key, "name part must be valid"))
        elif not isinstance(value, str) or len(value) > 63:
            causes.append(_invalid("metadata.labels", str(value), _LABEL_MESSAGE))
        elif value and not _LABEL_NAME.fullmatch(value):
            causes.append(_invalid("metadata.labels", value, _LABEL_MESSAGE))
    for key in metadata.get("annotations") or {}:
        if not _qualified_name_ok(key):
            causes.append(
                _invalid("metadata.annotations", key, "name part must be valid")
            )
    return causes


def _env_causes(field: str, env: list[Obj]) -> list[_Cause]:
    causes = []
    for j, var in enumerate(env):
        at = f"{field}.env[{j}]"
        if not var.get("name"):
            causes.append(_required(f"{at}.name"))
        source = var.get("valueFrom")
        if source and var.get("value"):
            causes.append(
                _invalid(
                    f"{at}.valueFrom",
                    "",
                    "may not be specified when `value` is not empty",
                )
            )
        ref = (source or {}).get("secretKeyRef")
        if ref is not None:
            causes.extend(
                _required(f"{at}.valueFrom.secretKeyRef.{part}")
                for part in ("name", "key")
                if not ref.get(part)
            )
    return causes


def _container_causes(field: str, container: Obj) -> list[_Cause]:
    causes = []
    name = container.get("name") or ""
    if not name:
        causes.append(_required(f"{field}.name"))
    elif len(name) > 63 or not _DNS_LABEL.fullmatch(name):
        causes.append(_invalid(f"{field}.name", name, "must be a DNS-1123 label"))
    if not container.get("image"):
        causes.append(_required(f"{field}.image"))
    causes.extend(_env_causes(field, container.get("env") or []))
    return causes


def _pod_causes(pod: Obj) -> list[_Cause]:
    metadata = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    causes = []
    if not metadata.get("name"):
        causes.append(
            _Cause(
                "metadata.name",
                "FieldValueRequired",
                "Required value: name or generateName is required",
            )
        )
    else:
        causes.extend(_subdomain_causes("metadata.name", metadata["name"]))
    causes.extend(_metadata_causes(metadata))
    containers = spec.get("containers") or []
    if not containers:
        causes.append(_required("spec.containers"))
    for i, container in enumerate(containers):
        causes.extend(_container_causes(f"spec.containers[{i}]", container))
    policy = spec.get("restartPolicy", "Always")
    if policy not in ("Always", "OnFailure", "Never"):
        causes.append(
            _Cause(
                "spec.restartPolicy",
                "FieldValueNotSupported",
                f'Unsupported value: "{policy}": supported values: '
                '"Always", "OnFailure", "Never"',
            )
        )
    account = spec.get("serviceAccountName")
    if account:
        causes.extend(_subdomain_causes("spec.serviceAccountName", account))
    return causes


def _check_quantities(pod: Obj) -> None:
    """Reject malformed quantities as the API's decoder does: 400, not 422."""
    for container in (pod.get("spec") or {}).get("containers") or []:
        resources = container.get("resources") or {}
        for group in ("requests", "limits"):
            for value in (resources.get(group) or {}).values():
                if isinstance(value, bool) or not (
                    isinstance(value, int | float) or _QUANTITY.fullmatch(str(value))
                ):
                    prefix = 'Pod in version "v1" cannot be handled as a Pod'
                    raise _bad_request(f"{prefix}: {_QUANTITY_MESSAGE}")


# -- Defaults the API server fills in --------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _pull_policy(image: str) -> str:
    last = image.rsplit("/", 1)[-1]
    if "@" in last:
        return "IfNotPresent"
    tag = last.partition(":")[2]
    return "Always" if tag in ("", "latest") else "IfNotPresent"


def _qos_class(containers: list[Obj]) -> str:
    resources = [c.get("resources") or {} for c in containers]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    guaranteed = all(
        set(r.get("limits") or {}) >= {"cpu", "memory"}
        and (r.get("requests") or {}) == (r.get("limits") or {})
        for r in resources
    )
    return "Guaranteed" if guaranteed else "Burstable"


def _default_pod(pod: Obj) -> None:
    spec = pod["spec"]
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", DEFAULT_GRACE_S)
    spec.setdefault("serviceAccountName", "default")
    spec.setdefault("serviceAccount", spec["serviceAccountName"])
    for container in spec["containers"]:
        container.setdefault("imagePullPolicy", _pull_policy(container["image"]))
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        resources = container.setdefault("resources", {})
        limits = resources.get("limits") or {}
        requests = resources.setdefault("requests", {}) if limits else None
        if requests is not None:
            for name, value in limits.items():  # requests default to limits
                requests.setdefault(name, value)
    pod["status"] = {"phase": "Pending", "qosClass": _qos_class(spec["containers"])}


# -- Selectors -------------------------------------------------------------------------

_EXISTS = re.compile(r"\s*(!?)\s*([A-Za-z0-9./_-]+)\s*")
_EQUALS = re.compile(r"\s*([A-Za-z0-9./_-]+)\s*(==|=|!=)\s*([A-Za-z0-9._-]*)\s*")
_IN = re.compile(r"\s*([A-Za-z0-9./_-]+)\s+(in|notin)\s+\(([^()]*)\)\s*")

Predicate = Callable[[Obj], bool]


def _split_requirements(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p for p in parts if p.strip()]


def _label_requirement(text: str) -> Predicate:
    if match := _EQUALS.fullmatch(text):
        key, op, value = match.groups()
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if match := _IN.fullmatch(text):
        key, op, listed = match.groups()
        values = {v.strip() for v in listed.split(",") if v.strip()}
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if match := _EXISTS.fullmatch(text):
        negated, key = match.groups()
        return lambda labels: (key in labels) != bool(negated)
    raise _bad_request(f"unable to parse requirement: {text.strip()!r}")


def label_selector(text: str) -> Predicate:
    """Return a test of an object's labels for a label selector (all must hold)."""
    tests = [_label_requirement(part) for part in _split_requirements(text)]

    def matches(obj: Obj) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(test(labels) for test in tests)

    return matches


def _field_requirement(text: str) -> Predicate:
    match = re.fullmatch(r"\s*([A-Za-z.]+)\s*(==|=|!=)\s*(.*?)\s*", text)
    if not match:
        raise _bad_request(f"invalid field selector: {text.strip()!r}")
    field, op, value = match.groups()
    if field not in _POD_FIELDS:
        raise _bad_request(f'field label not supported: "{field}"')
    section, name = _POD_FIELDS[field]

    def matches(obj: Obj) -> bool:
        actual = str((obj.get(section) or {}).get(name) or "")
        return (actual == value) != (op == "!=")

    return matches


def field_selector(text: str) -> Predicate:
    """Return a test of a pod for a field selector (all must hold)."""
    tests = [_field_requirement(part) for part in text.split(",") if part.strip()]
    return lambda obj: all(test(obj) for test in tests)


# -- $(VAR) expansion, as the kubelet does it ------------------------------------------


def expand(text: str, env: Mapping[str, str]) -> str:
    """Expand `$(NAME)` from `env`; `$$` is a literal `$`; unknown names stay as-is."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "$" or i + 1 == len(text):
            out.append(char)
            i += 1
            continue
        following = text[i + 1]
        if following == "$":
            out.append("$")
            i += 2
        elif following == "(":
            close = text.find(")", i + 2)
            if close == -1:  # no closing paren: the rest is literal
                out.append(text[i:])
                break
            name = text[i + 2 : close]
            out.append(env.get(name, text[i : close + 1]) if name else "$()")
            i = close + 1
        else:
            out.append(text[i : i + 2])
            i += 2
    return "".join(out)


# -- The HTTP side ---------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, emulator: KubeEmulator) -> None:
        self.emulator = emulator
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("kube-emulator: " + format, *args)

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {
            k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()
        }
        body = self._read_body()
        emulator = self.server.emulator
        emulator._note_request(method, self.path)
        try:
            route, params = _route(method, url.path)
            route(emulator, self, query=query, body=body, **params)
        except ApiError as error:
            self.send_json(error.code, error.status)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as error:
            logger.exception("kube-emulator: %s %s failed", method, self.path)
            failure = ApiError(500, "InternalError", f"emulator error: {error}")
            self.send_json(500, failure.status)

    def _read_body(self) -> Obj | None:
        length = int(self.headers.get("Content-Length") or 0)
        if not length:
            return None
        raw = self.rfile.read(length)
        try:
            parsed = json.loads(raw)
        except ValueError:
            return {"__invalid__": raw.decode(errors="replace")}
        return parsed if isinstance(parsed, dict) else {"__invalid__": raw.decode()}

    def send_json(self, code: int, obj: Obj) -> None:
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_text(self, data: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def start_stream(self, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.close_connection = True

    def send_chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

    def end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def break_stream(self) -> None:
        """Cut the connection mid-stream, as a failing load balancer would."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


Route = Callable[..., None]
_NS = r"/api/v1/namespaces/(?P<namespace>[^/]+)"
_ROUTES: list[tuple[re.Pattern[str], dict[str, str]]] = [
    (re.compile(r"/api"), {"GET": "_serve_api_versions"}),
    (re.compile(r"/apis"), {"GET": "_serve_api_groups"}),
    (re.compile(r"/api/v1"), {"GET": "_serve_api_resources"}),
    (re.compile(r"/version"), {"GET": "_serve_version"}),
    (re.compile(r"/api/v1/pods"), {"GET": "_serve_pod_list"}),
    (
        re.compile(_NS + r"/pods"),
        {"GET": "_serve_pod_list", "POST": "_serve_pod_create"},
    ),
    (
        re.compile(_NS + r"/pods/(?P<name>[^/]+)"),
        {"GET": "_serve_pod_get", "DELETE": "_serve_pod_delete"},
    ),
    (re.compile(_NS + r"/pods/(?P<name>[^/]+)/log"), {"GET": "_serve_pod_log"}),
    (re.compile(_NS + r"/secrets"), {"POST": "_serve_secret_create"}),
    (
        re.compile(_NS + r"/secrets/(?P<name>[^/]+)"),
        {"GET": "_serve_secret_get", "DELETE": "_serve_secret_delete"},
    ),
]


def _route(method: str, path: str) -> tuple[Route, dict[str, str]]:
    for pattern, methods in _ROUTES:
        match = pattern.fullmatch(path.rstrip("/") or "/")
        if match is None:
            continue
        if method not in methods:
            raise ApiError(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )
        return getattr(KubeEmulator, methods[method]), match.groupdict()
    raise ApiError(404, "NotFound", "the server could not find the requested resource")


# -- The kubelet's private state of one pod --------------------------------------------


@dataclasses.dataclass
class _Container:
    key: Key
    uid: str
    workdir: Path
    log: bytearray = dataclasses.field(default_factory=bytearray)
    ip: str = ""
    process: subprocess.Popen[bytes] | None = None
    is_deleting: bool = False
    is_done: bool = False
    thread: threading.Thread | None = None


def _kill_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


class _ConfigError(Exception):
    """The container's config cannot be built (CreateContainerConfigError)."""


# -- The emulator ----------------------------------------------------------------------


class KubeEmulator:
    """A Kubernetes API server with a kubelet that runs pods as local processes."""

    def __init__(self, *, history_limit: int = 10_000) -> None:
        self.history_limit = history_limit
        self.requests: list[tuple[str, str]] = []
        self.watches_served = 0
        self._cond = threading.Condition()
        self._rv = 0
        self._pods: dict[Key, Obj] = {}
        self._secrets: dict[Key, Obj] = {}
        self._history: list[tuple[int, str, Obj]] = []
        self._compacted_rv = 0
        self._containers: dict[str, _Container] = {}  # by pod uid
        self._expire_watches = 0
        self._drop_generation = 0
        self._next_ip = 10
        self._is_stopping = False
        self._server: _Server | None = None
        self._root = Path(tempfile.mkdtemp(prefix="kube-emulator-"))

    # -- life cycle and the Python API for tests

    def start(self) -> KubeEmulator:
        self._server = _Server(self)
        threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="kube-emulator",
            daemon=True,
        ).start()
        return self

    def stop(self) -> None:
        """Kill every pod's process and close the server; stopping twice is fine."""
        if self._is_stopping:
            return
        with self._cond:
            self._is_stopping = True
            containers = list(self._containers.values())
            self._cond.notify_all()
        for container in containers:
            if container.process is not None:
                _kill_group(container.process, signal.SIGKILL)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for container in containers:
            if container.thread is not None:
                container.thread.join(timeout=5)
        shutil.rmtree(self._root, ignore_errors=True)

    def __enter__(self) -> KubeEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the emulator first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def write_kubeconfig(self, path: Path, *, namespace: str = "default") -> Path:
        """Write a kubeconfig (JSON, which is YAML) whose current context is us."""
        name = "kube-emulator"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": name, "cluster": {"server": self.url}}],
            "users": [{"name": name, "user": {"token": "emulator-token"}}],
            "contexts": [
                {
                    "name": name,
                    "context": {"cluster": name, "user": name, "namespace": namespace},
                }
            ],
            "current-context": name,
            "preferences": {},
        }
        path.write_text(json.dumps(config, indent=2))
        return path

    @property
    def pods(self) -> dict[Key, Obj]:
        """A snapshot of every stored pod, by (namespace, name)."""
        with self._cond:
            return copy.deepcopy(self._pods)

    def pod(self, namespace: str, name: str) -> Obj | None:
        with self._cond:
            return copy.deepcopy(self._pods.get((namespace, name)))

    def log_of(self, namespace: str, name: str) -> bytes:
        """What the pod's container has written so far (b"" if there is none)."""
        with self._cond:
            container = self._container_of((namespace, name))
            return bytes(container.log) if container else b""

    def create_secret(self, namespace: str, name: str, data: Mapping[str, str]) -> Obj:
        """Store an Opaque Secret whose values are `data` (plain text)."""
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        secret = {"metadata": {"name": name, "namespace": namespace}, "data": encoded}
        return self._create_secret(namespace, secret)

    def delete_pod(self, namespace: str, name: str, *, grace_s: int = 0) -> Obj:
        """Delete a pod as `kubectl delete --grace-period` would."""
        return self._delete_pod(namespace, name, grace_s)

    def wait_until(
        self, predicate: Callable[[], bool], timeout_s: float = 10.0
    ) -> None:
        """Block until `predicate()` holds; it is re-checked on every state change."""
        with self._cond:
            if not self._cond.wait_for(predicate, timeout_s):
                raise TimeoutError(f"condition not met within {timeout_s}s")

    def expire_next_watches(self, count: int = 1) -> None:
        """Answer the next `count` watches that name a resourceVersion with 410."""
        with self._cond:
            self._expire_watches += count

    def drop_watches(self) -> None:
        """Break every open watch stream without ending it properly."""
        with self._cond:
            self._drop_generation += 1
            self._cond.notify_all()

    def _note_request(self, method: str, path: str) -> None:
        with self._cond:
            self.requests.append((method, path))

    # -- the store: every change gets the next resourceVersion

    def _record(self, kind: str, obj: Obj, event: str | None) -> None:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        if event is not None:
            snapshot = copy.deepcopy(obj)
            snapshot.update(kind=kind, apiVersion="v1")
            self._history.append((self._rv, event, snapshot))
            if len(self._history) > self.history_limit:
                dropped = self._history.pop(0)
                self._compacted_rv = dropped[0]
        self._cond.notify_all()

    def _new_metadata(self, namespace: str, metadata: Obj) -> Obj:
        metadata = dict(metadata)
        if not metadata.get("name") and metadata.get("generateName"):
            suffix = "".join(
                secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5)
            )
            metadata["name"] = metadata["generateName"] + suffix
        metadata.update(
            namespace=namespace, uid=str(uuid.uuid4()), creationTimestamp=_now()
        )
        return metadata

    def _check_namespace(self, namespace: str, obj: Obj) -> None:
        if "__invalid__" in obj:
            raise _bad_request("the request body is not a JSON object")
        given = (obj.get("metadata") or {}).get("namespace")
        if given and given != namespace:
            raise _bad_request(
                "the namespace of the provided object does not match the namespace "
                "sent on the request"
            )

    def _create_pod(self, namespace: str, body: Obj) -> Obj:
        self._check_namespace(namespace, body)
        pod = copy.deepcopy(body)
        pod.pop("status", None)
        pod["metadata"] = self._new_metadata(namespace, pod.get("metadata") or {})
        pod.setdefault("spec", {})
        name = pod["metadata"].get("name") or ""
        _check_quantities(pod)
        causes = _pod_causes(pod)
        if len(pod["spec"].get("containers") or []) > 1 or pod["spec"].get(
            "initContainers"
        ):
            causes.append(
                _Cause(
                    "spec.containers",
                    "FieldValueInvalid",
                    "the emulator runs exactly one container per pod",
                )
            )
        if causes:
            raise _invalid_error("Pod", name, causes)
        _default_pod(pod)
        with self._cond:
            key = (namespace, name)
            if key in self._pods:
                raise _already_exists("pods", name)
            self._pods[key] = pod
            self._record("Pod", pod, "ADDED")
            container = _Container(
                key, pod["metadata"]["uid"], self._root / pod["metadata"]["uid"]
            )
            self._containers[container.uid] = container
            created = copy.deepcopy(pod)
        container.thread = threading.Thread(
            target=self._run_kubelet,
            args=(container,),
            name=f"kubelet-{name}",
            daemon=True,
        )
        container.thread.start()
        return created

    def _create_secret(self, namespace: str, body: Obj) -> Obj:
        self._check_namespace(namespace, body)
        secret = copy.deepcopy(body)
        secret["metadata"] = self._new_metadata(namespace, secret.get("metadata") or {})
        name = secret["metadata"].get("name") or ""
        causes = (
            _subdomain_causes("metadata.name", name)
            if name
            else [_required("metadata.name")]
        )
        if causes:
            raise _invalid_error("Secret", name, causes)
        data = dict(secret.get("data") or {})
        for key, value in (secret.pop("stringData", None) or {}).items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        secret.update(data=data, type=secret.get("type") or "Opaque")
        with self._cond:
            if (namespace, name) in self._secrets:
                raise _already_exists("secrets", name)
            self._secrets[(namespace, name)] = secret
            self._record("Secret", secret, None)
            return copy.deepcopy(secret)

    def _select(self, namespace: str | None, query: Mapping[str, str]) -> Predicate:
        tests = []
        if namespace is not None:
            tests.append(lambda pod: pod["metadata"]["namespace"] == namespace)
        if query.get("labelSelector"):
            tests.append(label_selector(query["labelSelector"]))
        if query.get("fieldSelector"):
            tests.append(field_selector(query["fieldSelector"]))
        return lambda pod: all(test(pod) for test in tests)

    # -- the kubelet: one thread per pod, driven by its process

    def _live(self, container: _Container) -> Obj | None:
        """The pod `container` belongs to, unless it has been deleted (lock held)."""
        pod = self._pods.get(container.key)
        if pod is None or pod["metadata"]["uid"] != container.uid or self._is_stopping:
            return None
        return pod

    def _container_of(self, key: Key) -> _Container | None:
        pod = self._pods.get(key)
        return self._containers.get(pod["metadata"]["uid"]) if pod else None

    def _run_kubelet(self, container: _Container) -> None:
        try:
            self._start_container(container)
        finally:
            with self._cond:
                container.is_done = True
                if self._live(container) is not None and container.is_deleting:
                    self._remove_pod(container.key)
                self._cond.notify_all()

    def _start_container(self, container: _Container) -> None:
        with self._cond:
            pod = self._live(container)
            if pod is None:
                return
            self._schedule(pod, container)
            spec = pod["spec"]["containers"][0]
        problem = _image_problem(spec["image"])
        if problem is not None:
            self._wait_forever(container, problem)
            return
        env = self._wait_for_config(container)
        if env is None:
            return
        argv = [
            expand(a, env) for a in (*spec.get("command", ()), *spec.get("args", ()))
        ]
        if self._launch(container, argv, env):
            self._follow(container)

    def _schedule(self, pod: Obj, container: _Container) -> None:
        """Bind the pod to the node and report ContainerCreating (lock held)."""
        now = _now()
        self._next_ip += 1
        container.ip = f"10.244.0.{self._next_ip}"
        pod["spec"]["nodeName"] = NODE_NAME
        pod["status"].update(
            phase="Pending",
            hostIP="127.0.0.1",
            hostIPs=[{"ip": "127.0.0.1"}],
            startTime=now,
            conditions=_conditions(now, ready=False, reason="ContainersNotReady"),
        )
        self._set_state(pod, {"waiting": {"reason": "ContainerCreating"}})
        self._record("Pod", pod, "MODIFIED")

    def _set_state(self, pod: Obj, state: Obj, **extra: Any) -> None:
        spec = pod["spec"]["containers"][0]
        status = {
            "name": spec["name"],
            "image": spec["image"],
            "imageID": "",
            "ready": False,
            "restartCount": 0,
            "started": False,
            "state": state,
        }
        status.update(extra)
        pod["status"]["containerStatuses"] = [status]

    def _wait_forever(
        self, container: _Container, problem: tuple[str, str, str]
    ) -> None:
        """Report an image that cannot be pulled, as a kubelet that keeps trying."""
        first, then, message = problem
        for reason in (first, then):
            with self._cond:
                pod = self._live(container)
                if pod is None:
                    return
                self._set_state(
                    pod, {"waiting": {"reason": reason, "message": message}}
                )
                self._record("Pod", pod, "MODIFIED")
        with self._cond:
            self._cond.wait_for(lambda: self._live(container) is None)

    def _wait_for_config(self, container: _Container) -> dict[str, str] | None:
        """Return the container's env, waiting while a Secret it needs is missing."""
        reported = ""
        with self._cond:
            while (pod := self._live(container)) is not None:
                try:
                    return self._environment(pod, container)
                except _ConfigError as error:
                    if str(error) != reported:
                        reported = str(error)
                        state = {
                            "waiting": {
                                "reason": "CreateContainerConfigError",
                                "message": reported,
                            }
                        }
                        self._set_state(pod, state)
                        self._record("Pod", pod, "MODIFIED")
                    self._cond.wait()  # woken by any change, a new Secret included
        return None

    def _environment(self, pod: Obj, container: _Container) -> dict[str, str]:
        """The env a container gets: service variables, then its own, in order."""
        env = {
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": self.url.rsplit(":", 1)[1],
        }
        for var in pod["spec"]["containers"][0].get("env") or []:
            source = var.get("valueFrom")
            if source is None:
                env[var["name"]] = expand(var.get("value", ""), env)
                continue
            value = self._env_source(pod, container, source)
            if value is not None:
                env[var["name"]] = value
        return env

    def _env_source(self, pod: Obj, container: _Container, source: Obj) -> str | None:
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            namespace = pod["metadata"]["namespace"]
            secret = self._secrets.get((namespace, ref["name"]))
            if secret is None or ref["key"] not in secret["data"]:
                if ref.get("optional"):
                    return None
                if secret is None:
                    raise _ConfigError(f'secret "{ref["name"]}" not found')
                where = f"{namespace}/{ref['name']}"
                raise _ConfigError(f"couldn't find key {ref['key']} in Secret {where}")
            return base64.b64decode(secret["data"][ref["key"]]).decode(
                errors="surrogateescape"
            )
        if "fieldRef" in source:
            path = source["fieldRef"].get("fieldPath", "")
            return container.ip if path == "status.podIP" else _field_value(pod, path)
        raise _ConfigError(f"the emulator cannot read env from {sorted(source)}")

    def _launch(
        self, container: _Container, argv: list[str], env: dict[str, str]
    ) -> bool:
        """Start the process and report Running; report StartError if it cannot run."""
        container.workdir.mkdir(parents=True, exist_ok=True)
        with self._cond:
            pod = self._live(container)
            if pod is None:
                return False
            full_env = {
                "PATH": os.environ.get("PATH", os.defpath),
                "HOME": str(container.workdir),
                "HOSTNAME": pod["metadata"]["name"],
                **env,
            }
            try:
                if not argv:
                    raise FileNotFoundError("no command specified")
                container.process = subprocess.Popen(
                    argv,
                    env=full_env,
                    cwd=container.workdir,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as error:
                self._report_start_error(pod, argv, error)
                return False
            self._report_running(pod, container)
            return True

    def _report_start_error(self, pod: Obj, argv: list[str], error: OSError) -> None:
        now = _now()
        why = (
            "executable file not found in $PATH"
            if isinstance(error, FileNotFoundError)
            else (error.strerror or str(error)).lower()
        )
        program = argv[0] if argv else ""
        message = (
            "failed to create containerd task: failed to create shim task: OCI runtime "
            "create failed: runc create failed: unable to start container process: "
            f'exec: "{program}": {why}: unknown'
        )
        terminated = {
            "exitCode": START_ERROR_EXIT_CODE,
            "reason": "StartError",
            "message": message,
            "startedAt": "1970-01-01T00:00:00Z",
            "finishedAt": now,
            "containerID": _container_id(pod),
        }
        self._finish_status(pod, terminated, now)
        self._record("Pod", pod, "MODIFIED")

    def _report_running(self, pod: Obj, container: _Container) -> None:
        now = _now()
        ip = container.ip
        pod["status"].update(
            phase="Running",
            podIP=ip,
            podIPs=[{"ip": ip}],
            conditions=_conditions(now, ready=True, reason=""),
        )
        self._set_state(
            pod,
            {"running": {"startedAt": now}},
            ready=True,
            started=True,
            containerID=_container_id(pod),
            imageID=f"emulator://{pod['spec']['containers'][0]['image']}",
        )
        self._record("Pod", pod, "MODIFIED")

    def _follow(self, container: _Container) -> None:
        """Collect the output until the process exits, then report its end."""
        process = container.process
        assert process is not None and process.stdout is not None
        reader = threading.Thread(target=self._collect, args=(container,), daemon=True)
        reader.start()
        code = process.wait()
        # NB: a container's other processes die with its main one
        _kill_group(process, signal.SIGKILL)
        reader.join()
        now = _now()
        with self._cond:
            pod = self._pods.get(container.key)
            if pod is None or pod["metadata"]["uid"] != container.uid:
                return
            started = pod["status"]["containerStatuses"][0]["state"]["running"][
                "startedAt"
            ]
            exit_code = code if code >= 0 else 128 - code
            terminated = {
                "exitCode": exit_code,
                "reason": "Completed" if exit_code == 0 else "Error",
                "startedAt": started,
                "finishedAt": now,
                "containerID": _container_id(pod),
            }
            self._finish_status(pod, terminated, now)
            self._record("Pod", pod, "MODIFIED")

    def _collect(self, container: _Container) -> None:
        assert container.process is not None and container.process.stdout is not None
        stream = container.process.stdout
        while chunk := stream.read1(65536):
            with self._cond:
                container.log.extend(chunk)
                self._cond.notify_all()
        stream.close()

    def _finish_status(self, pod: Obj, terminated: Obj, now: str) -> None:
        succeeded = terminated["exitCode"] == 0
        pod["status"].update(
            phase="Succeeded" if succeeded else "Failed",
            conditions=_conditions(
                now, ready=False, reason="PodCompleted" if succeeded else "PodFailed"
            ),
        )
        self._set_state(
            pod, {"terminated": terminated}, containerID=terminated["containerID"]
        )

    # -- deletion

    def _delete_pod(self, namespace: str, name: str, grace_s: int | None) -> Obj:
        with self._cond:
            pod = self._pods.get((namespace, name))
            if pod is None:
                raise _not_found("pods", name)
            container = self._containers.get(pod["metadata"]["uid"])
            process = container.process if container else None
            grace = pod["spec"].get("terminationGracePeriodSeconds", DEFAULT_GRACE_S)
            grace = grace if grace_s is None else grace_s
            if container is None or process is None or container.is_done or grace == 0:
                if process is not None:
                    _kill_group(process, signal.SIGKILL)
                return self._remove_pod((namespace, name))
            if container.is_deleting:
                return copy.deepcopy(pod)
            container.is_deleting = True
            deadline = datetime.fromtimestamp(time.time() + grace, UTC)
            pod["metadata"]["deletionTimestamp"] = deadline.strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            )
            pod["metadata"]["deletionGracePeriodSeconds"] = grace
            self._record("Pod", pod, "MODIFIED")
            answer = copy.deepcopy(pod)
        assert process is not None
        _kill_group(process, signal.SIGTERM)
        threading.Thread(
            target=_kill_after, args=(process, grace), name=f"grace-{name}", daemon=True
        ).start()
        return answer

    def _remove_pod(self, key: Key) -> Obj:
        pod = self._pods.pop(key)
        self._containers.pop(pod["metadata"]["uid"], None)
        self._record("Pod", pod, "DELETED")
        return copy.deepcopy(pod)

    # -- request handlers (called with the handler and the parsed query)

    def _serve_api_versions(self, http: _Handler, **_: Any) -> None:
        address = self.url.removeprefix("http://")
        http.send_json(
            200,
            {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": address}
                ],
            },
        )

    def _serve_api_groups(self, http: _Handler, **_: Any) -> None:
        http.send_json(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": []})

    def _serve_api_resources(self, http: _Handler, **_: Any) -> None:
        verbs = ["create", "delete", "get", "list", "watch"]
        resources = [
            _resource("pods", "Pod", verbs, short=["po"]),
            _resource("pods/log", "Pod", ["get"]),
            _resource("secrets", "Secret", ["create", "delete", "get"]),
        ]
        http.send_json(
            200,
            {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": "v1",
                "resources": resources,
            },
        )

    def _serve_version(self, http: _Handler, **_: Any) -> None:
        http.send_json(
            200,
            {
                "major": "1",
                "minor": "32",
                "gitVersion": "v1.32.0-kube-emulator",
                "platform": "linux/amd64",
            },
        )

    def _serve_pod_create(
        self, http: _Handler, *, namespace: str, body: Obj | None, **_: Any
    ) -> None:
        http.send_json(201, self._create_pod(namespace, body or {}))

    def _serve_pod_get(
        self, http: _Handler, *, namespace: str, name: str, **_: Any
    ) -> None:
        pod = self.pod(namespace, name)
        if pod is None:
            raise _not_found("pods", name)
        http.send_json(200, {"kind": "Pod", "apiVersion": "v1", **pod})

    def _serve_pod_delete(
        self,
        http: _Handler,
        *,
        namespace: str,
        name: str,
        query: Mapping[str, str],
        body: Obj | None,
        **_: Any,
    ) -> None:
        grace = query.get("gracePeriodSeconds")
        if grace is None and body:
            grace = body.get("gracePeriodSeconds")
        pod = self._delete_pod(namespace, name, None if grace is None else int(grace))
        http.send_json(200, {"kind": "Pod", "apiVersion": "v1", **pod})

    def _serve_pod_list(
        self,
        http: _Handler,
        *,
        query: Mapping[str, str],
        namespace: str | None = None,
        **_: Any,
    ) -> None:
        matches = self._select(namespace, query)
        if query.get("watch") in ("true", "1"):
            self._serve_watch(http, matches, query)
            return
        with self._cond:
            items = [
                copy.deepcopy(p) for _, p in sorted(self._pods.items()) if matches(p)
            ]
            version = str(self._rv)
        http.send_json(
            200,
            {
                "kind": "PodList",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": version},
                "items": items,
            },
        )

    def _serve_watch(
        self, http: _Handler, matches: Predicate, query: Mapping[str, str]
    ) -> None:
        timeout_s = float(query.get("timeoutSeconds") or DEFAULT_WATCH_TIMEOUT_S)
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self.watches_served += 1
            first, cursor, expired = self._watch_start(
                matches, query.get("resourceVersion")
            )
            generation = self._drop_generation
            self._cond.notify_all()
        http.start_stream("application/json")
        if expired is not None:
            http.send_chunk(_event_line("ERROR", expired))
            http.end_stream()
            return
        for event, obj in first:
            http.send_chunk(_event_line(event, obj))
        for batch in self._watch_batches(matches, cursor, deadline, generation):
            if batch is None:
                http.break_stream()
                return
            http.send_chunk(b"".join(_event_line(e, o) for e, o in batch))
        http.end_stream()

    def _watch_start(
        self, matches: Predicate, version: str | None
    ) -> tuple[list[tuple[str, Obj]], int, Obj | None]:
        """Return (synthetic events, cursor, 410 Status or None) (lock held)."""
        if version in (None, "", "0"):
            pods = [p for _, p in sorted(self._pods.items()) if matches(p)]
            added = [
                ("ADDED", {"kind": "Pod", "apiVersion": "v1", **copy.deepcopy(p)})
                for p in pods
            ]
            return added, self._rv, None
        try:
            wanted = int(version)
        except ValueError:
            raise _bad_request(f'invalid resource version "{version}"') from None
        if self._expire_watches or wanted < self._compacted_rv:
            self._expire_watches = max(0, self._expire_watches - 1)
            gone = ApiError(
                410,
                "Expired",
                f"too old resource version: {wanted} ({self._rv})",
            )
            return [], wanted, gone.status
        return [], wanted, None

    def _watch_batches(
        self, matches: Predicate, cursor: int, deadline: float, generation: int
    ) -> Iterator[list[tuple[str, Obj]] | None]:
        """Yield the events after `cursor` as they come; None: break the stream."""

        def ready() -> bool:
            return (
                (bool(self._history) and self._history[-1][0] > cursor)
                or self._is_stopping
                or self._drop_generation != generation
            )

        while True:
            with self._cond:
                self._cond.wait_for(ready, max(0.0, deadline - time.monotonic()))
                is_dropped = self._drop_generation != generation
                is_over = self._is_stopping or not ready()
                batch = []
                if not (is_dropped or is_over):
                    rvs = [rv for rv, _, _ in self._history]
                    events = self._history[bisect.bisect_right(rvs, cursor) :]
                    cursor = events[-1][0]
                    batch = [(e, copy.deepcopy(o)) for _, e, o in events if matches(o)]
            if is_dropped:
                yield None
            if is_dropped or is_over:
                return
            if batch:
                yield batch

    def _serve_pod_log(
        self,
        http: _Handler,
        *,
        namespace: str,
        name: str,
        query: Mapping[str, str],
        **_: Any,
    ) -> None:
        with self._cond:
            pod = self._pods.get((namespace, name))
            if pod is None:
                raise _not_found("pods", name)
            spec = pod["spec"]["containers"][0]
            wanted = query.get("container") or spec["name"]
            if wanted != spec["name"]:
                raise _bad_request(f"container {wanted} is not valid for pod {name}")
            _check_started(pod, wanted)
            container = self._containers.get(pod["metadata"]["uid"])
            log = bytes(container.log) if container else b""
        if query.get("follow") in ("true", "1"):
            self._follow_log(
                http, (namespace, name), pod["metadata"]["uid"], len(log), log
            )
            return
        http.send_text(_cut_log(log, query))

    def _follow_log(
        self, http: _Handler, key: Key, uid: str, offset: int, first: bytes
    ) -> None:
        http.start_stream("text/plain")
        http.send_chunk(first)
        with self._cond:
            container = self._containers.get(uid)
        is_over = container is None
        while container is not None and not is_over:
            chunk, is_over = self._log_after(container, offset)
            offset += len(chunk)
            http.send_chunk(chunk)
        http.end_stream()

    def _log_after(self, container: _Container, offset: int) -> tuple[bytes, bool]:
        """Wait for output past `offset`; return it and whether the log is complete."""
        with self._cond:
            self._cond.wait_for(
                lambda: (
                    container.is_done
                    or len(container.log) > offset
                    or self._is_stopping
                )
            )
            return bytes(container.log[offset:]), container.is_done or self._is_stopping

    def _serve_secret_create(
        self, http: _Handler, *, namespace: str, body: Obj | None, **_: Any
    ) -> None:
        http.send_json(
            201,
            {
                "kind": "Secret",
                "apiVersion": "v1",
                **self._create_secret(namespace, body or {}),
            },
        )

    def _serve_secret_get(
        self, http: _Handler, *, namespace: str, name: str, **_: Any
    ) -> None:
        with self._cond:
            secret = copy.deepcopy(self._secrets.get((namespace, name)))
        if secret is None:
            raise _not_found("secrets", name)
        http.send_json(200, {"kind": "Secret", "apiVersion": "v1", **secret})

    def _serve_secret_delete(
        self, http: _Handler, *, namespace: str, name: str, **_: Any
    ) -> None:
        with self._cond:
            secret = self._secrets.pop((namespace, name), None)
            if secret is None:
                raise _not_found("secrets", name)
            self._record("Secret", secret, None)
        http.send_json(200, {"kind": "Secret", "apiVersion": "v1", **secret})


# -- small pure helpers ----------------------------------------------------------------


def _image_problem(image: str) -> tuple[str, str, str] | None:
    """Return (first reason, later reason, message) if the image cannot be pulled."""
    if not _IMAGE.fullmatch(image):
        message = (
            f'Failed to apply default image tag "{image}": couldn\'t parse image name '
            f'"{image}": invalid reference format'
        )
        return "InvalidImageName", "InvalidImageName", message
    if "does-not-exist" in image:
        message = (
            f'Failed to pull image "{image}": rpc error: code = NotFound desc = failed '
            f'to pull and unpack image "{image}": not found'
        )
        return "ErrImagePull", "ImagePullBackOff", message
    return None


def _conditions(now: str, *, ready: bool, reason: str) -> list[Obj]:
    def condition(kind: str, status: bool, why: str = "") -> Obj:
        found = {
            "type": kind,
            "status": str(status),
            "lastProbeTime": None,
            "lastTransitionTime": now,
        }
        if why:
            found["reason"] = why
        return found

    return [
        condition("PodScheduled", True),
        condition("Initialized", True),
        condition("ContainersReady", ready, "" if ready else reason),
        condition("Ready", ready, "" if ready else reason),
    ]


def _container_id(pod: Obj) -> str:
    return f"emulator://{pod['metadata']['uid'].replace('-', '')}"


def _field_value(pod: Obj, path: str) -> str:
    parts = path.split(".")
    if len(parts) == 2 and parts[0] in ("metadata", "spec", "status"):
        value = (pod.get(parts[0]) or {}).get(parts[1])
        return "" if value is None else str(value)
    raise _ConfigError(f"unsupported fieldPath: {path}")


def _check_started(pod: Obj, container: str) -> None:
    """Refuse the log of a container that never started, as the kubelet does."""
    statuses = pod["status"].get("containerStatuses") or []
    waiting = statuses[0]["state"].get("waiting") if statuses else {}
    if waiting is None:
        return
    reason = waiting.get("reason", "ContainerCreating")
    if reason in ("ErrImagePull", "ImagePullBackOff"):
        reason = "trying and failing to pull image"
    name = pod["metadata"]["name"]
    raise _bad_request(
        f'container "{container}" in pod "{name}" is waiting to start: {reason}'
    )


def _cut_log(log: bytes, query: Mapping[str, str]) -> bytes:
    if query.get("tailLines"):
        lines = log.splitlines(keepends=True)
        count = int(query["tailLines"])
        log = b"".join(lines[-count:]) if count else b""
    if query.get("limitBytes"):
        log = log[: int(query["limitBytes"])]
    return log


def _event_line(event: str, obj: Obj) -> bytes:
    return json.dumps({"type": event, "object": obj}).encode() + b"\n"


def _resource(
    name: str, kind: str, verbs: list[str], short: list[str] | None = None
) -> Obj:
    resource: Obj = {
        "name": name,
        "singularName": "" if "/" in name else name.rstrip("s"),
        "namespaced": True,
        "kind": kind,
        "verbs": verbs,
    }
    if short:
        resource["shortNames"] = short
    return resource


def _kill_after(process: subprocess.Popen[bytes], grace_s: float) -> None:
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        _kill_group(process, signal.SIGKILL)
