"""The container's front door: HAProxy's config, and what TorchServe is given behind it.

The image runs it beside container/entrypoint.py (/opt/kor-ner, imported as ``front_door``);
from the repository it is imported by the same name (container/ is an import root, as handler/
is: drills/flood.py runs the same door on a host). It imports nothing of the project: the
standard library and ``javaproperties``, the reader of Java's .properties syntax
(requirements-serve.in).

- ``split_config``: config.properties read as Java's ``Properties.load`` reads it (``key=value``,
  ``key:value``, ``key value``, continuations, ``\\uXXXX``, the last definition wins), refused
  with one line when a management or gRPC listener is off loopback, and written back for
  TorchServe with the two listeners HAProxy takes moved to loopback: what the guard read is
  what TorchServe (its Java frontend and its Python launcher alike) runs with.
- ``torchserve_environment``: the environment without ``TS_*`` (TorchServe reads
  ``TS_CONFIG_FILE`` and ``TS_OPEN_INFERENCE_PROTOCOL`` whatever the config says).
- ``read_keys``, ``key_digests``: the inference keys, one a line, kept by HAProxy as SHA-256
  digests only.
- ``max_connections``, ``threads``: HAProxy's limits from the pod's memory, file-descriptor
  limit and CPU quota.
- ``front_door_config``: HAProxy's whole config: the routes and methods that pass (``ROUTES``),
  HTTP/1.1 only, TLS when a certificate is given, the key, the access log, the limits.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import resource
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import javaproperties

LOOPBACK = "127.0.0.1"
# The listeners TorchServe must keep on loopback (the front door takes inference and metrics).
LOOPBACK_ONLY = {
    "management_address": "http://127.0.0.1:8081",
    "grpc_inference_address": "127.0.0.1",
    "grpc_management_address": "127.0.0.1",
}  # TorchServe 0.12's defaults
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")
KEY = re.compile(r"[A-Za-z0-9._~+/=-]{16,512}")  # RFC 6750's token68, and long enough to guess at no rate
NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]*"  # a model name or version in a path: no "." or ".." segment, no %-escape

REQUEST_TIMEOUT = float(os.environ.get("KOR_NER_REQUEST_TIMEOUT", "5"))
MAX_CONN_PER_SOURCE = int(os.environ.get("KOR_NER_MAX_CONN_PER_SOURCE", "0"))
QUEUE_TIMEOUT = float(os.environ.get("KOR_NER_QUEUE_TIMEOUT", "10"))
DOOR_MEMORY_SHARE = float(os.environ.get("KOR_NER_DOOR_MEMORY_SHARE", "0.1"))
HEALTH_PORT = int(os.environ.get("KOR_NER_HEALTH_PORT", "8083"))
SIDE_MAXCONN = 32  # the metrics and the health frontends' own limits: a scraper and the probes
PER_CONNECTION_KB = 40  # HAProxy's worst case for one connection: two 16 kB buffers and its structures
# Mozilla's "intermediate" TLS settings (TLS 1.2 with forward-secret AEAD ciphers, and TLS 1.3).
TLS_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)
TLS_CIPHERSUITES = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"


# --------------------------------------------------------------------------- the config guard


def properties(text: str) -> dict[str, str]:
    """A .properties text as Java's Properties.load reads it (the last definition wins)."""
    return dict(javaproperties.loads(text))


def read_properties(path: str | Path) -> dict[str, str]:
    """A .properties file as TorchServe reads it: ISO-8859-1 bytes (Properties.load(InputStream))."""
    return properties(Path(path).read_bytes().decode("latin-1"))


