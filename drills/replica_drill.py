"""Two TorchServe replicas behind HAProxy under load: a rolling update, then a replica killed.

    python scripts/replica_drill.py                       # about 2 minutes on 2 cores
    python scripts/replica_drill.py --clients 32 --settle 10 --report var/drill.json

What it does, on loopback addresses only (127.0.0.0/8):

1. packages --model-dir twice, as version 1.0 (kor_ner.mar) and 2.0 (kor_ner-2.0.mar);
2. starts two TorchServe replicas with tsctl (their own run dirs and port blocks, token
   authorization off: they listen on loopback only, and the load balancer checks the key) and
   HAProxy in front of them (Debian's haproxy; the config it writes is printed), whose health
   check asks each replica's management API for a READY worker, not /ping;
3. starts --clients load clients through HAProxy, half of them plain (one keep-alive session,
   a timeout, no resend) and half the project's retrying client (serving.predict's
   predict_with_retry). Each sends unique sentences as KServe v2 requests, whose answers name
   the model version that produced them; an answer must echo its own sentence;
4. rolling update, replica by replica: out of rotation (HAProxy runtime API: state maint),
   drained (no session left on it), stopped (SIGTERM), started again with version 2.0, waited
   for until a worker is READY, back in rotation once HAProxy's health check passes;
5. kill -9 of one replica's whole process group (frontend and workers) under the same load.

Printed at the end (and written to --report): per phase and per client kind, requests answered,
failed (with why) and resent, answers per model version. Bounded: every wait has a deadline
(--deadline for the whole drill) and the clients stop at --max-requests. The exit code is 1
when the rolling update failed a request, an answer had no known version or another text, or
the retrying client lost a request.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

from drills.load import Sessions, send_all
from serving import package_model, paths, tsctl
from serving.package_model import PackageSpec
from serving.predict import predict_with_retry

MODEL = paths.MODEL_NAME
VERSIONS = ("1.0", "2.0")
ARCHIVES = {"1.0": f"{MODEL}.mar", "2.0": f"{MODEL}-2.0.mar"}
REPLICAS = ("r1", "r2")


def log(started: float, message: str) -> None:
    print(f"[{time.monotonic() - started:6.1f} s] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- HAProxy


HAPROXY_CONFIG = """\
# Written by scripts/replica_drill.py: HAProxy in front of two TorchServe replicas.
global
    stats socket {socket} mode 600 level admin
    maxconn 1024

defaults
    mode http
    timeout connect 2s
    timeout client 130s
    timeout server 130s  # above TorchServe's response timeout (120 s): a slow batch is TorchServe's to end
    timeout queue 30s
    # A replica that refuses the connection (killed, restarting) costs the client nothing: the
    # request goes to the other one. A request already sent to a replica is never resent by
    # HAProxy (not idempotent as far as it knows): clients resend (scripts/predict.py).
    retries 3
    option redispatch 1

frontend ner
    bind {bind}:{port}
    # The replicas run without TorchServe's token: the key is checked here.
    http-request deny deny_status 401 unless {{ req.hdr(authorization) -m str -f {keys} }}
    default_backend replicas

