"""The image's SBOM generator (container/sbom.py) over what is installed here: TorchServe's own
frontend jar in this venv (its Netty and gRPC-Java read from the jar's metadata, checked against
the jar's bytes independently), a dpkg status file, and a cyclonedx-py SBOM taken as it is.
The SBOM inside a built image: tests/integration/test_container.py."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import ts

import sbom

JAR = Path(ts.__file__).parent / "frontend" / "model-server.jar"

DPKG_STATUS = """\
Package: haproxy
Status: install ok installed
Architecture: amd64
Version: 2.6.12-1+deb12u2
Source: haproxy

Package: removed-one
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0-1

Package: openjdk-17-jre-headless
Status: install ok installed
Architecture: amd64
Source: openjdk-17
Version: 17.0.17+10-1~deb12u1
"""


def netty_versions_in_the_jar() -> set[str]:
    """Every Netty version the jar's own properties file names (read here without sbom.py)."""
    with zipfile.ZipFile(JAR) as jar:
        text = jar.read("META-INF/io.netty.versions.properties").decode()
    return set(re.findall(r"^netty-(?:codec-http|handler|common|transport)\.version=(\S+)$", text, re.M))


def test_the_jar_s_netty_and_grpc_are_listed_with_the_versions_the_jar_holds():
    components = {c["purl"]: c for c in sbom.jar_components(JAR)}
    netty = {c["name"]: c["version"] for c in components.values() if c["group"] == "io.netty"}
    assert {netty["netty-codec-http"], netty["netty-handler"], netty["netty-common"]} == netty_versions_in_the_jar()
    assert netty["netty-codec-http"] == "4.1.53.Final"  # what docs/security.md's register is about
    assert "pkg:maven/io.netty/netty-codec-http2@4.1.53.Final" in components
    grpc = {c["name"]: c["version"] for c in components.values() if c["group"] == "io.grpc"}
    assert grpc["grpc-netty-shaded"] == grpc["grpc-core"] == "1.50.0"
    with zipfile.ZipFile(JAR) as jar:  # the version string really is in GrpcUtil's bytes
        assert b"1.50.0" in jar.read(sbom.GRPC_VERSION_CLASS)
    log4j = components["pkg:maven/org.apache.logging.log4j/log4j-core@2.17.1"]
    assert log4j["properties"] == [{"name": "kor-ner:found-in", "value": "model-server.jar!/META-INF/DEPENDENCIES"}]


def test_pom_properties_inside_a_jar_are_read(tmp_path):
    jar = tmp_path / "fat.jar"
    with zipfile.ZipFile(jar, "w") as archive:
        archive.writestr(
            "META-INF/maven/com.google.guava/guava/pom.properties",
            "#Created by Maven\nversion=31.1-jre\ngroupId=com.google.guava\nartifactId=guava\n",
        )
        archive.writestr(
            "META-INF/io.netty.versions.properties",
            "netty-buffer.version=4.1.79.Final\nnetty-buffer.buildDate=2022-07-11 13\\:45\\:00 +0000\n",
        )
    purls = sorted(c["purl"] for c in sbom.jar_components(jar))
    assert purls == ["pkg:maven/com.google.guava/guava@31.1-jre", "pkg:maven/io.netty/netty-buffer@4.1.79.Final"]


def test_grpc_s_version_is_the_one_version_constant_of_its_class():
    constant = b"\x01\x00\x06" + b"1.50.0"
    assert sbom.grpc_version(b"\xca\xfe" + constant + b"\x01\x00\x03abc") == "1.50.0"
    assert sbom.grpc_version(b"\xca\xfe" + constant + b"\x01\x00\x06" + b"1.51.0") is None  # two: no guess
    assert sbom.grpc_version(b"\x01\x00\x07" + b"1.50.0x") is None  # the length must match


def test_debian_packages_installed_only_with_purls_scanners_match(tmp_path):
    status = tmp_path / "status"
    status.write_text(DPKG_STATUS, encoding="utf-8")
    found = sbom.dpkg_components(status, "debian-12")
    assert [c["purl"] for c in found] == [
        "pkg:deb/debian/haproxy@2.6.12-1+deb12u2?arch=amd64&distro=debian-12",
        "pkg:deb/debian/openjdk-17-jre-headless@17.0.17+10-1~deb12u1?arch=amd64&distro=debian-12",
    ]
    release = tmp_path / "os-release"
    release.write_text('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n', encoding="utf-8")
    assert sbom.distro_of(release) == "debian-12"


def test_the_command_merges_cyclonedx_py_s_sbom_with_the_jar_and_dpkg(tmp_path):
    python_sbom = tmp_path / "python.cdx.json"
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("cyclonedx-py")),
            "environment",
            "--output-reproducible",
            "-o",
            str(python_sbom),
            sys.executable,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    status = tmp_path / "status"
    status.write_text(DPKG_STATUS, encoding="utf-8")
    out = tmp_path / "sbom.cdx.json"
    assert (
        sbom.main(
            [
                "--python-sbom",
                str(python_sbom),
                "--jar",
                str(JAR),
                "--dpkg-status",
                str(status),
                "--name",
                "kor-ner/torchserve",
                "--version",
                "0.12.0-ner1.0",
                "--revision",
                "abc123",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    document = json.loads(out.read_text(encoding="utf-8"))
    assert (
        document["bomFormat"] == "CycloneDX"
        and document["specVersion"] == json.loads(python_sbom.read_text(encoding="utf-8"))["specVersion"]
    )
    assert document["metadata"]["component"]["type"] == "container"
    purls = {c.get("purl", "") for c in document["components"]}
    assert {"pkg:pypi/torchserve@0.12.0", "pkg:pypi/torch@2.13.0%2Bcpu", "pkg:pypi/onnxruntime@1.32.0"} <= purls
    assert "pkg:maven/io.netty/netty-codec-http@4.1.53.Final" in purls
    assert any(p.startswith("pkg:deb/debian/haproxy@") for p in purls)
    refs = [c["bom-ref"] for c in document["components"]]
    assert len(refs) == len(set(refs))  # bom-refs unique, as CycloneDX requires
    assert set(document["dependencies"][0]["dependsOn"]) == set(refs)


def test_no_netty_in_the_jar_fails_the_build(tmp_path):
    jar = tmp_path / "empty.jar"
    with zipfile.ZipFile(jar, "w") as archive:
        archive.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\n")
    python_sbom = tmp_path / "python.cdx.json"
    python_sbom.write_text(json.dumps({"specVersion": "1.6", "components": []}), encoding="utf-8")
    assert (
        sbom.main(
            [
                "--python-sbom",
                str(python_sbom),
                "--jar",
                str(jar),
                "--dpkg-status",
                "/dev/null",
                "--name",
                "x",
                "--version",
                "1",
                "-o",
                str(tmp_path / "out.json"),
            ]
        )
        == 1
    )
    assert not (tmp_path / "out.json").exists()
