#!/usr/bin/env python3
"""PID 1 of the Korean NER image: run TorchServe in the foreground, stop it gracefully.

TorchServe's launcher (``torchserve --foreground``) installs no signal handler, and a process
without one ignores SIGTERM when it is PID 1: ``podman stop`` would wait, then SIGKILL everything,
requests in flight included. This entrypoint starts the launcher, and on SIGTERM (or SIGINT):

1. marks the container as draining, so the health check (healthcheck.py) fails from then on and
   a load balancer or Kubernetes takes it out of rotation;
2. keeps serving until no inference request has arrived for KOR_NER_DRAIN_QUIET seconds (default
   1; TorchServe's ts_inference_requests_total on the metrics port), KOR_NER_DRAIN_MAX at most
   (default 5; give Kubernetes the time its endpoints take to forget the pod);
3. sends SIGTERM to TorchServe's Java frontend only (not to the worker processes): its shutdown
   hook closes the listening sockets first (new connections are refused), lets the event loops
   finish what they are doing (Netty's graceful shutdown: until 2 s pass without work, 15 s at
   most), then unregisters the models, which stops the workers;
4. waits for the launcher to exit (KOR_NER_STOP_TIMEOUT seconds, default 45; then SIGKILL) and
   exits with its status.

As PID 1 it also reaps orphaned processes. Standard library only; settings by environment:
KOR_NER_CONFIG (config.properties), KOR_NER_MODEL_STORE, KOR_NER_LOG_CONFIG.
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
STOP_TIMEOUT = float(os.environ.get("KOR_NER_STOP_TIMEOUT", "45"))
DRAIN_QUIET = float(os.environ.get("KOR_NER_DRAIN_QUIET", "1"))
DRAIN_MAX = float(os.environ.get("KOR_NER_DRAIN_MAX", "5"))


def draining_marker() -> Path:
    """The file whose presence makes healthcheck.py report unhealthy (shared with it)."""
    return Path(os.environ.get("TEMP", "/tmp")) / "kor-ner.draining"


def log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} [entrypoint] {message}", flush=True)


def metrics_url() -> str:
    for line in Path(CONFIG).read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "metrics_address":
            return value.strip().rstrip("/").replace("://0.0.0.0:", "://127.0.0.1:") + "/metrics"
    return "http://127.0.0.1:8082/metrics"


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
        self.stop_deadline: float | None = None
        self.signalled: str | None = None
        for sig in (signal.SIGTERM, signal.SIGINT):  # before TorchServe starts: PID 1 ignores unhandled signals
            signal.signal(sig, self.on_signal)
        draining_marker().unlink(missing_ok=True)
        cmd = ["torchserve", "--start", "--foreground", "--ncs", "--ts-config", CONFIG,
               "--model-store", MODEL_STORE, "--log-config", LOG_CONFIG]
        self.proc = subprocess.Popen(cmd, start_new_session=True)

    def on_signal(self, signum: int, _frame) -> None:
        """Only notes the signal: the main loop drains and stops (no I/O in a signal handler)."""
        if self.signalled is None:
            self.signalled = signal.Signals(signum).name

    def stop_gracefully(self) -> None:
        self.stop_deadline = time.monotonic() + DRAIN_MAX + STOP_TIMEOUT
        draining_marker().touch()
        log(f"{self.signalled}: draining (health check fails from now on)")
        drain(metrics_url())
        java = java_pid(self.proc.pid)
        log(f"stopping TorchServe (pid {java or self.proc.pid}): listeners close, requests held are answered")
        os.kill(java or self.proc.pid, signal.SIGTERM)

    def run(self) -> int:
        while True:
            try:  # reap everything: TorchServe's own exit, and orphans re-parented to PID 1
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid, status = 0, 0
            if pid == self.proc.pid:
                code = os.waitstatus_to_exitcode(status)
                break
            if pid == 0:
                if self.signalled and self.stop_deadline is None:
                    self.stop_gracefully()
                if self.stop_deadline is not None and time.monotonic() > self.stop_deadline:
                    log(f"TorchServe still running {STOP_TIMEOUT:.0f} s after stopping it: SIGKILL")
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.stop_deadline = float("inf")
                time.sleep(0.2)
        try:  # workers left behind by a frontend that died
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        log(f"TorchServe exited with status {code}")
        return 0 if self.stop_deadline is not None and code in (0, 1, -signal.SIGTERM) else code or 1


if __name__ == "__main__":
    sys.exit(Server().run())
