"""The slow-connection flood: many connections from one abusive source that send their request
headers slowly (slowloris) or stop in the middle of a body, held for a while, while honest
clients from another source keep sending real requests. Measures what the honest clients got.

asyncio on raw sockets, so one process holds thousands of connections:

- ``slow_headers`` connections each send a request line and one header, then one more header
  line every ``drip`` seconds, never the blank line that ends the headers;
- ``stalled_bodies`` connections each send complete headers announcing a body
  (``Content-Length``) and a few bytes of it, then nothing;
- ``idle`` connections send nothing at all;
- each reconnects at once when the server answers or closes it, until ``seconds`` are over;
- ``honest_clients`` loops each send the honest request on a fresh connection (the hard case:
  every request must get a connection past the flood), and wait up to ``honest_timeout`` s.

Loopback addresses are all this machine's, so the flood binds ``flood_source`` (127.0.0.2) and
the honest clients ``honest_source`` (127.0.0.1): a per-source limit can tell them apart.
``front_door_config`` and ``haproxy`` run the container's HAProxy config (container/front_door.py)
on this host in front of a TorchServe, for measuring without building the image.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import shutil
import socket
import statistics
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import front_door


@dataclass(frozen=True)
class Plan:
    host: str
    port: int
    honest_request: bytes  # one complete HTTP/1.1 request with "Connection: close"
    slow_headers: int = 2000
    stalled_bodies: int = 200
    idle: int = 0  # connections that send nothing at all
    seconds: float = 30.0
    honest_clients: int = 8
    flood_source: str = "127.0.0.2"
    honest_source: str = "127.0.0.1"
    drip: float = 1.0  # seconds between two header lines of a slow connection
    ramp: float = 2.0  # the flood's connections are opened over this many seconds
    honest_timeout: float = 30.0
    path: str = "/predictions/kor_ner"


@dataclass
class Report:
    honest_sent: int = 0
    honest_answered: int = 0  # any HTTP answer with the expected status
    honest_failed: Counter = field(default_factory=Counter)  # reason -> count
    latencies_ms: list[float] = field(default_factory=list)
    flood_connections: int = 0  # opened by the flood in all
    flood_answered: Counter = field(default_factory=Counter)  # status line (or "closed") the server cut them with
    flood_refused: int = 0  # connect failed or reset at once
    flood_held_peak: int = 0  # most flood connections open at one time
    seconds: float = 0.0

    def summary(self) -> dict:
        lat = sorted(self.latencies_ms)
        pct = (lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))], 1)) if lat else (lambda q: None)
        out = {k: v for k, v in asdict(self).items() if k != "latencies_ms"}
        out.update(
            honest_failed=dict(self.honest_failed),
            flood_answered=dict(self.flood_answered),
            p50_ms=pct(0.50),
            p99_ms=pct(0.99),
            max_ms=round(lat[-1], 1) if lat else None,
            mean_ms=round(statistics.fmean(lat), 1) if lat else None,
            seconds=round(self.seconds, 1),
        )
        return out


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to its hard limit; the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def http_request(
    path: str, body: bytes, key: str | None = None, content_type: str = "text/plain; charset=utf-8"
) -> bytes:
    """A complete HTTP/1.1 POST that asks the server to close the connection after answering."""
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: kor-ner\r\n{auth}Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


async def _open(plan: Plan, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection from ``source``; a connect that takes over 10 s fails (OSError), as
    when a SYN from that address is dropped (podman's published ports take 127.0.0.1 only)."""
    try:
        return await asyncio.wait_for(asyncio.open_connection(plan.host, plan.port, local_addr=(source, 0)), 10)
    except asyncio.TimeoutError:
        raise OSError(f"no connection from {source} in 10 s") from None


def _status(first_line: bytes) -> str:
    parts = first_line.split()
    return parts[1].decode("ascii", "replace") if len(parts) > 1 and first_line.startswith(b"HTTP/") else "closed"


