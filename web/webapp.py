"""The tutorial's demo page on top of TorchServe: type a sentence, see its entities highlighted.

    python scripts/tsctl.py start --register kor_ner.mar    # TorchServe, from var/
    python scripts/webapp.py                                # prints http://127.0.0.1:8090/

``GET /`` serves one self-contained page (web/webapp_page.html beside this module: no CDN, no build step).
``POST /api`` takes what the tutorial's page posted, a JSON string (``"이순신은 ..."``; a
``{"sentence": ...}`` object works too), and answers with the handler's JSON. The app calls
TorchServe's inference API itself, with the key from key_file.json, so the browser never sees a
key. The handler validates the text (its 400s come back unchanged); this app only refuses
oversized bodies and turns "TorchServe is down" into a readable 503. Request text is never logged.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import signal
import zipfile
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import requests

from serving import paths, tsctl

PAGE = Path(__file__).with_name("webapp_page.html")
# A 20,000-character text (the handler's limit) fits even as \u-escaped JSON (120 KB), so the
# handler's message names the real limit; this one only stops floods before they reach TorchServe.
MAX_BODY_BYTES = 128 * 1024
TS_TIMEOUT = (5, 60)  # (connect, read) seconds for one call to TorchServe
JSON_TYPE = "application/json; charset=utf-8"


def error_body(message: str) -> bytes:
    """The same shape as the handler's errors, so the page reads one field."""
    return json.dumps({"error": message}, ensure_ascii=False).encode("utf-8")


def render_page(model: str, label_names: Mapping[str, str]) -> str:
    """The page with the model's name and its entity types' names (the legend) filled in."""
    names = json.dumps(dict(label_names), ensure_ascii=False).replace("<", "\\u003c")
    return PAGE.read_text(encoding="utf-8").replace("__MODEL__", html.escape(model)).replace("__LABEL_NAMES__", names)


def served_label_names(run_dir: Path, model: str) -> dict[str, str]:
    """The served model's own entity types and names, read from the archive TorchServe serves
    it from; empty while TorchServe or the model is not there (the page then names each type
    as answers show it)."""
    try:
        return tsctl.archive_label_names(tsctl.archive_of(tsctl.Server.load(run_dir), model))
    except (OSError, KeyError, ValueError, tsctl.TsError, requests.RequestException, zipfile.BadZipFile):
        return {}


