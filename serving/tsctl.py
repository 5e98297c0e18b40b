"""Operate the local TorchServe: start, stop, register, scale, describe, unregister.

Each action is one small function that the CLI (scripts/tsctl.py) and the integration tests
both call. TorchServe runs with ``var/`` (or ``--run-dir``) as its working directory: the generated
config.properties, key_file.json, logs/ and a pid file live there. Keys are read from
key_file.json on every call, so nobody copies tokens by hand; an expired key is regenerated
through TorchServe's token API. registered.json there records what is registered (archive,
workers, batch settings), so ``start`` brings the models back after a restart.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests
import yaml

from kor_ner_runtime import ready_count, workers_of
from ner_labels import entity_type
from ner_settings import HandlerSettings
from serving import paths
from serving.retry import retry

BASE_CONFIG = paths.CONFIG_DIR / "config.properties"
LOG_CONFIG = paths.CONFIG_DIR / "log4j2.xml"
ADDRESS_KEYS = ("inference_address", "management_address", "metrics_address")
GRPC_PORT_KEYS = ("grpc_inference_port", "grpc_management_port")
PATH_KEYS = ("metrics_config",)  # file paths in config.properties, relative to the repo root
TIMEOUT = (5, 120)  # (connect, read) seconds for every HTTP call
STATE_FILE = "registered.json"  # in the run dir; TorchServe's own snapshots are off (--ncs)
KEY_APIS = ("inference", "management")  # keys that expire (token_expiration_min); "API" never does
_KEY_LOCK = threading.Lock()  # one thread renews an expired key, the others then use the new one
_CHILDREN: dict[int, subprocess.Popen] = {}  # servers this process started, reaped by stop()


class TsError(RuntimeError):
    """A management call failed; the message has TorchServe's status and answer."""


# --------------------------------------------------------------------------- config and keys


def read_properties(path: Path) -> dict[str, str]:
    props = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            props[key.strip()] = value.strip()
    return props


def repo_paths(props: dict[str, str]) -> dict[str, str]:
    """The file paths of ``props`` made absolute: TorchServe runs from the run dir, not the repo."""
    return {key: str((paths.ROOT / props[key]).resolve()) for key in PATH_KEYS if key in props}


EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def free_ports(n: int) -> list[int]:
    """``n`` different loopback ports free now, drawn from below the kernel's ephemeral range.

    Outside that range no outgoing connection takes one as its source port, so a server
    restarted on the same ports (a rolling update under load) finds them still free; a port
    the OS hands out (bind to 0) is an ephemeral one, and a client socket may hold it by then.
    """
    try:
        low = int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768  # Linux's default
    candidates = list(range(10000, low)) if low - 10000 >= 1000 else []
    random.SystemRandom().shuffle(candidates)
    ports: list[int] = []
    for port in candidates:
        if len(ports) == n:
            break
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                ports.append(port)
            except OSError:
                continue
    while len(ports) < n:  # no room below the ephemeral range: let the OS choose
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            if s.getsockname()[1] not in ports:
                ports.append(s.getsockname()[1])
    return ports


LISTENERS = len(ADDRESS_KEYS) + len(GRPC_PORT_KEYS)  # ports one TorchServe listens on


def listener_overrides(ports: Sequence[int]) -> dict[str, str]:
    """The config keys that put the five listeners on these loopback ports, in the order
    inference, management, metrics, gRPC inference, gRPC management."""
    if len(ports) != LISTENERS:
        raise ValueError(f"{LISTENERS} ports needed, got {len(ports)}")
    addresses = {
        key: f"http://127.0.0.1:{port}" for key, port in zip(ADDRESS_KEYS, ports[: len(ADDRESS_KEYS)], strict=True)
    }
    return {
        **addresses,
        **{key: str(port) for key, port in zip(GRPC_PORT_KEYS, ports[len(ADDRESS_KEYS) :], strict=True)},
    }


def port_overrides() -> dict[str, str]:
    """Free loopback ports for every listener, for a TorchServe beside the developer's own
    (tests, benchmark, drills)."""
    return listener_overrides(free_ports(LISTENERS))


