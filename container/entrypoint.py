#!/usr/bin/env python3
"""PID 1 of the Korean NER image: TorchServe behind HAProxy, stopped without cutting a request.

TorchServe 0.12 cannot stop gracefully on its own: on SIGTERM its frontend closes every client
connection at once, requests in flight included (Netty's event loops close their channels as
soon as they begin to shut down). So the inference port is HAProxy's (Debian's package), which
forwards to TorchServe's inference listener on the container's loopback. This entrypoint starts
both, and on SIGTERM (or SIGINT):

1. marks the container as draining, so the health check (healthcheck.py) fails from then on and
   a load balancer or Kubernetes takes it out of rotation;
2. keeps serving until no inference request has arrived for KOR_NER_DRAIN_QUIET seconds (default
   1; TorchServe's ts_inference_requests_total on the metrics port), KOR_NER_DRAIN_MAX at most
   (default 5; give Kubernetes the time its endpoints take to forget the pod);
3. stops HAProxy softly (SIGUSR1): it stops listening (new connections are refused), answers
   every request it has taken, closes each keep-alive connection after its next answer
   ("Connection: close"), and exits; KOR_NER_FINISH_MAX seconds at most (default 35);
4. then, with nothing in flight, sends SIGTERM to TorchServe's Java frontend, which unregisters
   the models (the workers stop), waits for it (KOR_NER_STOP_TIMEOUT seconds, default 15; then
   SIGKILL) and exits with its status.

If either process dies on its own, the other is stopped and the container exits non-zero. As
PID 1 it also reaps orphaned processes.

HAProxy is the container's only door (front_door_config): every TorchServe listener (inference,
metrics, management, both gRPC ports) is on the container's loopback, and HAProxy takes the
config's inference and metrics addresses. At the inference door it checks the inference key
(``Authorization: Bearer <key>``; a missing or wrong one gets 401 with ``WWW-Authenticate:
Bearer`` and a JSON body; ``GET /ping`` and ``GET /v2/health/{live,ready}`` need none, for
probes), and it bounds what a slow or abusive client can hold: the request's headers and body
must arrive within KOR_NER_REQUEST_TIMEOUT seconds (default 5) and are buffered by HAProxy
before TorchServe sees them; ``maxconn`` follows the file-descriptor limit; with
KOR_NER_MAX_CONN_PER_SOURCE set, one source address holds at most that many connections at once
(default 0: no such limit, as where every client arrives from one address: podman's published
ports, an ingress proxy). The metrics door answers ``GET /metrics`` only. TorchServe's own token
authorization is turned off behind it: its keys are random at every start and expire, and the
front door's key is the one clients hold. The key is read from KOR_NER_KEY_FILE (a mounted
Kubernetes Secret); without it, one is generated at start and written to
$TEMP/kor-ner/inference.key (``podman exec <container> cat /tmp/kor-ner/inference.key``).
The key is never printed, and HAProxy logs nothing.

The Open Inference Protocol's health, readiness and model metadata routes, which TorchServe
0.12 answers with 404, are answered by v2_status.py, a thread of this process on loopback
(KOR_NER_V2_PORT, default 8087), to which HAProxy routes them.

Standard library only (and the modules beside it: kor_ner_runtime.py, v2_status.py, the
handler's ner_v2.py and ner_request.py); settings by environment: KOR_NER_CONFIG
(config.properties: its inference_address and metrics_address are the addresses HAProxy takes),
KOR_NER_MODEL_STORE, KOR_NER_LOG_CONFIG, KOR_NER_KEY_FILE, KOR_NER_REQUEST_TIMEOUT,
KOR_NER_MAX_CONN_PER_SOURCE, KOR_NER_BACKEND_PORT and KOR_NER_METRICS_BACKEND_PORT (TorchServe's
own inference and metrics ports on loopback, default 8085 and 8086), KOR_NER_V2_PORT.
"""

from __future__ import annotations

import json
import os
import re
import resource
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import kor_ner_runtime as runtime
import v2_status
from kor_ner_runtime import draining_marker, properties

