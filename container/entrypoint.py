#!/usr/bin/env python3
"""PID 1 of the Korean NER image: TorchServe behind HAProxy, stopped without cutting a request.

TorchServe 0.12 cannot stop gracefully on its own: on SIGTERM its frontend closes every client
connection at once, requests in flight included (Netty's event loops close their channels as
soon as they begin to shut down). So the inference port is HAProxy's (Debian's package), which
forwards to TorchServe's inference listener on the container's loopback. This entrypoint starts
both, and on SIGTERM (or SIGINT):

1. marks the container as draining, so the health check (healthcheck.py) and the readiness
   route (GET /v2/health/ready: 503) fail from then on and a load balancer or Kubernetes takes
   it out of rotation;
2. keeps taking and answering new connections for at least KOR_NER_DRAIN_MIN seconds (default
   10: kube-proxy and ingress controllers on other nodes go on sending new connections for
   several seconds after a pod is marked terminating), then until no inference request has
   arrived for KOR_NER_DRAIN_QUIET seconds (default 1; TorchServe's ts_inference_requests_total
   on the metrics port), KOR_NER_DRAIN_MAX seconds after the signal at most (default 20, never
   less than the minimum);
3. stops HAProxy softly (SIGUSR1): it stops listening (new connections are refused), answers
   every request it has taken, closes each keep-alive connection after its next answer
   ("Connection: close"), and exits; KOR_NER_FINISH_MAX seconds at most (default 35);
4. then, with nothing in flight, sends SIGTERM to TorchServe's Java frontend, which unregisters
   the models (the workers stop), waits for it (KOR_NER_STOP_TIMEOUT seconds, default 15; then
   SIGKILL) and exits with its status.

If either process dies on its own, the other is stopped and the container exits non-zero; when
HAProxy (the door) dies, the container is marked draining at once, so the health check fails
while TorchServe stops. As PID 1 it also reaps orphaned processes.

HAProxy is the container's only door (front_door.py writes its config and what TorchServe is
given): every TorchServe listener (inference, metrics, management, both gRPC ports) is on the
container's loopback, and HAProxy takes the config's inference and metrics addresses, plus a
health door (KOR_NER_HEALTH_PORT, default 8083) for probes. The inference door passes only the
documented routes and methods (front_door.ROUTES; anything else gets a JSON 404 or 405), speaks
HTTP/1.1 only, serves HTTPS when KOR_NER_TLS_CERT and KOR_NER_TLS_KEY name a certificate and its
key, and checks the inference key (``Authorization: Bearer <key>``, the scheme in any case; a
missing or wrong one gets 401 with ``WWW-Authenticate: Bearer`` and a JSON body; ``/ping`` and
``/v2/health/{live,ready}`` need none, for probes). KOR_NER_KEY_FILE (a mounted Kubernetes
Secret) holds one key a line, every one accepted; without it, one is generated at start and
written to $TEMP/kor-ner/inference.key (``podman exec <container> cat /tmp/kor-ner/inference.key``).
HAProxy is given the keys' SHA-256 digests only; no key is ever printed. It bounds what a slow or
abusive client can hold (KOR_NER_REQUEST_TIMEOUT, maxconn from the memory limit and the
file-descriptor limit, KOR_NER_MAX_CONN_PER_SOURCE, a queue to TorchServe of job_queue_size
with KOR_NER_QUEUE_TIMEOUT), and logs one line a request on stdout (never a header value, a
query string, a body or the key). TorchServe's own token authorization is turned off behind it
(its keys are random at every start and expire), it runs the config as Java reads it (a
management or gRPC listener off loopback stops the start), and no TS_* variable reaches it.

The Open Inference Protocol's health, readiness and model metadata routes, which TorchServe
0.12 answers with 404, are answered by v2_status.py, a thread of this process on loopback
(KOR_NER_V2_PORT, default 8087), to which HAProxy routes them.

Standard library and javaproperties only (and the modules beside it: front_door.py,
kor_ner_runtime.py, v2_status.py, the handler's ner_v2.py and ner_request.py); settings by environment:
KOR_NER_CONFIG
(config.properties: its inference_address and metrics_address are the addresses HAProxy takes),
KOR_NER_MODEL_STORE, KOR_NER_LOG_CONFIG, KOR_NER_KEY_FILE, KOR_NER_TLS_CERT, KOR_NER_TLS_KEY,
the door's limits (front_door.py), KOR_NER_BACKEND_PORT and KOR_NER_METRICS_BACKEND_PORT (TorchServe's
own inference and metrics ports on loopback, default 8085 and 8086), KOR_NER_V2_PORT.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import front_door
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
TLS_CERT = os.environ.get("KOR_NER_TLS_CERT", "")  # with KOR_NER_TLS_KEY: the inference door serves HTTPS only
TLS_KEY = os.environ.get("KOR_NER_TLS_KEY", "")
DRAIN_MIN = float(os.environ.get("KOR_NER_DRAIN_MIN", "10"))
DRAIN_QUIET = float(os.environ.get("KOR_NER_DRAIN_QUIET", "1"))
DRAIN_MAX = float(os.environ.get("KOR_NER_DRAIN_MAX", "20"))
FINISH_MAX = float(os.environ.get("KOR_NER_FINISH_MAX", "35"))
STOP_TIMEOUT = float(os.environ.get("KOR_NER_STOP_TIMEOUT", "15"))


def log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} [entrypoint] {message}", flush=True)


LOOPBACK = front_door.LOOPBACK


def tls_bundle(cert: str, key: str) -> str:
    """The certificate chain and its private key (a kubernetes.io/tls Secret's tls.crt and
    tls.key) in one PEM text, as HAProxy's crt takes them; one without the other stops the start."""
    if not (cert and key):
        raise SystemExit("entrypoint: TLS needs both KOR_NER_TLS_CERT and KOR_NER_TLS_KEY (PEM files)")
    parts = []
    for name, path, marker in (("KOR_NER_TLS_CERT", cert, "CERTIFICATE"), ("KOR_NER_TLS_KEY", key, "PRIVATE KEY")):
        try:
            text = Path(path).read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as err:
            why = getattr(err, "strerror", None) or "not a PEM file"
            raise SystemExit(f"entrypoint: {name} {path}: {why}") from None
        if f"-----BEGIN {marker}" not in text and not (marker == "PRIVATE KEY" and "PRIVATE KEY-----" in text):
            raise SystemExit(f"entrypoint: {name} {path} holds no PEM {marker.lower()}")
        parts.append(text.strip() + "\n")
    return "".join(parts)


