"""The lock files: every package the project installs, pinned and hashed, made from the readable
``requirements*.in`` by ``uv pip compile --generate-hashes`` (docs/supply-chain.md).

Three locks, each a complete install on its own (``pip install --require-hashes -r <lock>``):
``requirements-test.txt`` (everything: the tests too), ``requirements.txt`` (serving, packaging and
the scripts: the image's build stage, ``scripts/setup.sh``) and ``requirements-serve.txt`` (what
the running image serves with). The widest is resolved first and each narrower one with the one
before it as a constraint, so a package has one version in all three: the image ships what the
tests ran with. A lock's header records the SHA-256 of everything it was made from (its ``.in``, the
``.in`` files that one includes, the lock it is constrained by, the compile options): :func:`stale`
compares that offline, without asking an index.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from serving import paths

UV_VERSION = "0.13.8"  # the lock tool, pinned in requirements-test.in
PYTHON_VERSION = "3.11"  # the image's (Debian bookworm's python3) and CI's
PLATFORM = "x86_64-manylinux_2_28"
INDEX_URL = "https://pypi.org/simple"  # the one index; PIP_INDEX_URL / UV_INDEX_URL may name a mirror of it
# torch's CPU build is not on PyPI: PyTorch's page for torch alone (a page of links, not an index:
# no other package can come from it). Its hash in the lock admits exactly one file.
TORCH_LINKS = "https://download.pytorch.org/whl/cpu/torch/"
OPTIONS = [
    "--generate-hashes",
    "--python-version",
    PYTHON_VERSION,
    "--python-platform",
    PLATFORM,
    "--no-header",
    "--no-annotate",
]
DIGEST_LINE = "# inputs-sha256: "


@dataclass(frozen=True)
class Lock:
    source: str  # the readable .in
    output: str  # the lock, every package pinned and hashed
    constraint: str | None  # the lock this one must agree with


LOCKS = [
    Lock("requirements-test.in", "requirements-test.txt", None),
    Lock("requirements.in", "requirements.txt", "requirements-test.txt"),
    Lock("requirements-ray.in", "requirements-ray.txt", "requirements-test.txt"),  # the corpus job's --ray way
    Lock("requirements-serve.in", "requirements-serve.txt", "requirements.txt"),
    Lock("requirements-scan.in", "requirements-scan.txt", None),  # checkov, in its own venv (scripts/scan.sh)
]


class LockError(Exception):
    """The lock tool is missing or failed; the message says what to do."""


def included(source: Path) -> list[Path]:
    """``source`` and every ``.in`` it includes with ``-r``, depth first, each once."""
    found: list[Path] = []

    def visit(path: Path) -> None:
        if path in found:
            return
        found.append(path)
        for line in path.read_text(encoding="utf-8").splitlines():
            match = re.match(r"\s*-r\s+(\S+)", line)
            if match:
                visit((path.parent / match.group(1)).resolve())

    visit(source.resolve())
    return found


def inputs_digest(lock: Lock, root: Path = paths.ROOT, locks_dir: Path | None = None) -> str:
    """SHA-256 of what ``lock`` is made from: the compile options, its ``.in`` files, its
    constraint (read from ``locks_dir``, default ``root``)."""
    digest = hashlib.sha256(" ".join([UV_VERSION, INDEX_URL, *OPTIONS]).encode())
    for path in included(root / lock.source):
        digest.update(f"\n{path.relative_to(root.resolve())}\n".encode() + path.read_bytes())
    if lock.constraint:
        digest.update(f"\n{lock.constraint}\n".encode() + ((locks_dir or root) / lock.constraint).read_bytes())
    return digest.hexdigest()


def canonical(name: str) -> str:
    """A distribution name as PEP 503 compares it, extras dropped."""
    return re.sub(r"[-_.]+", "-", name.split("[")[0]).lower()


def direct_pins(source: Path) -> dict[str, str]:
    """name -> version of every ``name==version`` line in ``source`` and the ``.in`` files it includes."""
    pins = {}
    for path in included(source):
        for line in path.read_text(encoding="utf-8").splitlines():
            match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*(?:\[[^\]]*\])?)==(\S+)", line)
            if match:
                pins[canonical(match.group(1))] = match.group(2)
    return pins


def locked(text: str) -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes) of every requirement in a lock's text."""
    entries: dict[str, tuple[str, int]] = {}
    name = ""
    for line in text.splitlines():
        match = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*(?:\[[^\]]*\])?)==(\S+)", line)
        if match:
            name = canonical(match.group(1))
            entries[name] = (match.group(2), 0)
        elif line.strip().startswith("--hash=sha256:") and name:
            version, hashes = entries[name]
            entries[name] = (version, hashes + 1)
        elif line.strip() and not line.startswith("#"):
            raise ValueError(f"unexpected line in a lock: {line!r}")
    return entries


