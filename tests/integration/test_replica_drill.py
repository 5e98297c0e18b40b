"""scripts/replica_drill.py, short: two TorchServe replicas behind Debian's HAProxy at
concurrency 16, a rolling update from 1.0 to 2.0 with no failed request and every answer from
a known version, then kill -9 of a replica: the retrying client loses nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from scripts import replica_drill
from serving import paths
from serving.paths import demo_model_available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not demo_model_available(), reason=f"no demo model at {paths.DEMO_MODEL_DIR}"),
    pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy not installed (apt-get install haproxy)"),
]


def test_rolling_update_loses_nothing_and_the_retrying_client_survives_kill_9(tmp_path, capsys):
    out = tmp_path / "drill.json"
    code = replica_drill.main(
        [
            "--workdir",
            str(tmp_path / "drill"),
            "--first-port",
            "0",
            "--clients",
            "16",
            "--settle",
            "2",
            "--deadline",
            "420",
            "--report",
            str(out),
        ]
    )
    progress = capsys.readouterr().err
    print(progress)
    assert code == 0, progress
    result = json.loads(out.read_text(encoding="utf-8"))
    phases = result["phases"]
    assert result["verdict"] == "held" and result["lb_status_without_key"] == 401
    update = phases["rolling update"]
    for kind in ("plain", "retrying"):
        assert update[kind]["failed"] == 0 and update[kind]["unversioned"] == 0, update[kind]
        assert set(update[kind]["versions"]) == {"1.0", "2.0"}  # both served while it rolled
        assert set(phases["after the update"][kind]["versions"]) == {"2.0"}
    killed = phases["kill -9"]
    assert killed["retrying"]["failed"] == 0 and killed["retrying"]["answered"] > 0
    # the kill hit requests in flight: lost by the plain client, resent by the retrying one
    assert killed["plain"]["failed"] + killed["retrying"]["resent"] > 0, killed
    haproxy_config = Path(result["haproxy_config"]).read_text(encoding="utf-8")
    assert "127.0.0.1:" in haproxy_config and "0.0.0.0" not in haproxy_config
    print(
        json.dumps({p: {k: (t["answered"], t["failed"], t["resent"]) for k, t in v.items()} for p, v in phases.items()})
    )