def _escape(text: str, key: bool) -> str:
    """``text`` written so that Properties.load reads it back unchanged; plain ``key=value``
    otherwise, as TorchServe's Python launcher (a split on the first '=') reads vmargs."""
    out = []
    for i, char in enumerate(text):
        if char == "\\":
            out.append("\\\\")
        elif char in "\t\n\r\f":
            out.append({"\t": "\\t", "\n": "\\n", "\r": "\\r", "\f": "\\f"}[char])
        elif not " " <= char <= "~":
            out.append("".join(f"\\u{unit:04x}" for unit in _utf16(char)))
        elif (key and char in "=: #!") or (char == " " and i == 0):
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)


def _utf16(char: str) -> list[int]:
    data = char.encode("utf-16-be")
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


def write_properties(props: Mapping[str, str], header: str = "") -> str:
    """``props`` as a .properties text that Properties.load reads back as exactly ``props``."""
    lines = [f"# {line}" for line in header.splitlines()]
    lines += [f"{_escape(key, True)}={_escape(value, False)}" for key, value in props.items()]
    return "\n".join(lines) + "\n"


def address(props: Mapping[str, str], key: str, default: str) -> tuple[str, int]:
    """The host and port of an inference or metrics address HAProxy takes."""
    value = props.get(key, default)
    match = re.fullmatch(r"http://([^/:\[\]]+|\[[0-9A-Fa-f:.]+\]):(\d+)/?", value)
    if match is None:
        raise SystemExit(
            f"entrypoint: {key} must be http://HOST:PORT, not {value!r} "
            "(TLS is the front door's: KOR_NER_TLS_CERT and KOR_NER_TLS_KEY)"
        )
    return match[1], int(match[2])


def on_loopback(key: str, value: str) -> bool:
    """Whether TorchServe's listener ``key`` with ``value`` binds loopback only. An allow-list:
    anything TorchServe could read as another interface (0, an empty host, a name, unix:) fails."""
    if key == "management_address":
        match = re.fullmatch(r"(?i)https?://([^/]*?)(:\d+)?/?", value.strip())
        return match is not None and match[1].lower() in LOOPBACK_HOSTS
    return value.strip().lower() in LOOPBACK_HOSTS


def split_config(text: str, backend_port: int, metrics_backend_port: int) -> tuple[dict[str, str], str]:
    """({"inference": the address HAProxy binds for inference, "metrics": ... for metrics}, the
    config TorchServe runs with): the same settings, as Java reads them, with those two
    listeners moved to loopback (``backend_port``, ``metrics_backend_port``), TorchServe's own
    token authorization off (the front door checks the key) and TS_* variables ignored. A
    management or gRPC listener off loopback is refused with one line, whatever the syntax."""
    props = properties(text)
    binds = {}
    for name, key, default in (
        ("inference", "inference_address", "http://127.0.0.1:8080"),
        ("metrics", "metrics_address", "http://127.0.0.1:8082"),
    ):
        host, port = address(props, key, default)
        binds[name] = f"{host}:{port}"
    for key, default in LOOPBACK_ONLY.items():
        value = props.get(key, default)
        if not on_loopback(key, value):
            raise SystemExit(
                f"entrypoint: {key} must stay on loopback (127.0.0.1), not {value!r}: "
                "only HAProxy may listen beyond the container"
            )
    props.update(
        inference_address=f"http://{LOOPBACK}:{backend_port}",
        metrics_address=f"http://{LOOPBACK}:{metrics_backend_port}",
        disable_token_authorization="true",
        enable_envvars_config="false",
    )
    header = (
        "Written by entrypoint.py at every start from KOR_NER_CONFIG, as Java reads it: HAProxy takes\n"
        "inference_address and metrics_address and checks the key."
    )
    return binds, write_properties(props, header)


