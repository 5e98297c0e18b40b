#!/usr/bin/env python3
"""Operate the local TorchServe: start, stop, register, scale, describe, unregister.

Each action is one small function that the CLI below and the integration tests both call.
TorchServe runs with ``var/`` (or ``--run-dir``) as its working directory: the generated
config.properties, key_file.json, logs/ and a pid file live there. Keys are read from
key_file.json on every call, so nobody copies tokens by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import repo

import requests

BASE_CONFIG = repo.CONFIG_DIR / "config.properties"
LOG_CONFIG = repo.CONFIG_DIR / "log4j2.xml"
ADDRESS_KEYS = ("inference_address", "management_address", "metrics_address")
GRPC_PORT_KEYS = ("grpc_inference_port", "grpc_management_port")
TIMEOUT = (5, 120)  # (connect, read) seconds for every HTTP call
_CHILDREN: dict[int, subprocess.Popen] = {}  # servers this process started, reaped by stop()


class TsError(RuntimeError):
    """A management call failed; the message has TorchServe's status and answer."""


# --------------------------------------------------------------------------- config and keys


def read_properties(path: Path) -> dict[str, str]:
    props = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            props[key.strip()] = value.strip()
    return props


def write_config(run_dir: Path, overrides: dict[str, str] | None = None, base: Path = BASE_CONFIG) -> Path:
    """Copy the base config.properties into ``run_dir``, replacing the keys in ``overrides``."""
    overrides = dict(overrides or {})
    lines = []
    for line in base.read_text(encoding="utf-8").splitlines():
        key = line.split("=", 1)[0].strip()
        if "=" in line and not line.lstrip().startswith("#") and key in overrides:
            line = f"{key}={overrides.pop(key)}"
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
    def load(cls, run_dir: Path = repo.RUN_DIR) -> "Server":
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
        """One authorized HTTP call; ``api`` is 'management', 'inference' or 'metrics'."""
        base = {"management": self.management_url, "inference": self.inference_url, "metrics": self.metrics_url}[api]
        key_api = "inference" if api == "metrics" else api
        headers = {**self.headers(key_api), **kwargs.pop("headers", {})}
        return requests.request(method, base + path, headers=headers, timeout=kwargs.pop("timeout", TIMEOUT), **kwargs)


def _check(resp: requests.Response, what: str) -> Any:
    if resp.status_code >= 400:
        raise TsError(f"{what}: HTTP {resp.status_code}: {resp.text.strip()[:500]}")
    try:
        return resp.json()
    except ValueError:
        return resp.text


# --------------------------------------------------------------------------- process