def port_block(first: int) -> dict[str, str]:
    """Five consecutive loopback ports from ``first``: inference, management, metrics, gRPC
    inference, gRPC management (the shipped config's 8080-8082 and 7070-7071 are one instance)."""
    if not 1024 <= first <= 65536 - LISTENERS:
        raise TsError(f"--ports {first}: the first of five ports must be between 1024 and {65536 - LISTENERS}")
    return listener_overrides(range(first, first + LISTENERS))


def ports_in_use(overrides: dict[str, str] | None = None) -> list[str]:
    """The listeners of the config (with ``overrides``) whose loopback port is taken, e.g.
    ['inference_address 8080']: TorchServe would fail on them, with a less clear message."""
    props = {**read_properties(BASE_CONFIG), **(overrides or {})}
    wanted = [(key, int(props[key].rsplit(":", 1)[1])) for key in ADDRESS_KEYS if key in props]
    wanted += [(key, int(props[key])) for key in GRPC_PORT_KEYS if key in props]
    taken = []
    for key, port in wanted:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                taken.append(f"{key} {port}")
    return taken


def write_config(run_dir: Path, overrides: dict[str, str] | None = None, base: Path = BASE_CONFIG) -> Path:
    """Copy the base config.properties into ``run_dir``, replacing the keys in ``overrides``."""
    overrides = dict(overrides or {})
    lines = []
    for line in base.read_text(encoding="utf-8").splitlines():
        key = line.split("=", 1)[0].strip()
        if "=" in line and not line.lstrip().startswith("#") and key in overrides:
            lines.append(f"{key}={overrides.pop(key)}")
        else:
            lines.append(line)
    lines += [f"{k}={v}" for k, v in overrides.items()]
    target = run_dir / "config.properties"
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target


@dataclass(frozen=True)
class Server:
    """Where a running TorchServe listens, and where its keys are."""

    run_dir: Path
    inference_url: str
    management_url: str
    metrics_url: str

    @classmethod
    def load(cls, run_dir: Path = paths.RUN_DIR) -> Server:
        props = read_properties(run_dir / "config.properties")
        return cls(run_dir, *(props[k].rstrip("/") for k in ADDRESS_KEYS))

    def keys(self) -> dict[str, str]:
        path = self.run_dir / "key_file.json"
        if not path.is_file():  # token authorization disabled on purpose
            return {}
        data = json.loads(path.read_text(encoding="utf-8"))
        return {name: entry["key"] for name, entry in data.items()}

    def headers(self, api: str) -> dict[str, str]:
        key = self.keys().get(api)
        return {"Authorization": f"Bearer {key}"} if key else {}

    def call(self, method: str, api: str, path: str, **kwargs: Any) -> requests.Response:
        """One authorized HTTP call; ``api`` is 'management', 'inference' or 'metrics'.

        A refused key (TorchServe answers 400 InvalidKeyException) is resent once when the key
        file has a newer key by then, or after renewing the key if it had expired.
        """
        base = {"management": self.management_url, "inference": self.inference_url, "metrics": self.metrics_url}[api]
        key_api = "inference" if api == "metrics" else api
        extra, timeout = kwargs.pop("headers", {}), kwargs.pop("timeout", TIMEOUT)
        used = self.headers(key_api)
        resp = requests.request(method, base + path, headers={**used, **extra}, timeout=timeout, **kwargs)
        if (
            resp.status_code == 400
            and "InvalidKeyException" in resp.text
            and "Authorization" not in extra
            and self._renewed(key_api, used)
        ):
            resp = requests.request(
                method, base + path, headers={**self.headers(key_api), **extra}, timeout=timeout, **kwargs
            )
        return resp

    def key_expired(self, api: str) -> bool:
        path = self.run_dir / "key_file.json"
        entry = json.loads(path.read_text(encoding="utf-8")).get(api, {}) if path.is_file() else {}
        expires = entry.get("expiration time")  # e.g. 2026-11-26T16:18:01.155080076Z (UTC)
        return expires is not None and datetime.strptime(expires[:19], "%Y-%m-%dT%H:%M:%S").replace(
            tzinfo=timezone.utc
        ) <= datetime.now(timezone.utc)

    def _renewed(self, api: str, used: dict[str, str]) -> bool:
        """True when a retry may succeed: the key changed since ``used`` was read, or it had
        expired and has just been regenerated."""
        with _KEY_LOCK:
            if self.headers(api) != used:  # rotated meanwhile, by another thread or process
                return True
            if api in KEY_APIS and self.key_expired(api):
                rotate_keys(self, (api,))
                return True
            return False