class _Flood:
    def __init__(self, plan: Plan, report: Report, deadline: float) -> None:
        self.plan, self.report, self.deadline, self.held = plan, report, deadline, 0

    async def hold(self, index: int, stalled: bool, idle: bool = False) -> None:
        """One flood slot: a slow, stalled or idle connection, reopened whenever the server cuts it."""
        plan = self.plan
        await asyncio.sleep(plan.ramp * index / max(1, plan.slow_headers + plan.stalled_bodies + plan.idle))
        while time.monotonic() < self.deadline:
            try:
                reader, writer = await _open(plan, plan.flood_source)
            except OSError:
                self.report.flood_refused += 1
                await asyncio.sleep(1)  # as a client would: this is not a connect storm
                continue
            self.report.flood_connections += 1
            self.held, opened = self.held + 1, time.monotonic()
            self.report.flood_held_peak = max(self.report.flood_held_peak, self.held)
            try:
                if idle:
                    pass
                elif stalled:
                    writer.write(
                        f"POST {plan.path} HTTP/1.1\r\nHost: kor-ner\r\nContent-Type: text/plain\r\n"
                        "Content-Length: 1000\r\n\r\n".encode()
                        + "서울".encode()
                    )
                else:
                    writer.write(f"POST {plan.path} HTTP/1.1\r\nHost: kor-ner\r\n".encode())
                await writer.drain()
                while time.monotonic() < self.deadline:
                    try:
                        first = await asyncio.wait_for(reader.readline(), timeout=plan.drip)
                    except asyncio.TimeoutError:
                        if not (stalled or idle):
                            writer.write(b"X-Slow: 1\r\n")
                            await writer.drain()
                        continue
                    self.report.flood_answered[_status(first)] += 1
                    break
            except OSError:
                self.report.flood_answered["reset"] += 1
            finally:
                self.held -= 1
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
            if time.monotonic() - opened < 1:
                await asyncio.sleep(1)  # cut on arrival: retry as a client would, not as a connect storm

    async def _ask(self) -> bytes:
        """One honest request on a new connection: the whole answer."""
        reader, writer = await _open(self.plan, self.plan.honest_source)
        try:
            writer.write(self.plan.honest_request)
            await writer.drain()
            return await reader.read()
        finally:
            writer.close()

    async def honest(self, expect: int) -> None:
        plan = self.plan
        while time.monotonic() < self.deadline:
            self.report.honest_sent += 1
            started = time.monotonic()
            try:  # asyncio.wait_for, not asyncio.timeout (Python 3.11+): the project runs on 3.10
                answer = await asyncio.wait_for(self._ask(), plan.honest_timeout)
            except asyncio.TimeoutError:  # on 3.10 not the built-in TimeoutError
                self.report.honest_failed["timeout"] += 1
                continue
            except OSError as err:
                self.report.honest_failed[type(err).__name__] += 1
                continue
            status = _status(answer.split(b"\r\n", 1)[0])
            if status == str(expect):
                self.report.honest_answered += 1
                self.report.latencies_ms.append((time.monotonic() - started) * 1000)
            else:
                self.report.honest_failed[f"HTTP {status}"] += 1


async def _run(plan: Plan, expect: int) -> Report:
    report = Report()
    started = time.monotonic()
    flood = _Flood(plan, report, started + plan.seconds)
    slots = plan.slow_headers + plan.stalled_bodies
    tasks = [flood.hold(i, stalled=i >= plan.slow_headers) for i in range(slots)]
    tasks += [flood.hold(slots + i, stalled=False, idle=True) for i in range(plan.idle)]
    tasks += [flood.honest(expect) for _ in range(plan.honest_clients)]
    await asyncio.gather(*tasks)
    report.seconds = time.monotonic() - started
    return report


def run(plan: Plan, expect: int = 200) -> Report:
    """Flood ``plan.host:plan.port`` for ``plan.seconds`` while honest clients send; what they got.
    Honest requests still in flight when the time is up are waited for (up to honest_timeout)."""
    need = plan.slow_headers + plan.stalled_bodies + plan.idle + plan.honest_clients + 64
    if raise_fd_limit() < need:
        raise RuntimeError(
            f"the open-file limit ({raise_fd_limit()}) is under the {need} this flood needs: raise ulimit -n"
        )
    return asyncio.run(_run(plan, expect))


# --------------------------------------------------------------------------- the front door on this host


def _accepting(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


@contextlib.contextmanager
def haproxy(config: str, workdir: Path, ports: tuple[int, ...], timeout: float = 15) -> Iterator[subprocess.Popen]:
    """Debian's HAProxy running ``config`` (checked first) until the block ends; waits until
    every port in ``ports`` accepts."""
    if shutil.which("haproxy") is None:
        raise RuntimeError("haproxy not installed (Debian: apt-get install haproxy)")
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "haproxy.cfg"
    path.write_text(config, encoding="utf-8")
    check = subprocess.run(["haproxy", "-c", "-f", str(path)], check=False, capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"haproxy refuses {path}: {check.stdout}{check.stderr}")
    with open(workdir / "haproxy.log", "ab") as out:
        proc = subprocess.Popen(
            ["haproxy", "-db", "-f", str(path)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + timeout
        while not all(_accepting("127.0.0.1", p) for p in ports):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"HAProxy did not start: {(workdir / 'haproxy.log').read_text()[-2000:]}")
            time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def front_door_config(
    workdir: Path,
    keys: str | list[str],
    inference_port: int,
    metrics_port: int,
    backend_port: int,
    metrics_backend_port: int,
    **fields: Any,
) -> str:
    """The image's HAProxy config (container/front_door.py) for this host: binds on 127.0.0.1,
    TorchServe's ports as given, the keys' digests in a file under ``workdir``; ``fields``
    override FrontDoor's (maxconn, health_bind, tls_pem, request_timeout, max_conn_per_source...)."""
    workdir.mkdir(parents=True, exist_ok=True)
    keys_file = front_door.write_private(
        workdir / "keys.sha256", front_door.key_digests([keys] if isinstance(keys, str) else keys)
    )
    fields = (
        dict(
            maxconn=front_door.max_connections(),
            nbthread=front_door.threads(),
            backend_port=backend_port,
            metrics_backend_port=metrics_backend_port,
        )
        | fields
    )
    door = front_door.FrontDoor(
        f"127.0.0.1:{inference_port}", f"127.0.0.1:{metrics_port}", str(keys_file), 120, **fields
    )
    return front_door.front_door_config(door)
