"""Build and run the project's container image (container/Containerfile) with podman, offline.

The base is Debian bookworm made here by mmdebstrap from Debian's own packages and imported
into podman (no image registry is reachable), cached in podman's store across runs. pip inside
the build sees what pip on this host sees: its config (``pip config list``: the CA bundle, the
local wheel cache with torch's CPU build, extra indexes, constraints) is written to a pip.conf
mounted into the build, with the files it names. These mounts belong to this machine, so they
are here and not in the Containerfile. podman runs containers with runc (crun cannot set up
cgroups here) and with ulimits this sandbox may set (podman's defaults exceed them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from serving import paths

BASE_IMAGE = "localhost/kor-ner-base:bookworm"
# KOR_NER_TEST_IMAGE: a tag of one's own where several checkouts build on one machine
TEST_IMAGE = os.environ.get("KOR_NER_TEST_IMAGE", "localhost/kor-ner/torchserve:0.12.0-ner1.0-test")
RUN_OPTIONS = ["--runtime", "runc", "--ulimit", "nofile=8192:8192", "--ulimit", "nproc=8192:8192"]
HOST_CA_IN_BUILD = "/opt/host-ca/ca-certificates.crt"  # not over the path Debian's ca-certificates writes
KEY_IN_CONTAINER = "/tmp/kor-ner/inference.key"  # where the entrypoint writes the key it generates


class Unavailable(Exception):
    """No container runtime can run here; the message says why (the tests skip with it)."""


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["podman", *args], check=False, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args[:3])}: exit {done.returncode}: {done.stderr.strip()[-800:]}")
    return done


def ensure_base(workdir: Path) -> None:
    """The offline Debian base image, made once (about a minute) and kept in podman's store."""
    if shutil.which("podman") is None:
        raise Unavailable("podman not installed (Debian: apt-get install podman runc buildah mmdebstrap)")
    if podman("image", "exists", BASE_IMAGE, check=False).returncode != 0:
        if shutil.which("mmdebstrap") is None:
            raise Unavailable("mmdebstrap not installed: cannot make the offline Debian base image")
        tarball = workdir / "bookworm-minbase.tar"
        done = subprocess.run(
            ["mmdebstrap", "--variant=minbase", "bookworm", str(tarball)],
            check=False,
            capture_output=True,
            text=True,
            timeout=900,
        )
        if done.returncode != 0:
            raise Unavailable(f"mmdebstrap failed: {done.stderr.strip()[-300:]}")
        podman("import", str(tarball), BASE_IMAGE, timeout=300)
        tarball.unlink()
    probe = podman("run", "--rm", *RUN_OPTIONS, BASE_IMAGE, "true", check=False, timeout=120)
    if probe.returncode != 0:
        raise Unavailable(f"podman cannot run a container here: {probe.stderr.strip()[-300:]}")


def host_pip_config() -> dict[str, str]:
    """``pip config list`` of this host, environment included: key -> value."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], check=False, capture_output=True, text=True
    ).stdout
    config = {}
    for line in out.splitlines():
        match = re.fullmatch(r"[^.]*\.([a-z-]+)='(.*)'", line.strip())
        if match:
            config[match.group(1)] = match.group(2)
    return config


def build_mounts(workdir: Path) -> tuple[list[str], bool]:
    """podman build -v options giving pip in the build this host's pip config and the files
    it names; True when the local wheel cache has torch's CPU build."""
    config, volumes, lines = host_pip_config(), {}, ["[global]"]
    for key in ("index-url", "extra-index-url", "find-links", "constraint", "cert"):
        if key not in config:
            continue
        values = []
        for value in config[key].split():
            path = Path(urllib.parse.urlparse(value).path if value.startswith("file://") else value)
            kept = value
            if key == "cert" and path.is_file():
                volumes[str(path)] = HOST_CA_IN_BUILD
                kept = HOST_CA_IN_BUILD
            elif path.exists() and path.is_absolute():
                # a file's directory; a local index's parent too: its pages link ../../files/<wheel>
                shared = path.parent if path.is_file() or key.endswith("index-url") else path
                volumes[str(shared)] = str(shared)
            values.append(kept)
        lines.append(f"{key} = {' '.join(values)}")
    pip_conf = workdir / "pip.conf"
    pip_conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
    volumes[str(pip_conf)] = "/etc/pip.conf"
    local_torch = any(
        Path(d).is_dir() and any(Path(d).glob("torch-*+cpu-*.whl")) for d in config.get("find-links", "").split()
    )
    return [arg for host, inside in volumes.items() for arg in ("-v", f"{host}:{inside}:ro")], local_torch