def content_security_policy(page: str) -> str:
    """Only this page's own inline scripts may run, and it may talk only to this app.

    Scripts are allowed by their SHA-256, so an injected script would not run; the policy
    also makes any external resource (a CDN font or script) fail loudly in the browser test.
    """
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode() + "'"
        for script in re.findall(r"<script>(.*?)</script>", page, re.S)
    )
    return (
        f"default-src 'none'; script-src {hashes}; style-src 'unsafe-inline'; connect-src 'self'; "
        "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def forward(run_dir: Path, model: str, body: bytes) -> tuple[int, str, bytes]:
    """POST ``body`` to the model: TorchServe's answer, or a 502/503/504 that says what failed.

    Answers below 500 (the handler's 400s, TorchServe's 404 for an unknown model) pass
    through unchanged; the run dir is re-read on every call, so a restarted TorchServe
    (new keys) is picked up without restarting this app.
    """
    try:
        server = tsctl.Server.load(run_dir)
    except FileNotFoundError:
        return (
            503,
            JSON_TYPE,
            error_body(
                f"TorchServe has not been started from {run_dir} (no config.properties there): "
                "start it with python scripts/tsctl.py start"
            ),
        )
    try:
        resp = server.call(
            "POST",
            "inference",
            tsctl.predictions_path(model),
            data=body,
            headers={"Content-Type": "application/json"},
            timeout=TS_TIMEOUT,
        )
    except requests.ConnectionError:
        return (
            503,
            JSON_TYPE,
            error_body(
                f"TorchServe is not reachable at {server.inference_url}: is it running? (python scripts/tsctl.py start)"
            ),
        )
    except requests.Timeout:
        return 504, JSON_TYPE, error_body(f"TorchServe did not answer within {TS_TIMEOUT[1]} s")
    if resp.status_code >= 500:
        return 502, JSON_TYPE, error_body(f"TorchServe failed: HTTP {resp.status_code}: {_message(resp)}")
    return resp.status_code, resp.headers.get("Content-Type", JSON_TYPE), resp.content


def _message(resp: requests.Response) -> str:
    try:
        return str(resp.json().get("message", resp.text))[:300]
    except (ValueError, AttributeError):  # not JSON, or JSON that is not an object
        return resp.text.strip()[:300]


class DemoServer(ThreadingHTTPServer):
    """The HTTP server plus what its handler needs: where TorchServe runs, the model, the page."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], run_dir: Path, model: str, max_body: int) -> None:
        super().__init__(address, DemoHandler)
        self.run_dir, self.model, self.max_body = run_dir, model, max_body
        page = render_page(model, {})  # the legend is filled per request, from the model then served
        self.page_headers = {
            "Content-Security-Policy": content_security_policy(page),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
        }

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host if isinstance(host, str) else host.decode()}:{port}/"


class DemoHandler(BaseHTTPRequestHandler):
    """``GET /`` -> the page, ``POST /api`` -> TorchServe's answer; everything else -> JSON 404/405."""

    server: DemoServer
    timeout = 30  # seconds a client may take to send its request (a stalled one frees its thread)

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path in ("/", "/index.html"):
            page = render_page(self.server.model, served_label_names(self.server.run_dir, self.server.model))
            self._send(200, "text/html; charset=utf-8", page.encode("utf-8"), self.server.page_headers)
        elif path == "/api":
            self._send(
                405,
                JSON_TYPE,
                error_body('POST a JSON string to /api, e.g. "이순신은 조선 중기의 무신이다."'),
                {"Allow": "POST"},
            )
        else:
            self._send(404, JSON_TYPE, error_body(f"no page at {path}: the demo is at /"))

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        if path != "/api":
            self._send(404, JSON_TYPE, error_body(f"no API at {path}: POST to /api"))
            return
        body = self._read_body()
        if body is not None:
            self._send(*forward(self.server.run_dir, self.server.model, body))

    def _read_body(self) -> bytes | None:
        """The request body, or None after answering 411/400/413."""
        raw = self.headers.get("Content-Length")
        if raw is None:
            self._send(411, JSON_TYPE, error_body("Content-Length is required (chunked bodies are not accepted)"))
            return None
        if not raw.strip().isdigit():
            self._send(400, JSON_TYPE, error_body("Content-Length must be a whole number of bytes"))
            return None
        length = int(raw)
        if length > self.server.max_body:  # not read: the connection closes after this answer (HTTP/1.0)
            self._send(413, JSON_TYPE, error_body(f"body has {length} bytes; the limit is {self.server.max_body}"))
            return None
        return self.rfile.read(length)  # a stalled client: TimeoutError, handled by http.server

    def _send(self, status: int, content_type: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


def make_server(
    run_dir: Path = paths.RUN_DIR,
    model: str = paths.MODEL_NAME,
    host: str = "127.0.0.1",
    port: int = 8090,
    max_body: int = MAX_BODY_BYTES,
) -> DemoServer:
    """Bind the app (port 0 picks a free port; ``.url`` says which); ``serve_forever()`` runs it."""
    return DemoServer((host, port), Path(run_dir), model, max_body)


def serve(server: DemoServer) -> None:
    """Print the page's address and answer requests until Ctrl+C or SIGTERM; then release the port."""
    # Explicit handlers: a process started in the background by a shell (`cmd &`, nohup)
    # inherits SIGINT ignored, and Python then installs no KeyboardInterrupt for it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    print(
        f"Demo page: {server.url}  (model {server.model}, TorchServe from {server.run_dir}; Ctrl+C stops)", flush=True
    )
    with server:
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
