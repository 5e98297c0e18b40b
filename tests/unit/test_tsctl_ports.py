"""A second TorchServe beside a first: tsctl start --ports FIRST|free, a clear refusal when a
port is taken (no server needed: the check runs before TorchServe starts), and a stop that
leaves the ports free for the next start."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from scripts import tsctl as tsctl_cli
from serving import tsctl


def test_a_port_block_moves_every_listener():
    assert tsctl.port_block(8180) == {
        "inference_address": "http://127.0.0.1:8180",
        "management_address": "http://127.0.0.1:8181",
        "metrics_address": "http://127.0.0.1:8182",
        "grpc_inference_port": "8183",
        "grpc_management_port": "8184",
    }
    with pytest.raises(tsctl.TsError, match="between 1024 and 65531"):
        tsctl.port_block(80)


def test_free_ports_are_all_different_and_loopback():
    ports = tsctl.port_overrides()
    numbers = [v.rsplit(":", 1)[-1] for v in ports.values()]
    assert len(set(numbers)) == 5 and all(v.startswith("http://127.0.0.1:") for k, v in ports.items() if "address" in k)
    assert tsctl.ports_in_use(ports) == []


def test_free_ports_avoid_the_ephemeral_range():
    """A client socket takes its source port from the ephemeral range; a listener restarted on
    such a port under load can find it held (EADDRINUSE). Free ports come from below it."""
    low = int(tsctl.EPHEMERAL_RANGE.read_text().split()[0]) if tsctl.EPHEMERAL_RANGE.exists() else 32768
    if low - 10000 < 1000:
        pytest.skip(f"this kernel's ephemeral range starts at {low}: no room below it")
    ports = tsctl.free_ports(11)
    assert len(set(ports)) == 11 and all(10000 <= p < low for p in ports), ports


def test_start_refuses_a_taken_port_and_names_it(tmp_path, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        first = busy.getsockname()[1] - 2  # the block's metrics port is the busy one
        if first < 1024:
            pytest.skip("the OS gave a port too low for a block before it")
        code = tsctl_cli.main(["--run-dir", str(tmp_path / "second"), "start", "--ports", str(first), "--no-restore"])
    err = capsys.readouterr().err
    assert code == 1 and f"metrics_address {first + 2}" in err and "--ports" in err, err
    assert not (tmp_path / "second" / "torchserve.pid").exists()  # nothing was started


def test_ports_must_be_a_number_or_free(tmp_path, capsys):
    assert tsctl_cli.main(["--run-dir", str(tmp_path), "start", "--ports", "next"]) == 1
    assert "give the first port" in capsys.readouterr().err


def test_stop_waits_for_every_process_of_the_group(tmp_path):
    """TorchServe's launcher dies on TERM at once while its Java frontend takes seconds to shut
    down (and to let go of its ports). stop() returns only when no process of the group is left,
    so a server started again on the same ports finds them free."""
    child = (
        "import os, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: (time.sleep(1.5), sys.exit(0)))\n"
        f"open({str(tmp_path / 'child.pid')!r}, 'w').write(str(os.getpid()))\n"
        "time.sleep(60)\n"
    )
    leader = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {child!r}]); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", leader], start_new_session=True)
    tsctl._CHILDREN[proc.pid] = proc  # as tsctl.start registers the launcher it spawns
    (tmp_path / "torchserve.pid").write_text(str(proc.pid))
    child_pid_file = tmp_path / "child.pid"
    deadline = time.monotonic() + 20
    while not (child_pid_file.exists() and child_pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    child_pid = int(child_pid_file.read_text())
    assert tsctl.pid_of(tmp_path) == proc.pid

    started = time.monotonic()
    assert tsctl.stop(tmp_path, timeout=10)
    assert time.monotonic() - started >= 1.0, "stop() returned while the group's TERM handler still ran"
    with pytest.raises(ProcessLookupError):
        os.kill(child_pid, 0)
    assert tsctl.pid_of(tmp_path) is None
