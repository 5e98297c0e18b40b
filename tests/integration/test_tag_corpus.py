"""The corpus job's three ways give the REST API's answers: a few hundred KMOU sentences and the
kinds of line the API refuses, tagged through the served demo model, in-process from the same
archive, and on a local Ray of 2 CPUs, each output line equal to what POSTing that line answers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from serving import corpus, paths, tsctl
from serving.tag_corpus import lines_of

pytestmark = pytest.mark.skipif(not paths.demo_model_available(), reason=f"no demo model at {paths.DEMO_MODEL_DIR}")

SCRIPT = paths.ROOT / "scripts" / "tag_corpus.py"
SENTENCES = 300
REFUSED = [b"", b"  ", "가".encode() * 2001, b"\xff\xfe not UTF-8", b"." * 1999]  # 400, 400, 400, 400, 413


@pytest.fixture(scope="module")
def demo_served(server, build_archive, test_model_config, model_store):
    """The demo model archived with the shipped handler settings (limits included), 2 workers."""
    config = {
        **test_model_config,
        "minWorkers": 2,
        "maxWorkers": 2,
        "batchSize": 8,
        "maxBatchDelay": 5,
        "handler": {"torch_threads": 1},
    }
    mar = build_archive(paths.DEMO_MODEL_DIR, "demo_corpus", config)
    name = tsctl.register(server, mar, workers=2)
    yield name, model_store / mar
    tsctl.unregister(server, name)


@pytest.fixture(scope="module")
def corpus_file(kmou_split, tmp_path_factory) -> Path:
    sentences = [s.encode() for s in corpus.plain_sentences(kmou_split("val"))[:SENTENCES]]
    lines = sentences[:3] + REFUSED + sentences[3:]
    path = tmp_path_factory.mktemp("corpus") / "val.txt"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def rest_answers(server: tsctl.Server, model: str, path: Path, result: bool = True) -> list[dict]:
    """What the API answers for each line, POSTed one by one as text/plain."""
    url = server.inference_url + tsctl.predictions_path(model)
    headers = {
        **server.headers("inference"),
        "Content-Type": "text/plain; charset=utf-8",
        **({} if result else {"X-NER-Result": "false"}),
    }
    with requests.Session() as session:
        answers = []
        for n, line in enumerate(lines_of(path.read_bytes()), start=1):
            resp = session.post(url, data=line, headers=headers, timeout=120)
            body = resp.json()
            assert ("error" in body) == (resp.status_code != 200) and body.get("status", 200) == resp.status_code
            answers.append({"line": n, **body})
    return answers


def tag(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--summary-json", "-"], capture_output=True, timeout=900, check=False
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return json.loads(done.stdout)


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_the_three_ways_answer_every_line_as_the_rest_api(server, demo_served, corpus_file, tmp_path):
    model, mar = demo_served
    expected = rest_answers(server, model, corpus_file)
    statuses = [a.get("status") for a in expected if "error" in a]
    assert statuses == [400, 400, 400, 400, 413]
    ways = {
        "rest": [
            "--url",
            server.inference_url,
            "--model",
            model,
            "--key-file",
            str(server.run_dir / "key_file.json"),
            "--concurrency",
            "8",
        ],
        "in-process": ["--archive", str(mar)],
        "ray": ["--archive", str(mar), "--ray", "local", "--ray-cpus", "2", "--actors", "2"],
    }
    for way, args in ways.items():
        output = tmp_path / f"{way}.jsonl"
        summary = tag(str(corpus_file), str(output), "--chunk-lines", "64", *args)
        assert (summary["way"], summary["texts"], summary["errors"]) == (way, SENTENCES + 5, 5)
        got = read(output)
        assert len(got) == len(expected)
        differ = [n for n, (a, b) in enumerate(zip(got, expected, strict=True), start=1) if a != b]
        assert not differ, f"{way}: lines {differ[:10]} differ from the REST API's answers"


def test_no_result_answers_as_the_header_does(server, demo_served, corpus_file, tmp_path):
    model, mar = demo_served
    short = tmp_path / "short.txt"
    short.write_bytes(b"\n".join(lines_of(corpus_file.read_bytes())[:40]) + b"\n")
    expected = rest_answers(server, model, short, result=False)
    tag(str(short), str(tmp_path / "short.jsonl"), "--archive", str(mar), "--no-result")
    assert read(tmp_path / "short.jsonl") == expected


def test_a_worker_killed_mid_job_loses_no_line(server, demo_served, corpus_file, tmp_path):
    """SIGKILL one of the two workers while the job sends: what it held is resent (TorchServe
    restarts it), and the output is still every line's REST answer."""
    import os
    import signal
    import time

    model, _ = demo_served
    expected = rest_answers(server, model, corpus_file)
    output, work = tmp_path / "out.jsonl", tmp_path / "out.jsonl.parts"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(SCRIPT),
            str(corpus_file),
            str(output),
            "--url",
            server.inference_url,
            "--model",
            model,
            "--key-file",
            str(server.run_dir / "key_file.json"),
            "--concurrency",
            "16",
            "--chunk-lines",
            "32",
            "--timeout",
            "15",
            "--summary-json",
            "-",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while proc.poll() is None and not any(p.suffix == ".jsonl" for p in work.glob("*")) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the job ended before a worker could be killed"
    victim = tsctl.describe(server, model)[0]["workers"][0]["pid"]
    os.kill(victim, signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr.decode()[-3000:]
    summary = json.loads(stdout)
    assert summary["resent"] >= 1 and summary["texts"] == len(expected)
    assert read(output) == expected
    tsctl.wait_ready(server, model, workers=2)