def build_image(workdir: Path, tag: str = TEST_IMAGE, build_args: dict[str, str] | None = None) -> float:
    """Build container/Containerfile from the repo on the offline base; podman's layer cache
    makes a rebuild with unchanged requirements take seconds. Returns seconds taken."""
    mounts, local_torch = build_mounts(workdir)
    revision = subprocess.run(
        ["git", "-C", str(paths.ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    args = {
        "BASE_IMAGE": BASE_IMAGE,
        "REVISION": revision or "unknown",
        **({"TORCH_LINKS": ""} if local_torch else {}),
        **(build_args or {}),
    }
    started = time.monotonic()
    done = subprocess.run(
        [
            "podman",
            "build",
            "--isolation",
            "chroot",
            "--format",
            "docker",
            "--layers",
            "-f",
            str(paths.ROOT / "container" / "Containerfile"),
            "-t",
            tag,
            *(a for k, v in args.items() for a in ("--build-arg", f"{k}={v}")),
            *mounts,
            str(paths.ROOT),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        raise RuntimeError(f"image build failed:\n{(done.stdout + done.stderr)[-3000:]}")
    return time.monotonic() - started


SBOM_IN_IMAGE = "/opt/kor-ner/sbom.cdx.json"  # container/Containerfile writes it at build time


def sbom(image: str = TEST_IMAGE) -> dict:
    """The CycloneDX SBOM the image carries (``podman run --entrypoint cat``: what an operator runs)."""
    return json.loads(podman("run", "--rm", *RUN_OPTIONS, "--entrypoint", "cat", image, SBOM_IN_IMAGE).stdout)


@dataclass
class Container:
    name: str
    ports: dict[int, int]  # container port -> host port on 127.0.0.1
    started: float  # time.monotonic() at podman run

    def url(self, port: int) -> str:
        return f"http://127.0.0.1:{self.ports[port]}"

    def keys(self) -> dict[str, str]:
        """The inference key the front door checks: the one the entrypoint generated at start
        (a container run with KOR_NER_KEY_FILE has the key its caller gave)."""
        return {"inference": podman("exec", self.name, "cat", KEY_IN_CONTAINER).stdout.strip()}

    def healthy(self) -> bool:
        return podman("healthcheck", "run", self.name, check=False, timeout=30).returncode == 0

    def state(self) -> dict:
        return json.loads(podman("inspect", self.name).stdout)[0]["State"]

    def wait_healthy(self, timeout: float = 300) -> float:
        """Poll the image's own HEALTHCHECK; seconds from podman run to healthy."""
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if not self.state()["Running"]:
                raise RuntimeError(f"container exited:\n{self.logs()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"not healthy after {timeout:.0f} s:\n{self.logs()[-3000:]}")
            time.sleep(0.5)
        return time.monotonic() - self.started

    def logs(self) -> str:
        done = podman("logs", self.name, check=False)
        return done.stdout + done.stderr

    def remove(self) -> None:
        podman("rm", "-f", "-t", "5", self.name, check=False)


def run(image: str, name: str, publish: tuple[int, ...] = (8080, 8082), extra: tuple[str, ...] = ()) -> Container:
    """podman run -d, each port published on a free 127.0.0.1 port of the host."""
    podman("rm", "-f", name, check=False)
    started = time.monotonic()
    podman("run", "-d", "--name", name, *RUN_OPTIONS, *(f"-p127.0.0.1::{p}" for p in publish), *extra, image)
    ports = {}
    for p in publish:
        host = podman("port", name, f"{p}/tcp").stdout.strip().splitlines()[0]
        ports[p] = int(host.rsplit(":", 1)[1])
    return Container(name, ports, started)
