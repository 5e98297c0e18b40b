"""The demo web app against the real stack: TorchServe + a model + the app, and a real Chromium.

Plain HTTP tests (no browser) check what the app adds to TorchServe: the page, pass-through of
answers and 4xx errors, the body limit, the "TorchServe is down" answer. The browser tests
drive Debian's Chromium through Selenium and Debian's chromedriver (no browser download).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from scripts import webapp as webapp_cli
from serving import paths, tsctl
from web import webapp

SENTENCE = "이순신은 조선 중기의 무신이다."
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1000,800",
]
# The demo test saves its screenshot here when NER_SCREENSHOT names a file (to refresh the docs:
# NER_SCREENSHOT=docs/webapp.png scripts/test.sh -k demo_model); otherwise into its tmp_path.
SCREENSHOT = os.environ.get("NER_SCREENSHOT")


@contextmanager
def running_app(run_dir: Path, model: str):
    """The app on a free loopback port in a thread; yields its URL and shuts it down after."""
    server = webapp.make_server(run_dir, model, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture(scope="module")
def app(server, tiny_model):
    with running_app(server.run_dir, tiny_model) as url:
        yield url


@pytest.fixture(scope="module")
def dead_app(tmp_path_factory):
    """The app pointed at a run dir whose TorchServe addresses nothing listens on."""
    run_dir = tmp_path_factory.mktemp("dead-ts")
    tsctl.write_config(run_dir, tsctl.port_overrides())
    with running_app(run_dir, "kor_ner") as url:
        yield url


@pytest.fixture(scope="module")
def demo_model(server, build_archive, test_model_config):
    """The trained demo model registered as kor_ner (what the app asks for by default)."""
    if not paths.demo_model_available():
        pytest.skip(
            f"demo model not found at {paths.DEMO_MODEL_DIR / 'model.safetensors'} "
            "(train it: scripts/train_demo.py --export)"
        )
    config = {
        **test_model_config,
        "handler": {**test_model_config["handler"], "max_seq_length": 128, "window_stride": 32},
    }
    name = tsctl.register(server, build_archive(paths.DEMO_MODEL_DIR, "kor_ner", config), workers=1)
    yield name
    tsctl.unregister(server, name)


def post(url: str, body: bytes, **kwargs) -> requests.Response:
    return requests.post(url + "api", data=body, headers={"Content-Type": "application/json"}, timeout=60, **kwargs)


# --------------------------------------------------------------------------- plain HTTP


def test_page_is_self_contained_and_keyless(app, server):
    resp = requests.get(app, timeout=10)
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "text/html; charset=utf-8"
    page = resp.text
    assert "http://" not in page and "https://" not in page  # no CDN, no absolute links
    assert "__MODEL__" not in page and "__LABEL_NAMES__" not in page
    assert json.loads(page.split('id="label-names">')[1].split("</script>")[0])["PER"] == "인명"
    assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
    for key in server.keys().values():
        assert key not in page and key not in json.dumps(dict(resp.headers))


def test_api_answers_exactly_what_torchserve_answers(app, server, tiny_model):
    direct = tsctl.predict(server, tiny_model, SENTENCE).json()
    for body in (json.dumps(SENTENCE), json.dumps({"sentence": SENTENCE})):
        resp = post(app, body.encode("utf-8"))
        assert resp.status_code == 200 and resp.headers["Content-Type"] == "application/json; charset=utf-8"
        assert resp.json() == direct and direct["sentence"] == SENTENCE


@pytest.mark.parametrize(
    "body, status, words",
    [
        (b'""', 400, "empty or blank"),
        (b'"\xed\x95', 400, "not valid UTF-8"),
        (b'{"sentence": 5}', 400, "must be a string"),
        (b'"unterminated', 400, "not valid JSON"),
    ],
)
def test_api_passes_the_handlers_errors_through(app, body, status, words):
    resp = post(app, body)
    assert resp.status_code == status and words in resp.json()["error"]


def test_api_passes_unknown_model_404_through(server):
    with running_app(server.run_dir, "no_such_model") as url:
        resp = post(url, json.dumps(SENTENCE).encode())
    assert resp.status_code == 404 and "no_such_model" in resp.json()["message"]


def test_api_refuses_a_body_over_the_limit(app):
    resp = post(app, json.dumps("가" * webapp.MAX_BODY_BYTES, ensure_ascii=False).encode())
    assert resp.status_code == 413
    limit = webapp.MAX_BODY_BYTES
    assert resp.json()["error"] == f"body has {limit * 3 + 2} bytes; the limit is {limit}"
    escaped = json.dumps("가" * 20_000).encode()  # the handler's limit, at 6 bytes a character
    assert len(escaped) < webapp.MAX_BODY_BYTES and post(app, escaped).status_code == 200


@pytest.mark.parametrize(
    "headers, status, words",
    [
        ({"Transfer-Encoding": "chunked"}, 411, "Content-Length is required"),
        ({"Content-Length": "-5"}, 400, "whole number"),
    ],
)
def test_api_needs_a_sane_content_length(app, headers, status, words):
    conn = http.client.HTTPConnection(urlsplit(app).netloc, timeout=10)
    conn.putrequest("POST", "/api")
    for name, value in headers.items():
        conn.putheader(name, value)
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == status and words in json.loads(resp.read())["error"]
    conn.close()


def test_a_stalled_body_is_dropped(app, monkeypatch, capsys):
    monkeypatch.setattr(webapp.DemoHandler, "timeout", 0.5)
    with socket.create_connection((urlsplit(app).hostname, urlsplit(app).port), timeout=10) as sock:
        sock.sendall(b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b'"ab')
        assert sock.recv(1024) == b""  # closed after the timeout, without an answer
    err = capsys.readouterr().err
    assert "Request timed out" in err and "Traceback" not in err


def test_api_says_torchserve_is_down(dead_app, tmp_path):
    resp = post(dead_app, json.dumps(SENTENCE).encode())
    assert resp.status_code == 503 and "TorchServe is not reachable at http://127.0.0.1:" in resp.json()["error"]
    with running_app(tmp_path, "kor_ner") as url:  # nothing ever started there
        resp = post(url, json.dumps(SENTENCE).encode())
    assert resp.status_code == 503 and "has not been started" in resp.json()["error"]


@pytest.mark.parametrize("method, path, status", [("GET", "nope", 404), ("GET", "api", 405), ("POST", "", 404)])
def test_other_paths_get_json_errors(app, method, path, status):
    resp = requests.request(method, app + path, timeout=10)
    assert resp.status_code == status and resp.json()["error"]


def test_cli_prints_the_address_and_stops_on_ctrl_c(tmp_path):
    cmd = [sys.executable, str(paths.ROOT / "scripts" / "webapp.py"), "--port", "0", "--run-dir", str(tmp_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        url = re.match(r"Demo page: (http://127\.0\.0\.1:\d+/) ", proc.stdout.readline()).group(1)
        assert "<title>" in requests.get(url, timeout=10).text
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        proc.kill()
        proc.stdout.close()


def test_cli_says_when_the_port_is_taken(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        assert webapp_cli.main(["--port", str(taken.getsockname()[1])]) == 1
    assert "cannot listen on 127.0.0.1:" in capsys.readouterr().err


# --------------------------------------------------------------------------- browser


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium via Debian's chromedriver, with a fresh profile."""
    if not CHROMIUM.is_file():
        pytest.skip(f"Chromium not found at {CHROMIUM} (Debian: apt-get install chromium chromium-driver)")
    assert CHROMEDRIVER.is_file(), f"{CHROMEDRIVER} missing: apt-get install chromium-driver (same version as chromium)"
    profile = tempfile.mkdtemp(prefix="webapp-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))  # a path: no Selenium Manager
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def submit(driver, text: str, with_enter: bool = True) -> None:
    """Type ``text``, submit (Enter or the button) and wait until the page has drawn the answer."""
    before = int(driver.find_element(By.TAG_NAME, "body").get_attribute("data-answers") or 0)
    box = driver.find_element(By.ID, "sentence")
    box.clear()
    box.send_keys(text)
    if with_enter:
        box.send_keys(Keys.ENTER)
    else:
        driver.find_element(By.ID, "submit").click()
    WebDriverWait(driver, 60).until(
        lambda d: int(d.find_element(By.TAG_NAME, "body").get_attribute("data-answers") or 0) > before
    )


def alert_text(driver) -> str:
    alert = driver.find_element(By.ID, "alert")
    return alert.text if alert.is_displayed() else ""


def test_browser_draws_tokens_and_errors(browser, app, dead_app, server, tiny_model):
    browser.get(app)
    legend = [chip.text for chip in browser.find_elements(By.CSS_SELECTOR, "#legend .chip")]
    assert len(legend) == 10 and legend[:3] == ["인명 PER", "지명 LOC", "기관명 ORG"]

    submit(browser, "서울에서 만났다.")
    assert alert_text(browser) == ""
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []  # no CSP violation, no 404
    assert browser.find_element(By.ID, "highlighted").text == "서울에서 만났다."
    tokens = browser.find_element(By.ID, "tokens")
    assert tokens.get_attribute("open") is None  # folded by default
    tokens.find_element(By.TAG_NAME, "summary").click()
    rows = [
        [td.text for td in tr.find_elements(By.TAG_NAME, "td")]
        for tr in browser.find_elements(By.CSS_SELECTOR, "#token-rows tr")
    ]
    expected = tsctl.predict(server, tiny_model, "서울에서 만났다.").json()["result"]
    assert rows and rows == [[r["token"], r["predicted_tag"], r["tag"], r["top_prob"]] for r in expected]

    submit(browser, "", with_enter=False)
    assert "입력을 처리할 수 없습니다" in alert_text(browser) and "empty or blank" in alert_text(browser)
    assert not browser.find_element(By.ID, "result").is_displayed()

    browser.get(dead_app)
    submit(browser, SENTENCE)
    assert "TorchServe에 연결할 수 없습니다" in alert_text(browser) and "not reachable" in alert_text(browser)


def test_browser_highlights_entities_of_the_demo_model(browser, server, demo_model, tmp_path):
    with running_app(server.run_dir, demo_model) as url:
        browser.get(url)
        browser.get_log("browser")  # drop the earlier tests' messages
        submit(browser, SENTENCE)
        assert alert_text(browser) == ""
        marks = browser.find_elements(By.CSS_SELECTOR, "#highlighted mark.ent")
        people = [m for m in marks if m.get_attribute("data-label") == "PER"]
        assert [m.text for m in people] == ["이순신"]
        assert people[0].get_attribute("data-name") == "인명"
        assert re.fullmatch(r"인명 \(PER\) · 점수 [01]\.\d{4}", people[0].get_attribute("title"))
        assert browser.find_element(By.ID, "highlighted").text == SENTENCE
        assert browser.find_elements(By.CSS_SELECTOR, "#token-rows tr")
        assert browser.find_element(By.ID, "tokens").get_attribute("open") is None
        assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []  # no CSP violation, no 404
        height = browser.execute_script("document.activeElement.blur(); return document.documentElement.scrollHeight")
        browser.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",  # the whole page, no scroll bar
            {"width": 1000, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        shot = Path(SCREENSHOT) if SCREENSHOT else tmp_path / "webapp.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