CONFIG = runtime.CONFIG
MODEL_STORE = os.environ.get("KOR_NER_MODEL_STORE", "/home/model-server/model-store")
LOG_CONFIG = os.environ.get("KOR_NER_LOG_CONFIG", "/opt/kor-ner/log4j2.xml")
BACKEND_PORT = int(os.environ.get("KOR_NER_BACKEND_PORT", "8085"))
METRICS_BACKEND_PORT = int(os.environ.get("KOR_NER_METRICS_BACKEND_PORT", "8086"))
V2_PORT = int(os.environ.get("KOR_NER_V2_PORT", "8087"))
KEY_FILE = os.environ.get("KOR_NER_KEY_FILE", "")
REQUEST_TIMEOUT = float(os.environ.get("KOR_NER_REQUEST_TIMEOUT", "5"))
MAX_CONN_PER_SOURCE = int(os.environ.get("KOR_NER_MAX_CONN_PER_SOURCE", "0"))
DRAIN_QUIET = float(os.environ.get("KOR_NER_DRAIN_QUIET", "1"))
DRAIN_MAX = float(os.environ.get("KOR_NER_DRAIN_MAX", "5"))
FINISH_MAX = float(os.environ.get("KOR_NER_FINISH_MAX", "35"))
STOP_TIMEOUT = float(os.environ.get("KOR_NER_STOP_TIMEOUT", "15"))


def log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} [entrypoint] {message}", flush=True)


LOOPBACK = "127.0.0.1"
# The listeners TorchServe must keep on loopback (the front door takes inference and metrics).
LOOPBACK_ONLY = ("management_address", "grpc_inference_address", "grpc_management_address")
KEY = re.compile(r"[A-Za-z0-9._~+/=-]{16,512}")  # RFC 6750's token68, and long enough to guess at no rate


def address(props: dict[str, str], key: str, default: str) -> tuple[str, int]:
    value = props.get(key, default)
    match = re.fullmatch(r"http://([^/:]+|\[[^\]]+\]):(\d+)/?", value)
    if match is None:
        raise SystemExit(f"entrypoint: {key} must be http://HOST:PORT, not {value!r}")
    return match[1], int(match[2])


def split_config(text: str) -> tuple[dict[str, str], str]:
    """({"inference": the address HAProxy binds for inference, "metrics": ... for metrics}, the
    config TorchServe runs with): the same config with those two listeners moved to loopback
    (BACKEND_PORT, METRICS_BACKEND_PORT) and TorchServe's own token authorization off (the
    front door checks the key). A management or gRPC listener off loopback is refused."""
    props = properties(text)
    binds = {}
    for name, key, default in (("inference", "inference_address", "http://127.0.0.1:8080"),
                               ("metrics", "metrics_address", "http://127.0.0.1:8082")):
        host, port = address(props, key, default)
        binds[name] = f"{host}:{port}"
    for key in LOOPBACK_ONLY:
        value = props.get(key, LOOPBACK)
        host = re.sub(r"^http://|:\d+/?$", "", value)
        if host not in (LOOPBACK, "localhost"):
            raise SystemExit(f"entrypoint: {key} must stay on loopback (127.0.0.1), not {value!r}: "
                             "only HAProxy may listen beyond the container")
    moved = {"inference_address": f"http://{LOOPBACK}:{BACKEND_PORT}",
             "metrics_address": f"http://{LOOPBACK}:{METRICS_BACKEND_PORT}",
             "disable_token_authorization": "true"}
    lines = [line for line in text.splitlines() if line.split("=", 1)[0].strip() not in moved]
    lines += ["# Set by entrypoint.py: HAProxy takes the two addresses above and checks the key."]
    lines += [f"{key}={value}" for key, value in moved.items()]
    return binds, "\n".join(lines) + "\n"