def _check(resp: requests.Response, what: str) -> Any:
    if resp.status_code >= 400:
        raise TsError(f"{what}: HTTP {resp.status_code}: {resp.text.strip()[:500]}")
    try:
        return resp.json()
    except ValueError:
        return resp.text


# --------------------------------------------------------------------------- process


def pid_of(run_dir: Path) -> int | None:
    """The process group of the TorchServe started from ``run_dir``, while any of it runs."""
    try:
        pid = int((run_dir / "torchserve.pid").read_text())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def start(
    run_dir: Path = paths.RUN_DIR,
    model_store: Path = paths.MODEL_STORE,
    overrides: dict[str, str] | None = None,
    timeout: float = 120,
    reregister: bool = True,
    register_also: Sequence[str] = (),
) -> Server:
    """Start TorchServe in its own process group, wait until its inference API answers /ping
    and its management API answers, (unless ``reregister`` is False) register again what the
    run dir's registered.json lists, then register the archives of ``register_also`` that this
    did not bring back already (a second quick start finds its model registered again)."""
    if shutil.which("java") is None:
        raise TsError("java not found: TorchServe needs Java 17 (Debian: apt-get install openjdk-17-jre-headless)")
    run_dir = run_dir.resolve()
    if pid_of(run_dir):
        raise TsError(f"TorchServe already runs from {run_dir} (pid {pid_of(run_dir)}); stop it first")
    for sub in ("logs", "tmp"):
        (run_dir / sub).mkdir(parents=True, exist_ok=True)
    model_store.mkdir(parents=True, exist_ok=True)  # a fresh clone has none until a model is packaged
    # model_store is TorchServe's own key too: recorded there, the run dir tells where the archives are
    config = write_config(
        run_dir,
        {**repo_paths(read_properties(BASE_CONFIG)), "model_store": str(model_store.resolve()), **(overrides or {})},
    )
    (run_dir / "key_file.json").unlink(missing_ok=True)  # TorchServe writes fresh keys at start
    # TorchServe's own pid file: a stale one whose pid was reused makes it refuse to start.
    (run_dir / "tmp" / ".model_server.pid").unlink(missing_ok=True)
    # TEMP/TMPDIR hold TorchServe's pid file and worker sockets: one per instance.
    env = {
        **os.environ,
        "TEMP": str(run_dir / "tmp"),
        "TMPDIR": str(run_dir / "tmp"),
        "LOG_LOCATION": str(run_dir / "logs"),
        "METRICS_LOCATION": str(run_dir / "logs"),
    }
    cmd = [
        str(Path(sys.executable).with_name("torchserve")),
        "--start",
        "--foreground",
        "--ncs",
        "--ts-config",
        str(config),
        "--model-store",
        str(model_store.resolve()),
        "--log-config",
        str(LOG_CONFIG),
    ]
    with open(run_dir / "logs" / "torchserve.out", "ab") as out:
        proc = subprocess.Popen(cmd, cwd=run_dir, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    (run_dir / "torchserve.pid").write_text(str(proc.pid))
    _CHILDREN[proc.pid] = proc
    server = Server.load(run_dir)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise TsError(f"TorchServe exited with code {proc.returncode}; see {run_dir / 'logs'}")
        try:
            keys_ready = (
                run_dir / "key_file.json"
            ).exists() or "disable_token_authorization=true" in config.read_text()
            if keys_ready and _listening(server):
                break
        except (
            requests.ConnectionError,
            requests.Timeout,
            ValueError,
        ):  # not listening yet, busy, key file half-written
            pass
        time.sleep(0.25)
    else:
        stop(run_dir)
        raise TsError(f"TorchServe did not answer /ping within {timeout:.0f} s; see {run_dir / 'logs'}")
    if reregister:
        restore(server)
    back = {model["modelUrl"] for model in list_models(server)} if register_also else set()
    for mar in register_also:
        if mar not in back:
            register(server, mar, timeout=timeout)
    return server


def _listening(server: Server) -> bool:
    """Inference and management both answer. The frontend binds its listeners one after the
    other, so /ping can answer before the management API does."""
    return (
        server.call("GET", "inference", "/ping", timeout=2).status_code == 200
        and server.call("GET", "management", "/models", timeout=2).status_code == 200
    )


@contextmanager
def running(
    run_dir: Path,
    model_store: Path,
    overrides: dict[str, str] | None = None,
    timeout: float = 120,
    own_ports: bool = True,
) -> Iterator[Server]:
    """A TorchServe from ``run_dir`` for the ``with`` block (on free loopback ports unless
    ``own_ports`` is False; ``overrides``: more config keys), stopped (TERM, then KILL)
    whatever happens: for a TorchServe beside the developer's own (tests, benchmark)."""
    ports = port_overrides() if own_ports else {}
    server = start(run_dir, model_store, overrides={**ports, **(overrides or {})}, timeout=timeout)
    try:
        yield server
    finally:
        stop(run_dir)


def stop(run_dir: Path = paths.RUN_DIR, timeout: float = 30) -> bool:
    """Stop the TorchServe started from ``run_dir`` (TERM, then KILL); False if none ran."""
    pid = pid_of(run_dir)
    if pid is None:
        return False
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.2)
        if not _alive(pid):
            break
    (run_dir / "torchserve.pid").unlink(missing_ok=True)
    if pid in _CHILDREN:
        _CHILDREN.pop(pid).wait(timeout)
    return True


