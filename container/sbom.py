"""The image's SBOM, CycloneDX JSON: the Python packages (cyclonedx-py's SBOM of the image's
virtual environment, taken as it is), the Debian packages (dpkg's status file) and the Java
libraries bundled inside TorchServe's frontend jar, read from the jar's own metadata:
``META-INF/maven/*/*/pom.properties``, ``META-INF/io.netty.versions.properties`` (Netty),
``META-INF/DEPENDENCIES`` and, for gRPC-Java (which records its version in no metadata file),
``io/grpc/internal/GrpcUtil.class``'s ``IMPLEMENTATION_VERSION`` constant.

Run at build time by container/Containerfile (standard library only); docs/supply-chain.md.

    python3 container/sbom.py --python-sbom python.cdx.json --jar .../ts/frontend/model-server.jar \\
        --dpkg-status /var/lib/dpkg/status --name kor-ner/torchserve --version 0.12.0-ner1.0 -o sbom.cdx.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
import uuid
import zipfile
from pathlib import Path
from typing import Any

NETTY_VERSIONS = "META-INF/io.netty.versions.properties"
GRPC_VERSION_CLASS = "io/grpc/internal/GrpcUtil.class"
# gRPC-Java's artifacts, by the package each one's classes live in (the jar merges them all)
GRPC_ARTIFACTS = {
    "grpc-api": "io/grpc/Status.class",
    "grpc-core": "io/grpc/internal/GrpcUtil.class",
    "grpc-netty-shaded": "io/grpc/netty/shaded/io/grpc/netty/NettyServerBuilder.class",
    "grpc-protobuf": "io/grpc/protobuf/ProtoUtils.class",
    "grpc-stub": "io/grpc/stub/StreamObserver.class",
    "grpc-services": "io/grpc/services/HealthStatusManager.class",
}

Component = dict[str, Any]


def properties(text: str) -> dict[str, str]:
    """key -> value of a Java properties text (the simple form these metadata files use)."""
    found = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", "!")) and "=" in line:
            key, value = line.split("=", 1)
            found[key.strip()] = value.strip().replace("\\:", ":")
    return found


def maven(group: str, name: str, version: str, source: str) -> Component:
    purl = f"pkg:maven/{group}/{name}@{version}"
    return {
        "type": "library",
        "bom-ref": purl,
        "group": group,
        "name": name,
        "version": version,
        "purl": purl,
        "properties": [{"name": "kor-ner:found-in", "value": source}],
    }


def jar_components(jar: Path) -> list[Component]:
    """The Java libraries bundled in ``jar``, each with the metadata file it was read from."""
    found: dict[str, Component] = {}
    with zipfile.ZipFile(jar) as archive:
        names = set(archive.namelist())
        where = f"{jar.name}!/"
        for name in sorted(n for n in names if re.fullmatch(r"META-INF/maven/[^/]+/[^/]+/pom\.properties", n)):
            pom = properties(archive.read(name).decode("utf-8", "replace"))
            if {"groupId", "artifactId", "version"} <= pom.keys():
                c = maven(pom["groupId"], pom["artifactId"], pom["version"], where + name)
                found[c["bom-ref"]] = c
        if NETTY_VERSIONS in names:
            netty = properties(archive.read(NETTY_VERSIONS).decode("utf-8", "replace"))
            for key, version in sorted(netty.items()):
                artifact = key.removesuffix(".version")
                if key.endswith(".version") and artifact.startswith("netty-"):
                    c = maven("io.netty", artifact, version, where + NETTY_VERSIONS)
                    found[c["bom-ref"]] = c
        if "META-INF/DEPENDENCIES" in names:
            text = archive.read("META-INF/DEPENDENCIES").decode("utf-8", "replace")
            for group, artifact, version in re.findall(r"\s([\w.-]+):([\w.-]+):jar:([\w.-]+)\s", text):
                c = maven(group, artifact, version, where + "META-INF/DEPENDENCIES")
                found.setdefault(c["bom-ref"], c)
        if GRPC_VERSION_CLASS in names:
            grpc = grpc_version(archive.read(GRPC_VERSION_CLASS))
            for artifact, marker in GRPC_ARTIFACTS.items():
                if grpc and marker in names:
                    c = maven("io.grpc", artifact, grpc, where + GRPC_VERSION_CLASS)
                    found[c["bom-ref"]] = c
    return list(found.values())


def grpc_version(class_bytes: bytes) -> str | None:
    """gRPC-Java's version: the one version-shaped string constant in GrpcUtil.class (its
    ``IMPLEMENTATION_VERSION``), found as a CONSTANT_Utf8 entry (tag 1, two-byte length)."""
    found = re.finditer(rb"\x01\x00(.)(\d+\.\d+\.\d+(?:-SNAPSHOT)?)", class_bytes, re.S)
    versions = {m.group(2).decode() for m in found if m.group(1)[0] == len(m.group(2))}
    return versions.pop() if len(versions) == 1 else None


def dpkg_components(status: Path, distro: str) -> list[Component]:
    """Every installed Debian package of dpkg's ``status`` file, with a purl scanners match on."""
    found = []
    for stanza in status.read_text(encoding="utf-8", errors="replace").split("\n\n"):
        fields = dict(re.findall(r"^([A-Za-z-]+): ?(.*)$", stanza, re.M))
        if "Package" not in fields or not fields.get("Status", "").endswith(" installed"):
            continue
        name, version, arch = fields["Package"], fields["Version"], fields.get("Architecture", "all")
        purl = f"pkg:deb/debian/{name}@{version}?arch={arch}&distro={distro}"
        c: Component = {"type": "library", "bom-ref": purl, "name": name, "version": version, "purl": purl}
        if "Source" in fields:
            c["properties"] = [{"name": "kor-ner:deb-source", "value": fields["Source"]}]
        found.append(c)
    return found


