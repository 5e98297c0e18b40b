"""The corpus job stopped at random points (SIGKILL, and once SIGTERM) and started again with the
same command writes the bytes of an uninterrupted run; the Ray way on a local Ray of 2 CPUs
writes the in-process bytes. A tiny random BERT, no TorchServe: here because each test starts
the command several times (tens of seconds)."""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from serving import tag_corpus
from tests.unit.test_tag_corpus import SCRIPT, corpus_bytes, spec


def committed_shards(work: Path) -> int:
    try:
        return sum(1 for name in os.listdir(work) if name.endswith(".jsonl") and not name.startswith("."))
    except FileNotFoundError:
        return 0


def test_killed_at_random_points_the_same_command_finishes_with_the_same_bytes(tmp_path, tiny_model_dir):
    """SIGKILL after a random number of committed chunks (and a random moment after that), several
    times, one SIGTERM, then to the end: byte for byte the uninterrupted run's output."""
    source = tmp_path / "in.txt"
    source.write_bytes(corpus_bytes(1200))
    chunks = 1200 // 20
    reference = tmp_path / "reference.jsonl"
    tag_corpus.run(spec(tmp_path, tiny_model_dir, str(source), chunk_lines=20, output=reference), err=io.StringIO())
    output, work = tmp_path / "out.jsonl", tmp_path / "out.jsonl.parts"
    command = [
        sys.executable,
        str(SCRIPT),
        str(source),
        str(output),
        "--model-dir",
        str(tiny_model_dir),
        "--chunk-lines",
        "20",
    ]
    seed = int(os.environ.get("TAG_CORPUS_KILL_SEED", time.time_ns() % 10_000))
    rng = random.Random(seed)
    targets = [0, *sorted(rng.sample(range(1, chunks), 4))]
    stops = [signal.SIGKILL] * len(targets)
    stops[rng.randrange(1, len(stops))] = signal.SIGTERM
    landed = []
    for target, stop in zip(targets, stops, strict=True):
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while proc.poll() is None and committed_shards(work) < target and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(rng.random() * 0.02)  # somewhere inside the next chunk, or its commit
        if proc.poll() is None:
            proc.send_signal(stop)
            landed.append((target, stop.name))
        _, stderr = proc.communicate(timeout=60)
        if stop == signal.SIGTERM and proc.returncode == 130:
            assert b"start the same command again" in stderr
        if output.exists() and not work.exists():
            break  # it finished before the stop
    done = subprocess.run(command, capture_output=True, check=False)
    if done.returncode != 0:  # only a run that had already finished refuses to overwrite its output
        assert b"exists" in done.stderr and not work.exists(), (seed, landed, done.stderr.decode())
    assert len(landed) >= 3, f"seed {seed}: the job finished before most stops landed: {landed}"
    assert output.read_bytes() == reference.read_bytes(), f"seed {seed}, stops {landed}"
    assert not work.exists()


# --------------------------------------------------------------------------- Ray


def test_ray_on_a_local_ray_of_two_cpus_writes_the_in_process_bytes(tmp_path, tiny_model_dir):
    pytest.importorskip("ray.data", reason="ray[data] is not installed (requirements-ray.in)")
    source = tmp_path / "in.txt"
    source.write_bytes(corpus_bytes(300))
    reference = tmp_path / "reference.jsonl"
    tag_corpus.run(spec(tmp_path, tiny_model_dir, str(source), chunk_lines=50, output=reference), err=io.StringIO())
    output = tmp_path / "ray.jsonl"
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            str(source),
            str(output),
            "--model-dir",
            str(tiny_model_dir),
            "--chunk-lines",
            "50",
            "--ray",
            "local",
            "--ray-cpus",
            "2",
            "--actors",
            "2",
            "--summary-json",
            "-",
        ],
        capture_output=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    assert output.read_bytes() == reference.read_bytes()
    summary = json.loads(done.stdout)
    assert (summary["way"], summary["texts"], summary["errors"]) == ("ray", 300, 8)