def _alive(pid: int) -> bool:
    """Any process of the group still runs. The group outlives its leader: the ``torchserve``
    launcher dies on TERM at once, while its Java frontend is still shutting down."""
    if pid in _CHILDREN:
        _CHILDREN[pid].poll()  # reap the launcher: a zombie leader would count as alive
    try:
        os.killpg(pid, 0)
        return True
    except ProcessLookupError:
        return False


# --------------------------------------------------------------------------- management API


def model_path(model: str, version: str | None = None) -> str:
    """The management API's path for a model (and one of its versions, or ``all``): the one
    place it is built."""
    return f"/models/{quote(model, safe='')}" + (f"/{quote(version, safe='')}" if version else "")


def describe(server: Server, model: str, version: str | None = None) -> list[dict]:
    return _check(server.call("GET", "management", model_path(model, version)), f"describe {model}")


def workers(server: Server, model: str, version: str | None = None) -> dict[int, str]:
    """The model's workers (its default version unless ``version``) as pid -> status."""
    return workers_of(describe(server, model, version)[0])


def any_restarted(before: dict[int, str], after: dict[int, str]) -> bool:
    """Did a worker restart between two ``workers`` answers: a pid gone or new (TorchServe
    replaces a dead worker by a new process), or one not READY now."""
    return set(before) != set(after) or ready_count(after) != len(after)


def archive_of(server: Server, model: str) -> Path:
    """The archive the model's default version was registered from, in the server's model store."""
    store = Path(read_properties(server.run_dir / "config.properties")["model_store"])
    return store / describe(server, model)[0]["modelUrl"]


def archive_label_names(mar: Path) -> dict[str, str]:
    """The entity types an archive's model tags, each with the name its answers give it
    (``label_name``: the built-in names under its model config's ``label_names``), in the
    built-in names' order, then the label map's."""
    with zipfile.ZipFile(mar) as archive:
        labels = archive.read("label_map.txt").decode("utf-8").split()
        config_file = json.loads(archive.read("MAR-INF/MANIFEST.json"))["model"].get("configFile")
        config = yaml.safe_load(archive.read(config_file)) if config_file else None
    names = HandlerSettings.from_mapping((config or {}).get("handler")).label_names
    types = dict.fromkeys(kind for kind in map(entity_type, labels) if kind is not None)
    return {
        kind: names.get(kind, kind)
        for kind in [*(k for k in names if k in types), *(k for k in types if k not in names)]
    }


