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
PID 1 it also reaps orphaned processes. Standard library only; settings by environment:
KOR_NER_CONFIG (config.properties: its inference_address is the address HAProxy takes),
KOR_NER_MODEL_STORE, KOR_NER_LOG_CONFIG, KOR_NER_BACKEND_PORT (TorchServe's own inference port on
loopback, default 8085).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

CONFIG = os.environ.get("KOR_NER_CONFIG", "/home/model-server/config/config.properties")
MODEL_STORE = os.environ.get("KOR_NER_MODEL_STORE", "/home/model-server/model-store")
LOG_CONFIG = os.environ.get("KOR_NER_LOG_CONFIG", "/opt/kor-ner/log4j2.xml")
BACKEND_PORT = int(os.environ.get("KOR_NER_BACKEND_PORT", "8085"))
DRAIN_QUIET = float(os.environ.get("KOR_NER_DRAIN_QUIET", "1"))
DRAIN_MAX = float(os.environ.get("KOR_NER_DRAIN_MAX", "5"))
FINISH_MAX = float(os.environ.get("KOR_NER_FINISH_MAX", "35"))
STOP_TIMEOUT = float(os.environ.get("KOR_NER_STOP_TIMEOUT", "15"))


def draining_marker() -> Path:
    """The file whose presence makes healthcheck.py report unhealthy (shared with it)."""
    return Path(os.environ.get("TEMP", "/tmp")) / "kor-ner.draining"


def log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} [entrypoint] {message}", flush=True)


def properties(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line and not line.lstrip().startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def metrics_url(props: dict[str, str]) -> str:
    address = props.get("metrics_address", "http://127.0.0.1:8082")
    return address.rstrip("/").replace("://0.0.0.0:", "://127.0.0.1:") + "/metrics"


def split_inference(text: str) -> tuple[str, str]:
    """(the address HAProxy binds, the config TorchServe runs with): the same config with its
    inference listener moved to loopback BACKEND_PORT."""
    address = properties(text).get("inference_address", "http://127.0.0.1:8080")
    match = re.fullmatch(r"http://([^/:]+|\[[^\]]+\]):(\d+)/?", address)
    if match is None:
        raise SystemExit(f"entrypoint: inference_address must be http://HOST:PORT, not {address!r}")
    backend = f"inference_address=http://127.0.0.1:{BACKEND_PORT}"
    lines = [backend if line.strip().startswith("inference_address") else line for line in text.splitlines()]
    if backend not in lines:
        lines.append(backend)
    return f"{match[1]}:{match[2]}", "\n".join(lines) + "\n"


def haproxy_config(bind: str, response_timeout: int) -> str:
    """HAProxy in front of TorchServe's inference listener: nothing but forwarding, and the soft
    stop that finishes what it has taken. No request is logged."""
    error = "http-error status {} content-type application/json string '{{\"code\": {}, \"message\": \"{}\"}}'"
    return "\n".join([
        "# Written by entrypoint.py at every start: the inference port's front door.",
        "global",
        "    maxconn 1024",
        f"    hard-stop-after {FINISH_MAX:g}s",
        "defaults",
        "    mode http",
        "    timeout connect 2s",
        "    timeout http-request 30s",
        f"    timeout client {response_timeout + 10}s",
        f"    timeout server {response_timeout + 10}s  # TorchServe ends a slow batch itself",
        "    # On a soft stop, an idle keep-alive connection is not cut: its next request is answered",
        "    # with Connection: close, so no client sends into a connection being closed. One idle",
        "    # for 5 s is closed, as Node.js servers do: a stop waits that long for idle clients.",
        "    option idle-close-on-response",
        "    timeout http-keep-alive 5s",
        "    " + error.format(502, 502, "TorchServe closed the connection; retry"),
        "    " + error.format(503, 503, "TorchServe is not answering (starting or stopping); retry"),
        "    " + error.format(504, 504, "TorchServe did not answer in time"),
        "frontend inference",
        f"    bind {bind}",
        "    default_backend torchserve",
        "backend torchserve",
        f"    server torchserve 127.0.0.1:{BACKEND_PORT}",
        "",
    ])


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
        bind, backend_config = split_inference(text)
        run = Path(os.environ.get("TEMP", "/tmp"))
        (run / "torchserve.properties").write_text(backend_config, encoding="utf-8")
        timeout = int(self.props.get("default_response_timeout", "120"))
        (run / "haproxy.cfg").write_text(haproxy_config(bind, timeout), encoding="utf-8")
        self.front = subprocess.Popen(["haproxy", "-db", "-f", str(run / "haproxy.cfg")], start_new_session=True)
        cmd = ["torchserve", "--start", "--foreground", "--ncs", "--ts-config", str(run / "torchserve.properties"),
               "--model-store", MODEL_STORE, "--log-config", LOG_CONFIG]
        self.proc = subprocess.Popen(cmd, start_new_session=True)
        log(f"HAProxy on {bind} in front of TorchServe's inference listener on 127.0.0.1:{BACKEND_PORT}")

    def on_signal(self, signum: int, _frame) -> None:
        """Only notes the signal: the main loop drains and stops (no I/O in a signal handler)."""
        if self.signalled is None:
            self.signalled = signal.Signals(signum).name

    def finish(self) -> None:
        """Steps 1-3: fail the health check, drain, let HAProxy answer what it took and exit."""
        draining_marker().touch()
        log(f"{self.signalled}: draining (health check fails from now on)")
        drain(metrics_url(self.props))
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