def problems(lock: Lock, root: Path = paths.ROOT) -> list[str]:
    """Why ``lock`` cannot be installed as it is (offline): stale against its inputs, a direct pin
    it does not hold, a package without a hash. Empty when it is good."""
    output = root / lock.output
    if not output.is_file():
        return [f"{lock.output} is missing: run scripts/lock.py"]
    text = output.read_text(encoding="utf-8")
    found = []
    recorded = next(
        (line.removeprefix(DIGEST_LINE).strip() for line in text.splitlines() if line.startswith(DIGEST_LINE)), None
    )
    if recorded != inputs_digest(lock, root):
        found.append(
            f"{lock.output} is stale against {lock.source} (or what it includes, or {lock.constraint}): "
            "run scripts/lock.py"
        )
    entries = locked(text)
    for name, version in direct_pins(root / lock.source).items():
        if entries.get(name, ("", 0))[0] != version:
            found.append(f"{lock.output} does not hold {name}=={version} from {lock.source}")
    found += [f"{lock.output}: {name} has no hash" for name, (_, hashes) in entries.items() if hashes == 0]
    return found


def header(lock: Lock, digest: str) -> str:
    return (
        f"# {lock.output}: the lock of {lock.source}, every package pinned and hashed"
        f"{f', in step with {lock.constraint}' if lock.constraint else ''}.\n"
        "# Made by scripts/lock.py (uv pip compile --generate-hashes); do not edit: change the .in and rerun it.\n"
        "# Install: pip install --require-hashes -r " + lock.output + " (docs/supply-chain.md).\n"
        f"{DIGEST_LINE}{digest}\n"
    )


def uv() -> str:
    """The pinned lock tool: the venv's uv (requirements-test.in), or one on PATH of the same version."""
    for candidate in (str(Path(sys.executable).with_name("uv")), shutil.which("uv")):
        if candidate and Path(candidate).is_file():
            version = subprocess.run(
                [candidate, "--version"], capture_output=True, text=True, check=False
            ).stdout.split()
            if version[1:2] == [UV_VERSION]:
                return candidate
    raise LockError(f"uv {UV_VERSION} not found: scripts/setup.sh --test installs it (pip install uv=={UV_VERSION})")


def torch_links() -> list[str]:
    """Where torch's CPU build is found: ``KOR_NER_TORCH_LINKS`` (space-separated) if set; else the
    find-links of pip's own config that hold a ``torch-*+cpu-*.whl`` (a local wheel cache, as on
    machines without a route to PyTorch's page); else PyTorch's page (:data:`TORCH_LINKS`)."""
    if os.environ.get("KOR_NER_TORCH_LINKS"):
        return os.environ["KOR_NER_TORCH_LINKS"].split()
    done = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False)
    local = []
    for line in done.stdout.splitlines():
        match = re.fullmatch(r"[^.]*\.find-links='(.*)'", line.strip())
        for link in match.group(1).split() if match else []:
            if link not in local and Path(link).is_dir() and any(Path(link).glob("torch-*+cpu-*.whl")):
                local.append(link)
    return local or [TORCH_LINKS]


def compile_lock(lock: Lock, root: Path, into: Path, links: list[str]) -> None:
    """Write ``lock``'s lock under ``into`` (its constraint read from ``into`` too)."""
    command = [
        uv(),
        "pip",
        "compile",
        *OPTIONS,
        "--index-url",
        os.environ.get("UV_INDEX_URL", INDEX_URL),
        *(arg for link in links for arg in ("--find-links", link)),
        *(["--constraint", str(into / lock.constraint)] if lock.constraint else []),
        "-o",
        str(into / lock.output),
        lock.source,
    ]
    done = subprocess.run(command, cwd=root, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise LockError(f"uv pip compile {lock.source} failed:\n{done.stderr.strip()[-3000:]}")
    output = into / lock.output
    output.write_text(
        header(lock, inputs_digest(lock, root, into)) + output.read_text(encoding="utf-8"), encoding="utf-8"
    )


def lock_all(root: Path = paths.ROOT, check: bool = False) -> list[str]:
    """Remake every lock from its ``.in`` (asks the index). ``check``: write nothing, and return
    the locks whose fresh resolution differs from the checked-in one."""
    links = torch_links()
    with tempfile.TemporaryDirectory() as scratch:
        into = Path(scratch) if check else root
        for lock in LOCKS:
            compile_lock(lock, root, into, links)
        if check:
            return [
                lock.output for lock in LOCKS if (into / lock.output).read_bytes() != (root / lock.output).read_bytes()
            ]
    return []