def list_models(server: Server) -> list[dict]:
    return _check(server.call("GET", "management", "/models"), "list models")["models"]


def ready_workers(server: Server, model: str, version: str | None = None) -> int:
    """READY workers of the model (its default version unless ``version``)."""
    try:
        return ready_count(workers(server, model, version))
    except TsError:
        return 0


def wait_ready(server: Server, model: str, workers: int = 1, timeout: float = 180, version: str | None = None) -> float:
    """Poll until ``workers`` workers are READY (/ping says Healthy long before). Returns seconds."""
    started = time.monotonic()
    while ready_workers(server, model, version) < workers:
        if time.monotonic() - started > timeout:
            raise TsError(
                f"{model}: fewer than {workers} READY workers after {timeout:.0f} s; see "
                f"{server.run_dir / 'logs' / 'model_log.log'}"
            )
        time.sleep(0.25)
    return time.monotonic() - started


def register(
    server: Server,
    mar: str,
    workers: int | None = None,
    timeout: float = 180,
    batch_size: int | None = None,
    max_batch_delay: int | None = None,
) -> str:
    """Register an archive of the model store (by file name) and wait for its workers.

    ``workers``: None keeps the archive's model-config.yaml (minWorkers); a number scales to it;
    0 does not wait. The name and version come from the archive's manifest; a second version of
    a registered model is added beside the first (the default version stays as it was).
    ``batch_size`` and ``max_batch_delay`` (ms), when given, win over the archive's config.
    """
    params: dict[str, str | int] = {"url": mar, "synchronous": "true"}
    if workers is not None:
        params["initial_workers"] = workers
    params.update(
        {k: v for k, v in (("batch_size", batch_size), ("max_batch_delay", max_batch_delay)) if v is not None}
    )
    log_start = {name: _size(server.run_dir / "logs" / name) for name, _ in LOAD_FAILURE_LINES}
    try:
        answer = _check(
            server.call("POST", "management", "/models", params=params, timeout=(5, timeout)), f"register {mar}"
        )
    except TsError as err:
        raise TsError(handle_load_failure(server, str(err), log_start)) from None
    status = answer.get("status", "") if isinstance(answer, dict) else str(answer)
    model = re.search(r'Model "([^"]+)" Version: (\S+)', status)
    name, version = model.groups() if model else (Path(mar).stem, None)
    archive_workers = describe(server, name, version)[0]["minWorkers"]
    if workers is None:
        workers = archive_workers
    elif workers and archive_workers != workers:
        scale(server, name, workers, timeout, version)  # the archive's minWorkers won over initial_workers
    wait_ready(server, name, workers, timeout, version=version)
    save_state(server)
    return name


# Where a failed load says why, first match wins: the worker's exception, else the frontend's
# (a worker that did not start or load within startupTimeout / responseTimeout).
LOAD_FAILURE_LINES = (
    ("model_log.log", r"-{model}-stdout MODEL_LOG - Failed to load model \S+, exception (.*)"),
    ("ts_log.log", r"W-\d+-{model} \S+ - Backend worker error\n\S*Exception: (.*)"),
)


def handle_load_failure(server: Server, message: str, log_start: dict[str, int] | None = None, wait: float = 5) -> str:
    """Add the reason from the logs (written after byte ``log_start[file]``) to TorchServe's bare
    "Failed to start workers for model X version: V", and remove the half-registered model
    (TorchServe keeps it with 0 workers: registering the fixed archive would answer 409)."""
    failed = re.search(r"Failed to start workers for model (\S+) version: ([^\s\"]+)", message)
    if not failed:
        return message
    name, version = failed.groups()
    logs = server.run_dir / "logs"
    deadline = time.monotonic() + wait  # the frontend copies the worker's stdout to the log asynchronously
    while True:
        reasons = [
            (log, found)
            for log, pattern in LOAD_FAILURE_LINES
            for found in re.findall(
                pattern.format(model=re.escape(f"{name}_{version}")),
                _read_from(logs / log, (log_start or {}).get(log, 0)),
            )
        ]
        if reasons or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    try:
        unregister(server, name, version)
    except (TsError, requests.RequestException):
        pass
    log, reason = reasons[0] if reasons else ("model_log.log", "no reason found in model_log.log or ts_log.log")
    return (
        f"{message}\nmodel {name} {version} did not load: {reason}\n(see {logs / log}; "
        "the failed registration was removed)"
    )


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else 0