def requests_received(url: str) -> float | None:
    """ts_inference_requests_total summed over models and versions (None: no answer)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            text = resp.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    return sum(float(v) for v in re.findall(r"^ts_inference_requests_total\{[^}]*\} (\S+)$", text, re.M))


def running(pid: int) -> bool:
    """The process exists and has not exited (a zombie, exited but not yet reaped, has)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def drain(
    received: Callable[[], float | None],
    minimum: float = DRAIN_MIN,
    quiet: float = DRAIN_QUIET,
    longest: float = DRAIN_MAX,
    alive: Callable[[], bool] = lambda: True,
) -> float:
    """Return once ``minimum`` s have passed and no inference request arrived (``received``: the
    count so far) for ``quiet`` s, or after ``longest`` s (never before ``minimum``); at once
    when ``alive()`` says a process it serves with has exited. Returns the seconds it took."""
    started = time.monotonic()
    longest = max(longest, minimum)
    last, quiet_since = received(), time.monotonic()
    while (elapsed := time.monotonic() - started) < longest:
        time.sleep(0.1)
        if not alive():
            log(f"HAProxy or TorchServe exited during the drain ({elapsed:.1f} s after the signal)")
            return time.monotonic() - started
        now = received()
        if now != last:
            last, quiet_since = now, time.monotonic()
        elif elapsed >= minimum and time.monotonic() - quiet_since >= quiet:
            log(
                f"drained: no new request for {quiet:g} s ({time.monotonic() - started:.1f} s after the signal, "
                f"{minimum:g} s at least)"
            )
            return time.monotonic() - started
    log(f"requests still arriving {longest:g} s after the signal (KOR_NER_DRAIN_MAX): stopping anyway")
    return time.monotonic() - started


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
        text = Path(CONFIG).read_bytes().decode("latin-1")  # as Java's Properties.load reads it
        self.props = properties(text)
        binds, backend_config = front_door.split_config(text, BACKEND_PORT, METRICS_BACKEND_PORT)
        run = Path(os.environ.get("TEMP", "/tmp"))
        private = run / "kor-ner"
        private.mkdir(mode=0o700, exist_ok=True)
        keys = front_door.read_keys(KEY_FILE) if KEY_FILE else [front_door.generated_key(private / "inference.key")]
        keys_file = front_door.write_private(private / "keys.sha256", front_door.key_digests(keys))
        tls_pem = ""
        if TLS_CERT or TLS_KEY:
            tls_pem = str(front_door.write_private(private / "tls.pem", tls_bundle(TLS_CERT, TLS_KEY)))
        (run / "torchserve.properties").write_text(backend_config, encoding="latin-1")
        host = binds["inference"].rsplit(":", 1)[0]
        door = front_door.FrontDoor(
            binds["inference"],
            binds["metrics"],
            str(keys_file),
            int(self.props.get("default_response_timeout", "120")),
            front_door.max_connections(),
            health_bind=f"{host}:{front_door.HEALTH_PORT}",
            tls_pem=tls_pem,
            nbthread=front_door.threads(),
            backend_maxconn=int(self.props.get("job_queue_size", "100")),
            hard_stop_after=FINISH_MAX,
            backend_port=BACKEND_PORT,
            metrics_backend_port=METRICS_BACKEND_PORT,
            v2_port=V2_PORT,
        )
        (run / "haproxy.cfg").write_text(front_door.front_door_config(door), encoding="utf-8")
        self.v2 = v2_status.serve(V2_PORT, runtime.management_url(self.props), draining_marker())
        self.front = subprocess.Popen(["haproxy", "-db", "-f", str(run / "haproxy.cfg")], start_new_session=True)
        env, dropped = front_door.torchserve_environment(os.environ)
        if dropped:
            log(
                f"left out of TorchServe's environment (KOR_NER_CONFIG is its whole configuration): "
                f"{', '.join(dropped)}"
            )
        cmd = [
            "torchserve",
            "--start",
            "--foreground",
            "--ncs",
            "--ts-config",
            str(run / "torchserve.properties"),
            "--model-store",
            MODEL_STORE,
            "--log-config",
            LOG_CONFIG,
        ]
        self.proc = subprocess.Popen(cmd, start_new_session=True, env=env)
        log(
            f"HAProxy on {binds['inference']} (inference, {'HTTPS' if tls_pem else 'HTTP'}, {len(keys)} key(s) from "
            f"{KEY_FILE or private / 'inference.key'}), {binds['metrics']} (metrics) and {door.health_bind} "
            f"(health), maxconn {door.maxconn}, {door.nbthread} thread(s), in front of TorchServe on "
            f"127.0.0.1:{BACKEND_PORT} and :{METRICS_BACKEND_PORT}; "
            f"Open Inference Protocol health, readiness and metadata on 127.0.0.1:{V2_PORT}"
        )

    def on_signal(self, signum: int, _frame) -> None:
        """Only notes the signal: the main loop drains and stops (no I/O in a signal handler)."""
        if self.signalled is None:
            self.signalled = signal.Signals(signum).name

    def finish(self) -> None:
        """Steps 1-3: fail the health check, drain, let HAProxy answer what it took and exit."""
        draining_marker().touch()
        log(
            f"{self.signalled}: draining (health check and readiness fail from now on); new connections are "
            f"taken and answered for {DRAIN_MIN:g} s at least (KOR_NER_DRAIN_MIN), while load balancers drop the pod"
        )
        metrics = f"http://{LOOPBACK}:{METRICS_BACKEND_PORT}/metrics"
        drain(lambda: requests_received(metrics), alive=lambda: running(self.front.pid) and running(self.proc.pid))
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
                else:  # the door is gone: not ready at once (the health check), then exit
                    draining_marker().touch()
                    log(f"HAProxy exited on its own (status {self.front_status}): not ready; stopping TorchServe")
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