backend replicas
    balance leastconn
    # Ready = a READY worker (the management API; /ping says Healthy before any worker is up).
    option httpchk
    http-check send meth GET uri /models/{model}
    http-check expect string READY
    default-server inter 1s fall 2 rise 1
{servers}
"""


@dataclass
class Haproxy:
    workdir: Path
    port: int
    proc: subprocess.Popen | None = None

    @property
    def socket_path(self) -> Path:
        return self.workdir / "haproxy.sock"

    def write_config(self, replicas: dict[str, tsctl.Server], key: str) -> Path:
        keys = self.workdir / "lb-keys.txt"
        keys.write_text(f"Bearer {key}\n", encoding="utf-8")
        keys.chmod(0o600)
        servers = "\n".join(
            (
                f"    server {name} {_hostport(server.inference_url)} check port "
                f"{_hostport(server.management_url).rsplit(':', 1)[1]}"
            )
            for name, server in replicas.items()
        )
        config = self.workdir / "haproxy.cfg"
        config.write_text(
            HAPROXY_CONFIG.format(
                socket=self.socket_path, bind="127.0.0.1", port=self.port, keys=keys, model=MODEL, servers=servers
            ),
            encoding="utf-8",
        )
        return config

    def start(self, config: Path) -> None:
        self.socket_path.unlink(missing_ok=True)
        check = subprocess.run(["haproxy", "-c", "-f", str(config)], check=False, capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy refuses {config}: {check.stdout}{check.stderr}")
        with open(self.workdir / "haproxy.log", "ab") as out:
            self.proc = subprocess.Popen(
                ["haproxy", "-db", "-f", str(config)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        _until(self.socket_path.exists, 10, "HAProxy did not open its runtime socket")

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.socket_path))
            s.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def servers(self) -> dict[str, dict[str, str]]:
        """`show stat` of the backend's servers: name -> {status, scur, qcur, ...}."""
        lines = self.command("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]
        return {
            r["svname"]: r for r in rows if r["pxname"] == "replicas" and r["svname"] not in ("BACKEND", "FRONTEND")
        }

    def set_state(self, server: str, state: str) -> None:
        answer = self.command(f"set server replicas/{server} state {state}").strip()
        if answer:
            raise RuntimeError(f"haproxy: set server {server} state {state}: {answer}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def _hostport(url: str) -> str:
    return url.split("://", 1)[1].rstrip("/")


def _until(condition, timeout: float, message: str, poll: float = 0.2) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"{message} (after {timeout:.0f} s)")
        time.sleep(poll)
    return time.monotonic() - started


# --------------------------------------------------------------------------- load


@dataclass
class PhaseTally:
    answered: int = 0
    failed: Counter = field(default_factory=Counter)  # why -> count (never the text)
    resent: Counter = field(default_factory=Counter)
    versions: Counter = field(default_factory=Counter)
    unversioned: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "answered": self.answered,
            "failed": sum(self.failed.values()),
            "failed_why": dict(self.failed),
            "resent": sum(self.resent.values()),
            "resent_why": dict(self.resent),
            "versions": dict(self.versions),
            "unversioned": self.unversioned,
        }


class Load:
    """--clients threads through the load balancer (drills.load.send_all), half of the requests
    sent once, half through the project's retrying client; tallies go to the current phase."""

    def __init__(self, lb: tsctl.Server, clients: int, max_requests: int, timeout: float) -> None:
        self.lb, self.timeout, self.max_requests, self.clients = lb, timeout, max_requests, clients
        self.lock, self.stop_event, self.sent = threading.Lock(), threading.Event(), 0
        self.phase = "warm-up"
        self.tallies: dict[str, dict[str, PhaseTally]] = {}
        self.last_versions: list[str] = []
        self.sessions = Sessions()
        self.thread = threading.Thread(
            target=send_all,
            args=(self._send, range(max_requests), clients),
            kwargs={"stop": self.stop_event},
            daemon=True,
        )

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(self.timeout * 6 + 10)  # a retrying request may wait through its resends
        self.sessions.close()

    def tally(self, kind: str) -> PhaseTally:
        return self.tallies.setdefault(self.phase, {}).setdefault(kind, PhaseTally())

    def answered(self) -> int:
        with self.lock:
            return sum(t.answered for kinds in self.tallies.values() for t in kinds.values())

    def _send(self, n: int) -> str:
        with self.lock:
            self.sent += 1
        kind = "plain" if n % 2 else "retrying"
        text = f"훈련 {n}: 이순신은 한산도에서 왜군을 무찔렀다."
        body: dict[str, Any] = {
            "id": str(n),
            "inputs": [{"name": "texts", "shape": [1], "datatype": "BYTES", "data": [text]}],
        }
        resends: list[str] = []
        try:
            if kind == "plain":
                resp = self.sessions.get().post(
                    self.lb.inference_url + tsctl.predictions_path(MODEL),
                    json=body,
                    headers=self.lb.headers("inference"),
                    timeout=(5, self.timeout),
                )
            else:
                resp = predict_with_retry(
                    self.lb, MODEL, body, retries=4, timeout=self.timeout, backoff=0.2, on_retry=resends.append
                )
            why = None if resp.status_code == 200 else f"HTTP {resp.status_code}"
        except requests.RequestException as err:
            inner = err.args[0] if err.args else None  # e.g. ProtocolError(RemoteDisconnected): no request text
            inner = getattr(inner, "args", [None])[-1] if type(inner).__name__ == "ProtocolError" else inner
            resp, why = None, type(err).__name__ + (f" ({type(inner).__name__})" if inner is not None else "")
        with self.lock:
            tally = self.tally(kind)
            tally.resent.update(resends)
            if why is None and resp is not None:
                answer = resp.json()
                version = answer.get("model_version")
                sentence = json.loads(answer["outputs"][0]["data"][0])["sentence"]
                if sentence != text:
                    why = "answered with another text"
                    tally.failed[why] += 1
                elif version not in VERSIONS:
                    why = "unversioned"
                    tally.unversioned += 1
                else:
                    tally.answered += 1
                    tally.versions[version] += 1
                    self.last_versions = (self.last_versions + [version])[-50:]
            else:
                tally.failed[why] += 1
        return why or "ok"