def _read_from(path: Path, offset: int) -> str:
    """The file's text after byte ``offset`` (all of it if it was rolled over since)."""
    if not path.is_file():
        return ""
    with open(path, "rb") as f:
        f.seek(offset if offset <= _size(path) else 0)
        return f.read().decode("utf-8", errors="replace")


def save_state(server: Server) -> None:
    """Record every registered version's archive, workers and batch settings in the run dir's
    registered.json, which ``restore`` reads after a restart."""
    entries = []
    for model in list_models(server):
        try:
            default = describe(server, model["modelName"])[0]["modelVersion"]
            infos = describe(server, model["modelName"], "all")
        except TsError:  # unregistered meanwhile by another caller
            continue
        for info in infos:
            entries.append(
                {
                    "name": info["modelName"],
                    "version": info["modelVersion"],
                    "mar": info["modelUrl"],
                    "default": info["modelVersion"] == default,
                    "min_workers": info["minWorkers"],
                    "max_workers": info["maxWorkers"],
                    "batch_size": info["batchSize"],
                    "max_batch_delay": info["maxBatchDelay"],
                }
            )
    path = server.run_dir / STATE_FILE
    # A temp file of this writer's own: several tsctl processes may save at once (each writes
    # the whole server's state, so the last one wins), and a shared temp name made one's
    # os.replace find the file already moved by another.
    fd, tmp = tempfile.mkstemp(dir=server.run_dir, prefix=f"{STATE_FILE}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps(entries, indent=2) + "\n")
    os.replace(tmp, path)  # never a half-written file, even if tsctl is killed midway


def restore(server: Server, timeout: float = 180) -> list[str]:
    """Register again what registered.json lists, with its workers, batch settings and default
    versions. Tries every entry; on any failure raises TsError and keeps the file as it was."""
    path = server.run_dir / STATE_FILE
    if not path.is_file():
        return []
    saved = path.read_text(encoding="utf-8")
    entries, failures, restored = json.loads(saved), [], []
    for e in entries:
        try:  # the archive's minWorkers/maxWorkers win over initial_workers: set the workers after
            register(server, e["mar"], 0, timeout, e["batch_size"], e["max_batch_delay"])
            _set_workers(server, e["name"], e["version"], e["min_workers"], e["max_workers"], timeout)
            wait_ready(server, e["name"], e["min_workers"], timeout, e["version"])
            restored.append(f"{e['name']} {e['version']}")
        except (TsError, requests.RequestException) as err:
            failures.append(f"{e['name']} {e['version']} ({e['mar']}): {err}")
    for e in entries:
        if e["default"] and f"{e['name']} {e['version']}" in restored:
            set_default(server, e["name"], e["version"])
    if failures:
        path.write_text(saved, encoding="utf-8")
        raise TsError(
            f"TorchServe is up at {server.inference_url}, but re-registering failed for: " + "; ".join(failures)
        )
    return restored


def rotate_keys(server: Server, apis: tuple[str, ...] = KEY_APIS) -> None:
    """Regenerate keys through TorchServe's token API (GET /token?type=inference|management on
    the management port, authorized by the "API" key, which never expires). TorchServe
    rewrites key_file.json and refuses the old key at once."""
    api_key = server.keys().get("API")
    if api_key is None:
        raise TsError(f"no API key in {server.run_dir / 'key_file.json'}: is token authorization off?")
    for api in apis:
        resp = server.call(
            "GET", "management", "/token", params={"type": api}, headers={"Authorization": f"Bearer {api_key}"}
        )
        _check(resp, f"regenerate the {api} key")


def versions(server: Server, model: str) -> list[dict[str, Any]]:
    """Every registered version of ``model``: version, default or not, READY and all workers."""
    default = describe(server, model)[0]["modelVersion"]
    return [
        {
            "version": info["modelVersion"],
            "default": info["modelVersion"] == default,
            "ready_workers": ready_count(workers_of(info)),
            "workers": len(workers_of(info)),
        }
        for info in describe(server, model, "all")
    ]


# TorchServe 0.12 can answer a synchronous scale with 500 ConcurrentModificationException:
# after applying the change, ApiUtils.updateModelWorkers counts the running workers by iterating
# WorkLoadManager's plain ArrayList of worker threads, which another frontend thread may be
# changing at that moment. The change itself has been applied, and min = max = N is idempotent,
# so resending is safe.
SCALE_ATTEMPTS = 3


def _set_workers(
    server: Server, model: str, version: str | None, min_workers: int, max_workers: int, timeout: float
) -> None:
    """PUT the worker range synchronously, resending TorchServe's spurious 500 (above)."""
    path = model_path(model, version)
    params = {"min_worker": min_workers, "max_worker": max_workers, "synchronous": "true"}
    resp = retry(
        lambda: server.call("PUT", "management", path, params=params, timeout=(5, timeout)),
        SCALE_ATTEMPTS,
        retry_if=lambda r: "race" if r.status_code == 500 and "ConcurrentModificationException" in r.text else None,
        on_retry=lambda _, attempt: print(
            f"scale {model}: TorchServe answered 500 ConcurrentModificationException (a frontend race); "
            f"resending ({attempt + 1}/{SCALE_ATTEMPTS})",
            file=sys.stderr,
        ),
    )
    _check(resp, f"scale {model}")


def scale(server: Server, model: str, workers: int, timeout: float = 180, version: str | None = None) -> None:
    """Set the model's worker count (min = max = ``workers``) and wait until it holds."""
    _set_workers(server, model, version, workers, workers, timeout)
    save_state(server)
    deadline = time.monotonic() + timeout
    while len(now := workers_of(describe(server, model, version)[0])) != workers or ready_count(now) != workers:
        if time.monotonic() > deadline:
            raise TsError(f"{model}: did not reach {workers} READY workers in {timeout:.0f} s")
        time.sleep(0.25)


def unregister(server: Server, model: str, version: str | None = None, timeout: float = 60) -> None:
    _check(server.call("DELETE", "management", model_path(model, version), timeout=(5, timeout)), f"unregister {model}")
    save_state(server)


def set_default(server: Server, model: str, version: str) -> None:
    _check(
        server.call("PUT", "management", f"{model_path(model, version)}/set-default"), f"set-default {model} {version}"
    )
    save_state(server)


PROMETHEUS_SAMPLE = re.compile(r"^([A-Za-z_:][\w:]*)\{(.*)\}\s+(\S+)$")


def metrics(server: Server) -> dict[tuple[str, frozenset], float]:
    """Every sample of TorchServe's Prometheus answer (metrics port), keyed by (name, labels)."""
    samples = {}
    for line in _check(server.call("GET", "metrics", "/metrics"), "metrics").splitlines():
        match = PROMETHEUS_SAMPLE.match(line)
        if match:
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
            samples[(match.group(1), labels)] = float(match.group(3))
    return samples


def predictions_path(model: str, version: str | None = None) -> str:
    """The inference API's path for a model (and one of its versions): the one place it is built."""
    return f"/predictions/{model}" + (f"/{version}" if version else "")


def predict(
    server: Server, model: str, payload: Any, timeout: float = 60, version: str | None = None
) -> requests.Response:
    """POST one request: a str goes as text/plain, anything else as JSON."""
    path = predictions_path(model, version)
    if isinstance(payload, str):
        return server.call(
            "POST",
            "inference",
            path,
            data=payload.encode("utf-8"),
            headers={"Content-Type": "text/plain; charset=utf-8"},
            timeout=(5, timeout),
        )
    return server.call("POST", "inference", path, json=payload, timeout=(5, timeout))
