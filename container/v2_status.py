"""The Open Inference Protocol's health, readiness and model metadata routes, which TorchServe
0.12 answers with 404: a small HTTP server on the container's loopback that the front door
(HAProxy, front_door.front_door_config) sends them to. The answers (``v2_route_answer``, a pure
function) describe the handler's own input and output tensors (ner_wire's names), from the
models the management API lists (their versions, and
whether the default version has a READY worker) and the draining marker; the management API
is asked at most once a second (``TTL``), however many probes arrive. A GET answers the JSON,
a HEAD the same status without a body. Nothing is logged. Standard library plus ner_v2 and
ner_request (also standard library only), copied beside it in the image.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import kor_ner_runtime as runtime
from ner_v2 import V2_INPUT, V2_OUTPUT

TTL = 1.0  # seconds a listing of the models is reused


def v2_model_metadata(name: str, versions: Sequence[str]) -> dict[str, Any]:
    """The Open Inference Protocol's model metadata (``GET /v2/models/<name>``) of a model this
    handler serves: one BYTES input of UTF-8 texts, one BYTES output of JSON answers, both of
    the request's length (-1: any, up to ``max_texts_per_request``)."""
    return {
        "name": name,
        "versions": list(versions),
        "platform": "torchserve",
        "inputs": [{"name": V2_INPUT, "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": V2_OUTPUT, "datatype": "BYTES", "shape": [-1]}],
    }


@dataclass(frozen=True)
class ModelState:
    """A registered model as the management API describes it: its versions, and whether it
    has a READY worker (of its default version)."""

    versions: Sequence[str]
    ready: bool


def v2_route_answer(
    method: str, path: str, models: Mapping[str, ModelState], draining: bool = False
) -> tuple[int, dict[str, Any]] | None:
    """The answer (status, JSON body) to the Open Inference Protocol's health, readiness and
    model metadata routes, which TorchServe 0.12 does not serve, from the registered
    ``models``; None for any other request (TorchServe's to answer). Ready means a READY worker
    (every model's, for the server) and not ``draining``: 200 ``{"ready": true}``, else 503
    ``{"ready": false}`` (clients read any other status than 200 as not ready)."""
    parts = [unquote(part) for part in path.split("?", 1)[0].strip("/").split("/")]
    if method != "GET" or parts[:1] != ["v2"]:
        return None
    if parts[1:] == ["health", "live"]:
        return 200, {"live": True}
    if parts[1:] == ["health", "ready"]:
        ready = not draining and bool(models) and all(state.ready for state in models.values())
        return (200, {"ready": True}) if ready else (503, {"ready": False})
    if len(parts) < 3 or parts[1] != "models":
        return None
    name, rest = parts[2], parts[3:]
    version = None
    if rest[:1] == ["versions"] and len(rest) >= 2:
        version, rest = rest[1], rest[2:]
    if rest not in ([], ["ready"]):
        return None
    state = models.get(name)
    if state is None or (version is not None and version not in state.versions):
        named = f"model {name!r}" + (f" version {version!r}" if version is not None else "")
        return 404, {"error": f"{named} is not registered"}
    if rest == ["ready"]:
        return (200, {"ready": True}) if state.ready and not draining else (503, {"ready": False})
    return 200, v2_model_metadata(name, state.versions)


def model_states(management: str) -> dict[str, ModelState]:
    """Every registered model: its versions (``GET /models/<name>/all``) and whether its default
    version has a READY worker (``GET /models/<name>``), as the health check asks."""
    states = {}
    for entry in runtime.get_json(f"{management}/models?limit=1000")["models"]:
        name = entry["modelName"]
        every_version = runtime.get_json(f"{runtime.model_path(management, name)}/all")
        versions = tuple(str(d["modelVersion"]) for d in every_version)
        states[name] = ModelState(versions, runtime.ready_workers(management, name)[0] > 0)
    return states


class Models:
    """``model_states`` cached for TTL seconds; None while the management API does not answer."""

    def __init__(
        self, management: str, ttl: float = TTL, fetch: Callable[[str], Mapping[str, ModelState]] = model_states
    ) -> None:
        self.management, self.ttl, self.fetch = management, ttl, fetch
        self.lock = threading.Lock()
        self.at = -float("inf")
        self.value: Mapping[str, ModelState] | None = None

    def get(self) -> Mapping[str, ModelState] | None:
        with self.lock:  # one caller asks; the others wait for its answer
            if time.monotonic() - self.at >= self.ttl:
                try:
                    self.value = self.fetch(self.management)
                except (OSError, ValueError, KeyError, IndexError, TypeError):
                    self.value = None
                self.at = time.monotonic()
            return self.value


def answer(path: str, models: Models, draining: Callable[[], bool]) -> tuple[int, dict]:
    """The route's (status, JSON body). Routes this server does not know are a 404 (the front
    door sends it only its own); while the model list is unknown (TorchServe starting), a
    model's route is a 503 rather than a 404 that would say the model does not exist."""
    listing = models.get() if not path.startswith("/v2/health/live") else {}
    result = v2_route_answer("GET", path, listing or {}, draining())
    if result is None:
        return 404, {"error": "not an Open Inference Protocol health, readiness or metadata route"}
    status, body = result
    if listing is None and status == 404:
        return 503, {"error": "the model server is not answering yet; retry"}
    return status, body


class StatusServer(ThreadingHTTPServer):
    """The HTTP server with what its handler reads: the cached model list and the draining test."""

    models: Models
    draining: Callable[[], bool]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive with HAProxy
    server_version = "kor-ner"
    sys_version = ""

    def do_GET(self) -> None:
        self._reply(with_body=True)

    def do_HEAD(self) -> None:
        self._reply(with_body=False)

    def _reply(self, with_body: bool) -> None:
        assert isinstance(self.server, StatusServer)
        status, body = answer(self.path, self.server.models, self.server.draining)
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if with_body:
            self.wfile.write(data)

    def log_message(self, format: str, *args) -> None:
        pass  # nothing logged: neither request lines nor headers


def serve(port: int, management: str, marker: Path, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """Start the server on ``host:port`` in a daemon thread; ``server.shutdown()`` then
    ``server.server_close()`` stop it."""
    server = StatusServer((host, port), _Handler)
    server.daemon_threads = True
    server.models = Models(management)
    server.draining = marker.exists
    threading.Thread(target=server.serve_forever, name="v2-status", daemon=True).start()
    return server