def torchserve_environment(environ: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """(TorchServe's environment, the names left out): every TS_* variable is left out.
    TorchServe's launcher takes TS_CONFIG_FILE over --ts-config, and its frontend reads
    TS_OPEN_INFERENCE_PROTOCOL even with enable_envvars_config=false."""
    dropped = sorted(name for name in environ if name.upper().startswith("TS_"))
    return {k: v for k, v in environ.items() if k not in dropped}, dropped


# --------------------------------------------------------------------------- keys


def read_keys(path: str) -> list[str]:
    """The inference keys in ``path``: one a line, blank lines skipped; every one accepted (so a
    Secret holding the old and the new key rotates without a 401). Never printed."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise SystemExit(f"entrypoint: KOR_NER_KEY_FILE {path}: {err.strerror}") from None
    keys = [line.strip() for line in lines if line.strip()]
    bad = [i + 1 for i, key in enumerate(keys) if not KEY.fullmatch(key)]
    if not keys or bad:
        where = f" (key {', '.join(map(str, bad))})" if bad else ""
        raise SystemExit(
            f"entrypoint: every key in KOR_NER_KEY_FILE {path}{where} must be 16 to 512 characters "
            "of A-Z a-z 0-9 . _ ~ + / = - (a bearer token), one a line; it is not printed"
        )
    return list(dict.fromkeys(keys))


def generated_key(path: Path) -> str:
    """A new random key, written (0600) to ``path`` for podman exec. Never printed."""
    key = secrets.token_urlsafe(32)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(key + "\n")
    return key


def key_digests(keys: list[str]) -> str:
    """HAProxy's pattern file: the keys' SHA-256 digests, upper-case hex, one a line. HAProxy
    compares the digest of the key a request sends, so how long a comparison takes tells
    nothing about a key, and the keys themselves are not in its files."""
    return "".join(hashlib.sha256(key.encode("ascii")).hexdigest().upper() + "\n" for key in keys)


def write_private(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    return path


# --------------------------------------------------------------------------- limits


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def cgroup_memory() -> int | None:
    """The container's memory limit in bytes (cgroup v2, else v1); None without one."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        value = _read(path)
        if value and value.isdigit() and int(value) < 1 << 60:
            return int(value)
    return None


def cgroup_cpus() -> float | None:
    """The container's CPU quota in CPUs (cgroup v2 cpu.max, else v1 cfs); None without one."""
    value = _read("/sys/fs/cgroup/cpu.max")
    if value:
        quota, _, period = value.partition(" ")
        return int(quota) / int(period or 100_000) if quota.isdigit() else None
    cfs_quota, cfs_period = _read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), _read("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
    if cfs_quota and cfs_period and cfs_quota.isdigit() and cfs_period.isdigit() and int(cfs_quota) > 0:
        return int(cfs_quota) / int(cfs_period)
    return None


def threads(quota: float | None = None) -> int:
    """HAProxy's nbthread: the CPU quota rounded up, at most the CPUs this process may run on."""
    cpus = len(os.sched_getaffinity(0))
    quota = cgroup_cpus() if quota is None else quota
    return max(1, min(cpus, math.ceil(quota))) if quota else cpus


def max_connections(memory: int | None = None, share: float = DOOR_MEMORY_SHARE) -> int:
    """HAProxy's maxconn for the inference frontend, the smaller of:

    - the file-descriptor limit (raised to its hard limit first): each proxied request holds two
      descriptors (client and TorchServe); 200 are kept for listeners, checks, the side doors;
    - the door's share of the container's memory limit (KOR_NER_DOOR_MEMORY_SHARE, 0.1), at
      PER_CONNECTION_KB each (HAProxy's worst case: a full request and answer buffer);
    - 20,000; at least 64."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    limit = 1 << 20 if soft == resource.RLIM_INFINITY else soft
    by_fds = (limit - 200) // 2 - 2 * SIDE_MAXCONN
    memory = cgroup_memory() if memory is None else memory
    by_memory = int(memory * share) // (PER_CONNECTION_KB * 1024) if memory else by_fds
    return max(64, min(20_000, by_fds, by_memory))


# --------------------------------------------------------------------------- HAProxy's config


@dataclass(frozen=True)
class Route:
    """One route the inference door passes: a name (the access log's route), a path pattern
    (HAProxy's path_reg), the methods, whether it needs the key, the backend."""

    name: str
    path: str
    methods: tuple[str, ...]
    key: bool
    backend: str


# Every route the inference door passes; anything else is answered at the door, 404 (no such
# route) or 405 (another method), and never reaches TorchServe. docs/security.md lists them.
ROUTES = (
    Route("ping", "^/ping$", ("GET", "HEAD"), False, "torchserve_ping"),
    Route("v2_health", "^/v2/health/(live|ready)$", ("GET", "HEAD"), False, "v2_status"),
    Route("v2_model", f"^/v2/models/{NAME}(/versions/{NAME})?(/ready)?$", ("GET", "HEAD"), True, "v2_status"),
    Route("v2_infer", f"^/v2/models/{NAME}/infer$", ("POST",), True, "torchserve"),
    Route("predict", f"^/predictions/{NAME}(/{NAME})?$", ("POST",), True, "torchserve"),
)
HEALTH_ROUTES = ("ping", "v2_health")  # the health door's, all without the key


@dataclass(frozen=True)
class FrontDoor:
    """What front_door_config needs: the addresses HAProxy binds, the files, the limits."""

    inference_bind: str
    metrics_bind: str
    keys_file: str  # key_digests' pattern file
    response_timeout: int  # TorchServe's default_response_timeout (s)
    maxconn: int  # the inference frontend's (max_connections)
    health_bind: str = ""  # the probes' own door (HEALTH_PORT): plain HTTP, its own limit; "" for none
    tls_pem: str = ""  # certificate and key in one PEM file: the inference door serves HTTPS only
    nbthread: int = 1
    backend_maxconn: int = 256  # TorchServe's job_queue_size: requests at TorchServe at once
    queue_timeout: float = QUEUE_TIMEOUT  # then 503
    hard_stop_after: float = 35  # entrypoint's KOR_NER_FINISH_MAX
    request_timeout: float = REQUEST_TIMEOUT
    max_conn_per_source: int = MAX_CONN_PER_SOURCE
    backend_port: int = 8085  # TorchServe's inference listener on loopback
    metrics_backend_port: int = 8086
    v2_port: int = 8087  # v2_status.py: the Open Inference Protocol's health, readiness, metadata
    side_maxconn: int = SIDE_MAXCONN


def json_error(status: int, message: str) -> str:
    """The front door's own answers, shaped like the handler's errors (``error`` is also what
    Open Inference Protocol clients read)."""
    return json.dumps({"error": message, "status": status})


ACCESS_LOG = (
    "kor-ner-door %tr client=%ci:%cp frontend=%ft method=%HM route=%[var(txn.route)] status=%ST "
    "bytes_out=%B bytes_in=%U times_ms=%TR/%Tw/%Tc/%Tr/%Ta termination=%tsc conns=%ac/%fc/%bc/%sc "
    "queue=%sq/%bq"
)
REFUSED_LOG = " refused_from_source=%[sc0_get_gpc0]"  # with a per-source limit


def _answer(status: int, message: str, extra: str = "") -> str:
    body = json_error(status, message)
    return f"http-request return status {status} content-type application/json string '{body}'{extra}"


def _routes(routes: tuple[Route, ...], missing: str) -> list[str]:
    """The ACLs and the 404 / 405 answers of a frontend passing ``routes``; ``txn.route`` names
    the route for the access log (the path itself is logged only when it is a route's)."""
    lines = ["    acl origin_form url_beg /  # not an absolute URI or '*'"]
    for route in routes:
        lines.append(f"    acl route_{route.name} path_reg {route.path}")
        lines.append(f"    acl method_{route.name} method {' '.join(route.methods)}")
    known = " || ".join(f"route_{r.name}" for r in routes)
    lines.append(f"    http-request set-var(txn.route) path if origin_form {known.replace(' || ', ' || origin_form ')}")
    lines.append("    " + _answer(404, missing) + f" unless origin_form {known.replace(' || ', ' || origin_form ')}")
    for route in routes:
        allow = ", ".join(route.methods)
        lines.append(
            "    "
            + _answer(405, f"method not allowed here: {allow} only", f" hdr Allow '{allow}'")
            + f" if route_{route.name} !method_{route.name}"
        )
    return lines


def front_door_config(door: FrontDoor) -> str:
    """HAProxy's whole config: the container's only door.

    - inference (the config's inference_address; HTTPS only with ``tls_pem``): the routes of
      ROUTES and their methods, nothing else; the key on every route but /ping and
      /v2/health/*; TorchServe's inference listener behind, or v2_status.py for the Open
      Inference Protocol's status routes, which TorchServe 0.12 answers with 404;
    - metrics (metrics_address): GET/HEAD /metrics;
    - health (``health_bind``): the key-less routes alone, with their own small connection
      limit, so that a flood of the inference door cannot starve the probes.

    HTTP/1.1 only (``proto h1``: no HTTP/2, with or without TLS). One access-log line a request
    on stdout (ACCESS_LOG: never a header value, the query string, a body or the key).
    New routes go in ROUTES."""
    error = "http-error status {} content-type application/json string '{}'"
    unauthorized = json_error(401, "missing or wrong inference key: send the header Authorization: Bearer <key>")
    tls = (
        (
            f" ssl crt {door.tls_pem} alpn http/1.1 ssl-min-ver TLSv1.2 ciphers {TLS_CIPHERS} "
            f"ciphersuites {TLS_CIPHERSUITES}"
        )
        if door.tls_pem
        else ""
    )
    total = door.maxconn + 2 * door.side_maxconn
    lines = [
        "# Written by entrypoint.py at every start: the container's front door (container/front_door.py).",
        "global",
        f"    maxconn {total}  # the inference frontend's, from memory and descriptors, and the two side doors'",
        f"    nbthread {door.nbthread}  # the container's CPU quota",
        f"    hard-stop-after {door.hard_stop_after:g}s",
        "    log stdout format raw local0 info",
        "    ssl-default-bind-options no-tls-tickets",
        "defaults",
        "    mode http",
        "    log global",
        f'    log-format "{ACCESS_LOG}{REFUSED_LOG if door.max_conn_per_source > 0 else ""}"',
        "    timeout connect 2s",
        "    # A request's headers and the start of its body (http-buffer-request: what fits one 16 kB",
        "    # buffer) must arrive within this; a slow or stalled client is cut here (408) and never",
        "    # holds a TorchServe connection. The rest of a larger body streams under timeout client.",
        f"    timeout http-request {door.request_timeout:g}s",
        "    option http-buffer-request",
        f"    timeout client {door.response_timeout + 10}s",
        f"    timeout server {door.response_timeout + 10}s  # TorchServe ends a slow batch itself",
        f"    timeout queue {door.queue_timeout:g}s  # waiting for one of TorchServe's connections; then 503",
        "    # On a soft stop, an idle keep-alive connection is not cut: its next request is answered",
        "    # with Connection: close, so no client sends into a connection being closed. One idle",
        "    # for 5 s is closed, as Node.js servers do: a stop waits that long for idle clients.",
        "    option idle-close-on-response",
        "    timeout http-keep-alive 5s",
        "    " + error.format(400, json_error(400, "malformed HTTP/1.1 request")),
        "    " + error.format(408, json_error(408, "the request did not arrive in time")),
        "    " + error.format(502, json_error(502, "TorchServe closed the connection; retry")),
        "    "
        + error.format(503, json_error(503, "TorchServe is busy or not answering (starting or stopping); retry"))
        + " hdr Retry-After 1",
        "    " + error.format(504, json_error(504, "TorchServe did not answer in time")),
        "frontend inference",
        f"    bind {door.inference_bind} proto h1{tls}",
        f"    maxconn {door.maxconn}",
        "    option forwardfor  # TorchServe's access log sees 127.0.0.1: the client is in X-Forwarded-For",
    ]
    if door.max_conn_per_source > 0:
        lines += [
            "    # One source address holds at most this many connections at once; more are closed",
            "    # on arrival, and counted: the source's next access-log lines say how many (HAProxy logs",
            "    # no line for a connection it refuses). Behind a proxy every client shares its address: set 0.",
            "    stick-table type ip size 100k expire 60s store conn_cur,gpc0",
            "    tcp-request connection track-sc0 src",
            f"    tcp-request connection sc-inc-gpc0(0) if {{ sc0_conn_cur gt {door.max_conn_per_source} }}",
            f"    tcp-request connection reject if {{ sc0_conn_cur gt {door.max_conn_per_source} }}",
        ]
    keyless = " || ".join(f"route_{r.name}" for r in ROUTES if not r.key)
    lines += _routes(ROUTES, "no such route here: see the documented routes")
    lines += [
        "    # The key: one Authorization header, the Bearer scheme in any case, a token68 whose",
        "    # SHA-256 digest is in the keys file.",
        "    acl bearer_form req.fhdr(authorization) -m reg -i ^bearer\\ +[A-Za-z0-9._~+/=-]+$",
        "    acl one_header req.hdr_cnt(authorization) eq 1",
        (
            "    http-request set-var(txn.key) req.fhdr(authorization),regsub(^[^\\ ]+\\ +,),digest(sha256),hex"
            " if one_header bearer_form"
        ),
        f"    acl key_known var(txn.key) -m str -f {door.keys_file}",
        (
            f"    http-request return status 401 content-type application/json string '{unauthorized}' "
            f"hdr WWW-Authenticate 'Bearer realm=\"kor-ner\"' unless {keyless} || one_header bearer_form key_known"
        ),
        "    http-request del-header authorization  # the key goes no further",
        "    http-request unset-var(txn.key)",
    ]
    for backend in dict.fromkeys(r.backend for r in ROUTES):
        names = " || ".join(f"route_{r.name}" for r in ROUTES if r.backend == backend)
        lines.append(f"    use_backend {backend} if {names}")
    lines += [
        "frontend metrics",
        f"    bind {door.metrics_bind} proto h1",
        f"    maxconn {door.side_maxconn}",
        *_routes(
            (Route("metrics", "^/metrics$", ("GET", "HEAD"), False, "torchserve_metrics"),), "only GET /metrics here"
        ),
        "    default_backend torchserve_metrics",
    ]
    if door.health_bind:
        health = tuple(r for r in ROUTES if r.name in HEALTH_ROUTES)
        lines += [
            "frontend health  # the probes' door: the key-less routes alone, never starved by the inference door",
            f"    bind {door.health_bind} proto h1",
            f"    maxconn {door.side_maxconn}",
            *_routes(health, "only the health routes here: /ping, /v2/health/live, /v2/health/ready"),
            *(f"    use_backend {r.backend} if route_{r.name}" for r in health),
        ]
    lines += [
        "backend torchserve",
        (
            f"    server torchserve {LOOPBACK}:{door.backend_port} "
            f"maxconn {door.backend_maxconn} maxqueue {door.backend_maxconn}"
        ),
        "backend torchserve_ping  # liveness has its own connections to TorchServe: never queued behind inference",
        f"    server ping {LOOPBACK}:{door.backend_port} maxconn {door.side_maxconn}",
        "backend torchserve_metrics",
        f"    server metrics {LOOPBACK}:{door.metrics_backend_port} maxconn {door.side_maxconn}",
        "backend v2_status",
        f"    server v2 {LOOPBACK}:{door.v2_port} maxconn {door.side_maxconn}",
        "",
    ]
    return "\n".join(lines)