def distro_of(os_release: Path) -> str:
    """``debian-12`` for bookworm, from os-release's ID and VERSION_ID."""
    fields = dict(re.findall(r'^(\w+)="?([^"\n]*)"?$', os_release.read_text(encoding="utf-8"), re.M))
    return f"{fields.get('ID', 'debian')}-{fields.get('VERSION_ID', '')}".rstrip("-")


def local(component: Component) -> bool:
    """Installed from a local folder (an editable checkout): no package an index could name."""
    return any(r.get("comment") == "PackageSource: Local" for r in component.get("externalReferences", []))


def sbom(
    python_sbom: dict[str, Any], jar: Path, dpkg_status: Path, distro: str, name: str, version: str, revision: str = ""
) -> dict[str, Any]:
    """One CycloneDX document of the image: the Python SBOM's components and dependencies, plus
    the jar's Java libraries and the Debian packages."""
    python = [
        {
            **c,
            **({} if "purl" in c or local(c) else {"purl": f"pkg:pypi/{c['name'].lower()}@{c['version']}"}),
            "properties": [*c.get("properties", []), {"name": "kor-ner:layer", "value": "python"}],
        }
        for c in python_sbom.get("components", [])
    ]
    java, debian = jar_components(jar), dpkg_components(dpkg_status, distro)
    image: Component = {"type": "container", "bom-ref": f"image:{name}@{version}", "name": name, "version": version}
    if revision:
        image["properties"] = [{"name": "org.opencontainers.image.revision", "value": revision}]
    tools = python_sbom.get("metadata", {}).get("tools", {})
    own_tool = {"type": "application", "name": "kor-ner container/sbom.py"}
    return {
        "bomFormat": "CycloneDX",
        "specVersion": python_sbom.get("specVersion", "1.6"),
        "serialNumber": f"urn:uuid:{uuid.uuid4()}",
        "version": 1,
        "metadata": {
            "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "tools": {"components": [*(tools.get("components", []) if isinstance(tools, dict) else []), own_tool]},
            "component": image,
        },
        "components": [*python, *java, *debian],
        "dependencies": [
            {"ref": image["bom-ref"], "dependsOn": [c["bom-ref"] for c in [*python, *java, *debian]]},
            *(
                d
                for d in python_sbom.get("dependencies", [])
                if d.get("ref") != python_sbom.get("metadata", {}).get("component", {}).get("bom-ref")
            ),
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python-sbom", type=Path, required=True, help="cyclonedx-py environment's JSON")
    parser.add_argument("--jar", type=Path, required=True, help="TorchServe's frontend jar (ts/frontend/)")
    parser.add_argument("--dpkg-status", type=Path, default=Path("/var/lib/dpkg/status"))
    parser.add_argument("--os-release", type=Path, default=Path("/etc/os-release"))
    parser.add_argument("--name", required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--revision", default="")
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)
    python_sbom = json.loads(args.python_sbom.read_text(encoding="utf-8"))
    document = sbom(
        python_sbom, args.jar, args.dpkg_status, distro_of(args.os_release), args.name, args.version, args.revision
    )
    if not any(c.get("group") == "io.netty" for c in document["components"]):
        print(f"sbom: no Netty found in {args.jar}", file=sys.stderr)
        return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    kinds = {
        "python": len(python_sbom.get("components", [])),
        "java": sum(1 for c in document["components"] if c.get("purl", "").startswith("pkg:maven/")),
        "debian": sum(1 for c in document["components"] if c.get("purl", "").startswith("pkg:deb/")),
    }
    print(f"sbom: {args.output}: " + ", ".join(f"{n} {k}" for k, n in kinds.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