def inference_key(path: str, generated: Path) -> str:
    """The inference key: KOR_NER_KEY_FILE's content, else a new random key written (0600) to
    ``generated`` for podman exec. Never printed."""
    if path:
        try:
            key = Path(path).read_text(encoding="utf-8").strip()
        except OSError as err:
            raise SystemExit(f"entrypoint: KOR_NER_KEY_FILE {path}: {err.strerror}") from None
        if not KEY.fullmatch(key):
            raise SystemExit(f"entrypoint: the key in KOR_NER_KEY_FILE {path} must be 16 to 512 characters of "
                             "A-Z a-z 0-9 . _ ~ + / = - (a bearer token); it is not printed")
        return key
    key = secrets.token_urlsafe(32)
    generated.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(generated, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(key + "\n")
    return key


def max_connections() -> int:
    """HAProxy's maxconn from the file-descriptor limit, raised to its hard limit first: each
    proxied request holds two descriptors (client and TorchServe), and 200 are kept for
    listeners, checks and logs. At most 20,000 (one full 16 kB buffer each: 320 MB)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    limit = 1 << 20 if soft == resource.RLIM_INFINITY else soft
    return max(64, min(20_000, (limit - 200) // 2))


@dataclass(frozen=True)
class FrontDoor:
    """What front_door_config needs: the addresses HAProxy binds and the limits."""

    inference_bind: str
    metrics_bind: str
    auth_file: str  # one line: "Bearer <key>", the Authorization header a request must carry
    response_timeout: int  # TorchServe's default_response_timeout (s)
    maxconn: int
    request_timeout: float = REQUEST_TIMEOUT
    max_conn_per_source: int = MAX_CONN_PER_SOURCE
    backend_port: int = BACKEND_PORT  # TorchServe's inference listener on loopback
    metrics_backend_port: int = METRICS_BACKEND_PORT
    v2_port: int = V2_PORT  # v2_status.py: the Open Inference Protocol's health, readiness, metadata


def json_error(status: int, message: str) -> str:
    """The front door's own answers, shaped like the handler's errors (``error`` is also what
    Open Inference Protocol clients read)."""
    return json.dumps({"error": message, "status": status})


def front_door_config(door: FrontDoor) -> str:
    """HAProxy's whole config: the container's only door. The inference frontend checks the key
    and forwards to TorchServe's inference listener, except the Open Inference Protocol's
    health, readiness and model metadata routes (GET/HEAD), which TorchServe 0.12 answers with
    404: those go to v2_status.py on loopback. Only /ping and /v2/health/{live,ready} go without
    the key (they say only whether the service is up); a model's readiness and metadata need it
    (they name the models). The metrics frontend forwards GET /metrics.
    New routes (another unauthenticated path, another frontend) are added here. No request is
    logged (no log directive): neither its line, nor a header, nor the key."""
    error = "http-error status {} content-type application/json string '{}'"
    unauthorized = json_error(401, "missing or wrong inference key: send the header Authorization: Bearer <key>")
    lines = [
        "# Written by entrypoint.py at every start: the container's front door.",
        "global",
        f"    maxconn {door.maxconn}  # from the file-descriptor limit (entrypoint.max_connections)",
        f"    hard-stop-after {FINISH_MAX:g}s",
        "defaults",
        "    mode http",
        "    timeout connect 2s",
        "    # A request's headers, and its body (http-buffer-request), must arrive within this; a",
        "    # slow or stalled client is cut here and never holds a TorchServe connection.",
        f"    timeout http-request {door.request_timeout:g}s",
        "    option http-buffer-request",
        f"    timeout client {door.response_timeout + 10}s",
        f"    timeout server {door.response_timeout + 10}s  # TorchServe ends a slow batch itself",
        "    # On a soft stop, an idle keep-alive connection is not cut: its next request is answered",
        "    # with Connection: close, so no client sends into a connection being closed. One idle",
        "    # for 5 s is closed, as Node.js servers do: a stop waits that long for idle clients.",
        "    option idle-close-on-response",
        "    timeout http-keep-alive 5s",
        "    " + error.format(400, json_error(400, "malformed HTTP request")),
        "    " + error.format(408, json_error(408, "the request did not arrive in time")),
        "    " + error.format(502, json_error(502, "TorchServe closed the connection; retry")),
        "    " + error.format(503, json_error(503, "TorchServe is not answering (starting or stopping); retry")),
        "    " + error.format(504, json_error(504, "TorchServe did not answer in time")),
        "frontend inference",
        f"    bind {door.inference_bind}",
    ]
    if door.max_conn_per_source > 0:
        lines += [
            "    # One source address holds at most this many connections at once; more are closed",
            "    # on arrival. Behind a proxy every client shares its address: set 0 there.",
            "    stick-table type ip size 100k expire 60s store conn_cur",
            "    tcp-request connection track-sc0 src",
            f"    tcp-request connection reject if {{ sc0_conn_cur gt {door.max_conn_per_source} }}",
        ]
    lines += [
        f"    acl authorized req.fhdr(authorization) -m str -f {door.auth_file}",
        "    # Declarations of one ACL name are ORed; ACLs side by side in a condition are ANDed.",
        "    acl read method GET HEAD",
        "    acl liveness path /ping",
        "    acl v2_health path /v2/health/live /v2/health/ready",
        "    acl v2_model path_reg ^/v2/models/[^/]+(/versions/[^/]+)?(/ready)?$",
        ("    http-request return status 401 content-type application/json string "
         f"'{unauthorized}' "
         "hdr WWW-Authenticate 'Bearer realm=\"kor-ner\"' unless authorized || read liveness || read v2_health"),
        "    http-request del-header authorization  # the key goes no further",
        "    use_backend v2_status if read v2_health || read v2_model",
        "    default_backend torchserve",
        "frontend metrics",
        f"    bind {door.metrics_bind}",
        "    acl read method GET HEAD",
        "    acl scrape path /metrics",
        ("    http-request return status 404 content-type application/json string "
         f"'{json_error(404, 'only GET /metrics here')}' unless read scrape"),
        "    default_backend torchserve_metrics",
        "backend torchserve",
        f"    server torchserve {LOOPBACK}:{door.backend_port}",
        "backend torchserve_metrics",
        f"    server metrics {LOOPBACK}:{door.metrics_backend_port}",
        "backend v2_status",
        f"    server v2 {LOOPBACK}:{door.v2_port}",
        "",
    ]
    return "\n".join(lines)


def requests_received(url: str) -> float | None:
    """ts_inference_requests_total summed over models and versions (None: no answer)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            text = resp.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    return sum(float(v) for v in re.findall(r"^ts_inference_requests_total\{[^}]*\} (\S+)$", text, re.M))


def drain(url: str) -> None:
    """Return once no inference request arrived for DRAIN_QUIET s, or after DRAIN_MAX s."""
    started = time.monotonic()
    last, quiet_since = requests_received(url), time.monotonic()
    while time.monotonic() - started < DRAIN_MAX:
        time.sleep(0.1)
        now = requests_received(url)
        if now != last:
            last, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since >= DRAIN_QUIET:
            log(f"drained: no new request for {DRAIN_QUIET:g} s ({time.monotonic() - started:.1f} s after the signal)")
            return
    log(f"requests still arriving {DRAIN_MAX:g} s after the signal (KOR_NER_DRAIN_MAX): stopping anyway")


def java_pid(launcher: int) -> int | None:
    """The Java frontend: a direct child of TorchServe's launcher whose command is java."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            cmd = (entry / "cmdline").read_bytes().split(b"\0")[0]
        except (OSError, ValueError, IndexError):
            continue
        if ppid == launcher and cmd.endswith(b"java"):
            return int(entry.name)
    return None


class Server:
    def __init__(self) -> None:
        self.signalled: str | None = None
        self.phase = "serving"  # -> finishing (HAProxy stops softly) -> stopping (TorchServe stops)
        self.deadline = float("inf")
        self.front_status: int | None = None
        for sig in (signal.SIGTERM, signal.SIGINT):  # before anything starts: PID 1 ignores unhandled signals
            signal.signal(sig, self.on_signal)
        draining_marker().unlink(missing_ok=True)
        text = Path(CONFIG).read_text(encoding="utf-8")
        self.props = properties(text)
        binds, backend_config = split_config(text)
        run = Path(os.environ.get("TEMP", "/tmp"))
        private = run / "kor-ner"
        private.mkdir(mode=0o700, exist_ok=True)
        key = inference_key(KEY_FILE, private / "inference.key")
        auth_file = private / "authorization.lst"
        fd = os.open(auth_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(f"Bearer {key}\n")
        (run / "torchserve.properties").write_text(backend_config, encoding="utf-8")
        door = FrontDoor(binds["inference"], binds["metrics"], str(auth_file),
                         int(self.props.get("default_response_timeout", "120")), max_connections())
        (run / "haproxy.cfg").write_text(front_door_config(door), encoding="utf-8")
        self.v2 = v2_status.serve(V2_PORT, runtime.management_url(self.props), draining_marker())
        self.front = subprocess.Popen(["haproxy", "-db", "-f", str(run / "haproxy.cfg")], start_new_session=True)
        cmd = ["torchserve", "--start", "--foreground", "--ncs", "--ts-config", str(run / "torchserve.properties"),
               "--model-store", MODEL_STORE, "--log-config", LOG_CONFIG]
        self.proc = subprocess.Popen(cmd, start_new_session=True)
        log(f"HAProxy on {binds['inference']} (inference, key from "
            f"{KEY_FILE or private / 'inference.key'}) and {binds['metrics']} (metrics), maxconn {door.maxconn}, "
            f"in front of TorchServe on 127.0.0.1:{BACKEND_PORT} and :{METRICS_BACKEND_PORT}; "
            f"Open Inference Protocol health, readiness and metadata on 127.0.0.1:{V2_PORT}")

    def on_signal(self, signum: int, _frame) -> None:
        """Only notes the signal: the main loop drains and stops (no I/O in a signal handler)."""
        if self.signalled is None:
            self.signalled = signal.Signals(signum).name

    def finish(self) -> None:
        """Steps 1-3: fail the health check, drain, let HAProxy answer what it took and exit."""
        draining_marker().touch()
        log(f"{self.signalled}: draining (health check fails from now on)")
        drain(f"http://{LOOPBACK}:{METRICS_BACKEND_PORT}/metrics")
        log("HAProxy stops listening and answers the requests it has taken")
        self.phase, self.deadline = "finishing", time.monotonic() + FINISH_MAX + 5
        if self.front_status is None:
            os.kill(self.front.pid, signal.SIGUSR1)

    def stop_torchserve(self) -> None:
        java = java_pid(self.proc.pid)
        log(f"stopping TorchServe (pid {java or self.proc.pid})")
        self.phase, self.deadline = "stopping", time.monotonic() + STOP_TIMEOUT
        os.kill(java or self.proc.pid, signal.SIGTERM)

    def run(self) -> int:
        while True:
            try:  # reap everything: the two processes, and orphans re-parented to PID 1
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid, status = 0, 0
            if pid == self.proc.pid:
                code = os.waitstatus_to_exitcode(status)
                break
            if pid == self.front.pid:
                self.front_status = os.waitstatus_to_exitcode(status)
                if self.phase == "finishing":
                    log(f"HAProxy done (status {self.front_status}): nothing in flight")
                else:
                    log(f"HAProxy exited on its own (status {self.front_status}): stopping TorchServe")
                if self.phase != "stopping":
                    self.stop_torchserve()
            elif pid == 0:
                if self.signalled and self.phase == "serving":
                    self.finish()
                elif time.monotonic() > self.deadline:
                    if self.phase == "finishing":
                        log(f"HAProxy still running {FINISH_MAX:g} s after its soft stop: SIGKILL")
                        os.kill(self.front.pid, signal.SIGKILL)
                        self.deadline = float("inf")  # its exit moves on to stopping TorchServe
                    else:
                        log(f"TorchServe still running {STOP_TIMEOUT:g} s after stopping it: SIGKILL")
                        os.killpg(self.proc.pid, signal.SIGKILL)
                        self.deadline = float("inf")
                time.sleep(0.2)
        for group in (self.proc.pid, self.front.pid):  # workers left behind by a frontend that died; HAProxy
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log(f"TorchServe exited with status {code}")
        asked = self.signalled is not None and self.front_status is not None
        return 0 if asked and code in (0, 1, -signal.SIGTERM) else code or 1


if __name__ == "__main__":
    sys.exit(Server().run())