def pid_of(run_dir: Path) -> int | None:
    try:
        pid = int((run_dir / "torchserve.pid").read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def start(
    run_dir: Path = repo.RUN_DIR,
    model_store: Path = repo.MODEL_STORE,
    overrides: dict[str, str] | None = None,
    timeout: float = 120,
) -> Server:
    """Start TorchServe in its own process group and wait until it answers /ping."""
    if shutil.which("java") is None:
        raise TsError("java not found: TorchServe needs Java 17 (Debian: apt-get install openjdk-17-jre-headless)")
    run_dir = run_dir.resolve()
    if pid_of(run_dir):
        raise TsError(f"TorchServe already runs from {run_dir} (pid {pid_of(run_dir)}); stop it first")
    for sub in ("logs", "tmp"):
        (run_dir / sub).mkdir(parents=True, exist_ok=True)
    config = write_config(run_dir, overrides)
    (run_dir / "key_file.json").unlink(missing_ok=True)  # TorchServe writes fresh keys at start
    # TEMP/TMPDIR hold TorchServe's pid file and worker sockets: one per instance.
    env = {**os.environ, "TEMP": str(run_dir / "tmp"), "TMPDIR": str(run_dir / "tmp"),
           "LOG_LOCATION": str(run_dir / "logs"), "METRICS_LOCATION": str(run_dir / "logs")}
    cmd = [str(Path(sys.executable).with_name("torchserve")), "--start", "--foreground", "--ncs",
           "--ts-config", str(config), "--model-store", str(model_store.resolve()), "--log-config", str(LOG_CONFIG)]
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
            if (run_dir / "key_file.json").exists() or "disable_token_authorization=true" in config.read_text():
                if server.call("GET", "inference", "/ping", timeout=2).status_code == 200:
                    return server
        except (requests.ConnectionError, ValueError):  # not listening yet / key file half-written
            pass
        time.sleep(0.25)
    stop(run_dir)
    raise TsError(f"TorchServe did not answer /ping within {timeout:.0f} s; see {run_dir / 'logs'}")


def stop(run_dir: Path = repo.RUN_DIR, timeout: float = 30) -> bool:
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
    if pid in _CHILDREN and _CHILDREN[pid].poll() is not None:
        return False
    try:
        os.killpg(pid, 0)
        return True
    except ProcessLookupError:
        return False


# --------------------------------------------------------------------------- management API


def describe(server: Server, model: str, version: str | None = None) -> list[dict]:
    path = f"/models/{model}" + (f"/{version}" if version else "")
    return _check(server.call("GET", "management", path), f"describe {model}")


def list_models(server: Server) -> list[dict]:
    return _check(server.call("GET", "management", "/models"), "list models")["models"]


def ready_workers(server: Server, model: str, version: str | None = None) -> int:
    """READY workers of the model (its default version unless ``version``)."""
    try:
        info = describe(server, model, version)[0]
    except TsError:
        return 0
    return sum(1 for w in info.get("workers", []) if w.get("status") == "READY")


def wait_ready(server: Server, model: str, workers: int = 1, timeout: float = 180, version: str | None = None) -> float:
    """Poll until ``workers`` workers are READY (/ping says Healthy long before). Returns seconds."""
    started = time.monotonic()
    while ready_workers(server, model, version) < workers:
        if time.monotonic() - started > timeout:
            raise TsError(f"{model}: fewer than {workers} READY workers after {timeout:.0f} s; see {server.run_dir / 'logs' / 'model_log.log'}")
        time.sleep(0.25)
    return time.monotonic() - started


def register(server: Server, mar: str, workers: int = 1, timeout: float = 180) -> str:
    """Register an archive of the model store (by file name) and wait for its workers."""
    params = {"url": mar, "initial_workers": workers, "synchronous": "true"}
    answer = _check(server.call("POST", "management", "/models", params=params, timeout=(5, timeout)), f"register {mar}")
    model = re.search(r'Model "([^"]+)"', json.dumps(answer))
    name = model.group(1) if model else Path(mar).stem
    wait_ready(server, name, workers, timeout)
    return name


def scale(server: Server, model: str, workers: int, timeout: float = 180, version: str | None = None) -> None:
    """Set the model's worker count (min = max = ``workers``) and wait until it holds."""
    path = f"/models/{model}" + (f"/{version}" if version else "")
    params = {"min_worker": workers, "max_worker": workers, "synchronous": "true"}
    _check(server.call("PUT", "management", path, params=params, timeout=(5, timeout)), f"scale {model}")
    deadline = time.monotonic() + timeout
    while len(describe(server, model, version)[0].get("workers", [])) != workers or ready_workers(server, model, version) != workers:
        if time.monotonic() > deadline:
            raise TsError(f"{model}: did not reach {workers} READY workers in {timeout:.0f} s")
        time.sleep(0.25)


def unregister(server: Server, model: str, version: str | None = None, timeout: float = 60) -> None:
    path = f"/models/{model}" + (f"/{version}" if version else "")
    _check(server.call("DELETE", "management", path, timeout=(5, timeout)), f"unregister {model}")


def set_default(server: Server, model: str, version: str) -> None:
    _check(server.call("PUT", "management", f"/models/{model}/{version}/set-default"), f"set-default {model} {version}")


def predict(server: Server, model: str, payload: Any, timeout: float = 60, version: str | None = None) -> requests.Response:
    """POST one request: a str goes as text/plain, anything else as JSON."""
    path = f"/predictions/{model}" + (f"/{version}" if version else "")
    if isinstance(payload, str):
        return server.call("POST", "inference", path, data=payload.encode("utf-8"),
                           headers={"Content-Type": "text/plain; charset=utf-8"}, timeout=(5, timeout))
    return server.call("POST", "inference", path, json=payload, timeout=(5, timeout))


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, default=repo.RUN_DIR, help="TorchServe's working directory (default: var/)")
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("start", help="start TorchServe and wait for /ping")
    p.add_argument("--model-store", type=Path, default=repo.MODEL_STORE)
    p.add_argument("--register", metavar="MAR", action="append", default=[], help="also register this archive (repeatable)")
    p.add_argument("--timeout", type=float, default=120)
    sub.add_parser("stop", help="stop TorchServe")
    p = sub.add_parser("register", help="register an archive from the model store")
    p.add_argument("mar", help="file name in the model store, e.g. kor_ner.mar")
    p.add_argument("--workers", type=int, default=1)
    for name, text in (("describe", "show a model's workers and settings"), ("unregister", "remove a model (or one version)")):
        p = sub.add_parser(name, help=text)
        p.add_argument("model")
        p.add_argument("--version")
    p = sub.add_parser("scale", help="set a model's worker count and wait for it")
    p.add_argument("model")
    p.add_argument("workers", type=int)
    p.add_argument("--version")
    sub.add_parser("list", help="list registered models")
    p = sub.add_parser("set-default", help="make a version the default one")
    p.add_argument("model")
    p.add_argument("version")
    args = parser.parse_args(argv)

    try:
        if args.action == "start":
            started = time.monotonic()
            server = start(args.run_dir, args.model_store, timeout=args.timeout)
            print(f"TorchServe up at {server.inference_url} (management {server.management_url}, metrics {server.metrics_url})")
            for mar in args.register:
                name = register(server, mar)
                print(f"registered {name}: ready {time.monotonic() - started:.1f} s after start")
        elif args.action == "stop":
            print("stopped" if stop(args.run_dir) else f"no TorchServe running from {args.run_dir}")
        else:
            server = Server.load(args.run_dir)
            if args.action == "register":
                print(f"registered {register(server, args.mar, args.workers)}")
            elif args.action == "describe":
                print(json.dumps(describe(server, args.model, args.version), indent=2, ensure_ascii=False))
            elif args.action == "unregister":
                unregister(server, args.model, args.version)
                print(f"unregistered {args.model}")
            elif args.action == "scale":
                scale(server, args.model, args.workers, version=args.version)
                print(f"{args.model}: {args.workers} READY workers")
            elif args.action == "list":
                print(json.dumps(list_models(server), indent=2))
            elif args.action == "set-default":
                set_default(server, args.model, args.version)
                print(f"{args.model}: default version is now {args.version}")
    except (TsError, requests.RequestException, FileNotFoundError) as err:
        print(f"tsctl: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