# --------------------------------------------------------------------------- replicas


@dataclass
class Replica:
    name: str
    run_dir: Path
    ports: dict[str, str]
    server: tsctl.Server | None = None

    def start(self, store: Path, archive: str, timeout: float) -> float:
        started = time.monotonic()
        self.server = tsctl.start(
            self.run_dir,
            store,
            overrides={**self.ports, "disable_token_authorization": "true"},
            timeout=timeout,
            reregister=False,
        )
        tsctl.register(self.server, archive, timeout=timeout)
        return time.monotonic() - started

    def stop(self) -> None:
        tsctl.stop(self.run_dir)

    @property
    def live(self) -> tsctl.Server:
        """The replica's TorchServe, once started."""
        if self.server is None:
            raise RuntimeError(f"replica {self.name} has not been started")
        return self.server

    def kill9(self) -> None:
        pid = tsctl.pid_of(self.run_dir)
        if pid is None:
            raise RuntimeError(f"replica {self.name} runs no TorchServe to kill")
        os.killpg(pid, signal.SIGKILL)


def package(model_dir: Path, store: Path, workdir: Path, workers: int) -> None:
    config = yaml.safe_load(paths.MODEL_CONFIG.read_text(encoding="utf-8"))
    config.update(minWorkers=workers, maxWorkers=workers)
    config_path = workdir / "model-config.yaml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    for version, archive in ARCHIVES.items():
        package_model.package(
            PackageSpec(
                model_dir,
                name=MODEL,
                version=version,
                archive_name=archive[:-4],
                model_config=config_path,
                export_path=store,
                force=True,
            )
        )


# --------------------------------------------------------------------------- the drill


@dataclass(frozen=True)
class DrillSpec:
    """What one drill runs: the model, where, how much load, how long (scripts/replica_drill.py's
    flags, with the same defaults)."""

    model_dir: Path = paths.DEMO_MODEL_DIR  # checkpoint or save_pretrained directory
    workdir: Path = paths.RUN_DIR / "replica-drill"  # archives, run dirs, HAProxy config; emptied first
    clients: int = 16  # concurrent clients, half plain, half retrying
    workers: int = 1  # per replica
    settle: float = 5  # seconds of load between steps
    first_port: int = 18300  # replicas on FIRST.., FIRST+10.. (tsctl --ports), HAProxy on FIRST+20; 0: free ports
    max_requests: int = 200_000  # the clients stop after this many
    request_timeout: float = 30  # read timeout of each request, seconds
    deadline: float = 600  # give up after this many seconds in all


