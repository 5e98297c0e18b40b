"""What HAProxy's own HTTP/1.1 parser does with the requests behind Netty's known request-smuggling
and HTTP/2 advisories, before anything reaches TorchServe: the risk register in docs/security.md
relies on it. Debian's HAProxy (the image's), with the settings of the front door's config that
decide parsing (``mode http``, ``option http-buffer-request``, ``proto h1``; the door sets no
``accept-invalid-*`` option, checked below), in front of a backend that records the bytes it gets.

Skips where haproxy is not installed (.ci/run installs it)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from serving import paths

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy not installed"),
]

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Recorder:
    """A backend that answers 200 and keeps every byte each connection sent it."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn: socket.socket) -> None:
        data, answered = b"", False
        conn.settimeout(1)
        try:
            while chunk := conn.recv(65536):
                data += chunk
                if not answered and b"\r\n\r\n" in data:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                    answered = True
        except OSError:
            pass
        self.received.append(data)
        conn.close()


@pytest.fixture(scope="module")
def door(tmp_path_factory) -> Iterator[tuple[int, Recorder]]:
    backend, port = Recorder(), free_port()
    folder = tmp_path_factory.mktemp("haproxy")
    config = folder / "haproxy.cfg"
    config.write_text(
        f"""global
    maxconn 64
defaults
    mode http
    timeout connect 2s
    timeout client 5s
    timeout server 5s
    timeout http-request 5s
    timeout http-keep-alive 200ms
    option http-buffer-request
frontend door
    bind 127.0.0.1:{port} proto h1
    default_backend torchserve
backend torchserve
    server torchserve 127.0.0.1:{backend.port}
""",
        encoding="utf-8",
    )
    log = (folder / "haproxy.log").open("wb")
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, (folder / "haproxy.log").read_text(errors="replace")
                assert time.monotonic() < deadline, "haproxy did not listen"
                time.sleep(0.1)
        yield port, backend
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
        backend.sock.close()


def send(door: tuple[int, Recorder], raw: bytes) -> tuple[str, bytes]:
    """The status line HAProxy answers ``raw`` with, and what the backend got (b"" for nothing)."""
    port, backend = door
    before = len(backend.received)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(raw)
        answer = b""
        try:
            while chunk := s.recv(65536):
                answer += chunk
        except OSError:
            pass
    deadline = time.monotonic() + 3  # the backend's record of a forwarded request lands after its answer
    while status_of(answer) == "200" and len(backend.received) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    return status_of(answer), b"".join(backend.received[before:])


def status_of(answer: bytes) -> str:
    return answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/") else ""


def test_the_door_config_keeps_haproxy_strict():
    door_code = "\n".join(p.read_text(encoding="utf-8") for p in (paths.ROOT / "container").glob("*.py"))
    assert "accept-invalid" not in door_code  # no accept-invalid-http-request / -response anywhere
    assert "option http-buffer-request" in door_code


@pytest.mark.parametrize(
    "raw",
    [
        b"\x01\x02GET /ping HTTP/1.1\r\nHost: x\r\n\r\n",  # leading control bytes (CVE-2026-50020)
        b"GET /ping HTTP/1.1\r\nHost: x\r\nX-A\x01b: 1\r\n\r\n",  # a control byte in a header name (CVE-2021-43797)
        b"GET /ping HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n",  # space before the colon
        (
            b"POST /predictions/kor_ner HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;a\nb\r\nhello\r\n0\r\n\r\n"
        ),
        # ^ a bare LF in a chunk extension (CVE-2025-58056)
        b"POST /predictions/kor_ner HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",  # HTTP/2's preface: the door speaks HTTP/1.1 only
        b"GET /ping HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-%d: a\r\n" % i for i in range(150))
        + b"\r\n",  # >101 headers
        b"GET /ping HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-%d: %s\r\n" % (i, b"a" * 200) for i in range(100))
        + b"\r\n",
        # ^ 20 kB of headers: more than HAProxy's 16 kB buffer
    ],
    ids=[
        "leading-controls",
        "ctl-in-header-name",
        "space-before-colon",
        "bare-lf-chunk-ext",
        "two-lengths",
        "http2-preface",
        "too-many-headers",
        "headers-over-16k",
    ],
)
def test_malformed_requests_are_refused_at_the_door(door, raw):
    status, forwarded = send(door, raw)
    assert (status, forwarded) == ("400", b"")


def test_conflicting_framing_reaches_the_backend_with_one_framing_only(door):
    # HTTP/1.0 with both Transfer-Encoding and Content-Length (CVE-2026-42581): HAProxy drops the
    # length and forwards the chunked body as it parsed it; the bytes after it are never a request
    raw = (
        b"POST /predictions/kor_ner HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n"
        b"\r\n5\r\nhello\r\n0\r\n\r\n" + SMUGGLED
    )
    status, forwarded = send(door, raw)
    assert status == "200"
    head, _, body = forwarded.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower() and b"content-length" not in head.lower()
    assert body == b"5\r\nhello\r\n0\r\n\r\n" and b"/smuggled" not in forwarded


def test_chunk_extensions_are_not_forwarded(door):
    raw = (
        b"POST /predictions/kor_ner HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n0\r\n\r\n"
    )
    status, forwarded = send(door, raw)
    assert status == "200" and forwarded.endswith(b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n") and b"ext=1" not in forwarded