def drill(args: DrillSpec) -> dict[str, Any]:
    """The drill (the module's docstring): its report, which ``failures`` judges."""
    t0 = time.monotonic()
    deadline = t0 + args.deadline
    left = lambda: max(1.0, deadline - time.monotonic())  # noqa: E731
    workdir = args.workdir.resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    store = workdir / "model_store"
    store.mkdir(parents=True)
    log(t0, f"packaging {args.model_dir} as {MODEL} 1.0 and 2.0 into {store}")
    package(args.model_dir, store, workdir, args.workers)

    if args.first_port:
        replicas = {
            name: Replica(name, workdir / name, tsctl.port_block(args.first_port + 10 * i))
            for i, name in enumerate(REPLICAS)
        }
        haproxy = Haproxy(workdir, args.first_port + 10 * len(REPLICAS))
    else:  # free ports (tests), all picked at once so that no two are the same
        ports, n = tsctl.free_ports(tsctl.LISTENERS * len(REPLICAS) + 1), tsctl.LISTENERS
        replicas = {
            name: Replica(name, workdir / name, tsctl.listener_overrides(ports[n * i : n * (i + 1)]))
            for i, name in enumerate(REPLICAS)
        }
        haproxy = Haproxy(workdir, ports[-1])
    key = secrets.token_urlsafe(24)
    lb_dir = workdir / "lb"
    lb_dir.mkdir()
    (lb_dir / "key_file.json").write_text(json.dumps({"inference": {"key": key}}), encoding="utf-8")
    lb = tsctl.Server(lb_dir, f"http://127.0.0.1:{haproxy.port}", "", "")
    result: dict[str, Any] = {"clients": args.clients, "workers_per_replica": args.workers}
    load = None
    try:
        for replica in replicas.values():
            seconds = replica.start(store, ARCHIVES["1.0"], left())
            log(
                t0,
                (
                    f"replica {replica.name} serves {MODEL} 1.0 at {replica.live.inference_url} "
                    f"(ready in {seconds:.1f} s)"
                ),
            )
        config = haproxy.write_config({r.name: r.live for r in replicas.values()}, key)
        haproxy.start(config)
        _until(
            lambda: all(s["status"] == "UP" for s in haproxy.servers().values()), left(), "replicas not UP in HAProxy"
        )
        log(t0, f"HAProxy on {lb.inference_url} ({config}); both replicas UP")
        refused = requests.post(lb.inference_url + tsctl.predictions_path(MODEL), data="키 없이".encode(), timeout=10)
        result["lb_status_without_key"] = refused.status_code
        result["haproxy_config"] = str(config)

        load = Load(lb, args.clients, args.max_requests, args.request_timeout)
        load.start()
        _until(lambda: load.answered() >= args.clients * 4, left(), "no answers through HAProxy")
        log(t0, f"load: {args.clients} clients, every other request plain (sent once), the others retrying")
        settle(load, args.settle, deadline)

        # ---- rolling update
        load.phase = "rolling update"
        update_started = time.monotonic()
        for replica in replicas.values():
            haproxy.set_state(replica.name, "maint")
            drained = _until(
                lambda replica=replica: _sessions(haproxy, replica.name) == 0, left(), f"{replica.name} did not drain"
            )
            log(t0, f"{replica.name}: out of rotation, drained in {drained:.1f} s")
            replica.stop()
            seconds = replica.start(store, ARCHIVES["2.0"], left())
            log(t0, f"{replica.name}: restarted with {MODEL} 2.0, a worker READY in {seconds:.1f} s")
            haproxy.set_state(replica.name, "ready")
            up = _until(
                lambda replica=replica: haproxy.servers()[replica.name]["status"] == "UP",
                left(),
                f"{replica.name} not UP",
            )
            log(t0, f"{replica.name}: back in rotation (health check passed in {up:.1f} s)")
            settle(load, args.settle, deadline)
        result["rolling_update_s"] = round(time.monotonic() - update_started, 1)
        load.phase = "after the update"
        settle(load, args.settle, deadline)
        with load.lock:
            result["last_versions_after_update"] = dict(Counter(load.last_versions))

        # ---- kill -9
        load.phase = "kill -9"
        victim = replicas[REPLICAS[0]]
        victim.kill9()
        killed = time.monotonic()
        log(t0, f"{victim.name}: kill -9 of its process group (frontend and workers)")
        down = _until(
            lambda: haproxy.servers()[victim.name]["status"].startswith("DOWN"),
            left(),
            f"HAProxy did not mark {victim.name} DOWN",
        )
        log(t0, f"{victim.name}: marked DOWN by HAProxy {down:.1f} s after the kill")
        result["kill_marked_down_s"] = round(time.monotonic() - killed, 1)
        settle(load, args.settle, deadline)
    finally:
        if load:
            load.stop()
        haproxy.stop()
        for replica in replicas.values():
            replica.stop()
    result["phases"] = {
        phase: {kind: t.as_dict() for kind, t in kinds.items()} for phase, kinds in load.tallies.items()
    }
    result["elapsed_s"] = round(time.monotonic() - t0, 1)
    return result


def _sessions(haproxy: Haproxy, server: str) -> int:
    row = haproxy.servers()[server]
    return int(row["scur"] or 0) + int(row["qcur"] or 0)


def settle(load: Load, seconds: float, deadline: float) -> None:
    """Let the load run: ``seconds``, or until the deadline or --max-requests, whichever first."""
    end = min(time.monotonic() + seconds, deadline)
    while time.monotonic() < end and load.sent < load.max_requests:
        time.sleep(0.1)


def failures(result: dict[str, Any]) -> list[str]:
    """What went wrong, one line each (empty: the drill held)."""
    problems = []
    for phase, kinds in result["phases"].items():
        for kind, t in kinds.items():
            if t["unversioned"] or "answered with another text" in t["failed_why"]:
                problems.append(f"{phase}, {kind}: answers without a known version or for another text")
            if phase != "kill -9" and t["failed"]:
                problems.append(f"{phase}, {kind}: {t['failed']} failed {t['failed_why']}")
    killed = result["phases"].get("kill -9", {}).get("retrying")
    if killed and killed["failed"]:
        problems.append(f"kill -9: the retrying client lost {killed['failed']} {killed['failed_why']}")
    if result.get("lb_status_without_key") != 401:
        problems.append(f"HAProxy answered {result.get('lb_status_without_key')} to a request without the key")
    if set(result.get("last_versions_after_update", {})) != {"2.0"}:
        problems.append(f"after the update not every answer came from 2.0: {result.get('last_versions_after_update')}")
    return problems
