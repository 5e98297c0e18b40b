"""The lock files (requirements*.txt): fresh against their requirements*.in, every package pinned
and hashed, torch's CPU build pinned to one file, and every install command of the project
installing only hashed pins from one index. Offline: nothing here asks an index
(``scripts/lock.py --check`` does, where one is reachable)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from serving import locks, paths

INSTALLERS = ["scripts/setup.sh", "container/Containerfile", "scripts/scan.sh"]
LOCK = {lock.output: lock for lock in locks.LOCKS}


def entries_of(output: str, root: Path = paths.ROOT) -> dict[str, tuple[str, int]]:
    return locks.locked((root / output).read_text(encoding="utf-8"))


def copy_of_the_requirements(tmp_path: Path) -> Path:
    for path in paths.ROOT.glob("requirements*.*"):
        shutil.copy(path, tmp_path / path.name)
    return tmp_path


@pytest.mark.parametrize("lock", locks.LOCKS, ids=lambda lock: lock.output)
def test_every_lock_is_fresh_holds_its_direct_pins_and_hashes_every_package(lock):
    assert locks.problems(lock) == []
    entries = locks.locked((paths.ROOT / lock.output).read_text(encoding="utf-8"))
    print(f"\n{lock.output}: {len(entries)} packages pinned, {sum(h for _, h in entries.values())} hashes")
    assert len(entries) > len(locks.direct_pins(paths.ROOT / lock.source))  # the transitive ones too


def test_the_narrower_locks_agree_with_the_wider_ones():
    test, runtime, serve = (
        entries_of(name) for name in ("requirements-test.txt", "requirements.txt", "requirements-serve.txt")
    )
    assert serve.keys() <= runtime.keys() <= test.keys()
    assert all(runtime[name][0] == test[name][0] for name in runtime)
    assert all(serve[name][0] == runtime[name][0] for name in serve)
    # what the image's runtime leaves out: the packaging tools (and pip: its venv is made without)
    assert not {"torch-model-archiver", "onnx", "cyclonedx-bom", "pip", "pytest"} & serve.keys()


def test_torch_is_the_cpu_build_pinned_to_one_file():
    for output in ("requirements-test.txt", "requirements.txt", "requirements-serve.txt"):
        entries = entries_of(output)
        assert entries["torch"] == ("2.13.0+cpu", 1), output
        assert not any(name.startswith("nvidia-") for name in entries)  # no CUDA build's packages


def test_a_changed_in_file_makes_the_locks_made_from_it_stale(tmp_path):
    root = copy_of_the_requirements(tmp_path)
    assert all(locks.problems(lock, root) == [] for lock in locks.LOCKS)
    with (root / "requirements-serve.in").open("a", encoding="utf-8") as f:
        f.write("tomli==2.2.1\n")
    # requirements-serve.in is included by the two wider .in files: all three are stale
    for output in ("requirements-test.txt", "requirements.txt", "requirements-serve.txt"):
        problems = locks.problems(LOCK[output], root)
        assert any("is stale" in p for p in problems), (output, problems)
        assert any("does not hold tomli==2.2.1" in p for p in problems), (output, problems)


def test_a_stale_constraint_makes_the_narrower_lock_stale(tmp_path):
    root = copy_of_the_requirements(tmp_path)
    wider = root / "requirements-test.txt"
    wider.write_text(wider.read_text(encoding="utf-8").replace("pytest==9.0.3", "pytest==9.0.2"), encoding="utf-8")
    test, runtime, serve = (
        locks.problems(LOCK[name], root)
        for name in ("requirements-test.txt", "requirements.txt", "requirements-serve.txt")
    )
    assert any("does not hold pytest==9.0.3" in p for p in test)
    assert any("is stale" in p for p in runtime) and serve == []


def test_a_package_without_a_hash_is_refused(tmp_path):
    root = copy_of_the_requirements(tmp_path)
    lock = root / "requirements-serve.txt"
    text = lock.read_text(encoding="utf-8")
    # the last package of the lock loses its hashes
    entries = re.finditer(r"^(\S+)==(\S+) \\\n(    --hash=sha256:\w+(?: \\)?\n)+", text, re.M)
    last = max(entries, key=lambda m: m.start())
    lock.write_text(text[: last.start()] + f"{last.group(1)}=={last.group(2)}\n" + text[last.end() :], encoding="utf-8")
    name = locks.canonical(last.group(1))
    assert f"requirements-serve.txt: {name} has no hash" in locks.problems(LOCK["requirements-serve.txt"], root)


@pytest.mark.parametrize("installer", INSTALLERS)
def test_every_install_takes_only_hashed_pins_from_one_index(installer):
    text = (paths.ROOT / installer).read_text(encoding="utf-8").replace("\\\n", " ")
    installs = [
        line for line in text.splitlines() if re.search(r"pip\S* install\b", line) and not line.lstrip().startswith("#")
    ]
    assert installs, f"no pip install in {installer}"
    for line in installs:
        assert "--extra-index-url" not in line, line
        if "-e ." in line:  # this project, editable: no dependencies, the lock's build backend
            assert "--no-deps" in line and "--no-build-isolation" in line, line
        else:
            assert "--require-hashes" in line, line
            assert re.search(r"-r \"?\S*(requirements[\w-]*\.txt|\$requirements)", line), line


def test_ci_installs_python_packages_only_through_setup():
    ci = (paths.ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert not re.search(r"^[^#]*pip\S* install", ci, re.M)  # none of its own
    assert re.search(r"^scripts/test\.sh\b", ci, re.M)
    test_sh = (paths.ROOT / "scripts" / "test.sh").read_text(encoding="utf-8")
    assert re.search(r"^setup=\(--test\)$", test_sh, re.M) and re.search(r"^scripts/setup\.sh ", test_sh, re.M)


def test_the_image_s_base_is_named_by_digest_in_one_place():
    containerfile = (paths.ROOT / "container" / "Containerfile").read_text(encoding="utf-8")
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", containerfile, re.M)
    assert base and re.fullmatch(r"docker\.io/library/python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}", base.group(1))
    texts = [*paths.ROOT.glob("*.md"), *paths.ROOT.glob("docs/*.md"), *paths.ROOT.glob("config/**/*.yaml")]
    assert not [p for p in texts if "slim-bookworm@" in p.read_text(encoding="utf-8")]  # no second copy
    readme = (paths.ROOT / "README.md").read_text(encoding="utf-8")
    builds = [line for line in readme.splitlines() if line.startswith("podman build")]
    assert builds and not any("BASE_IMAGE" in line for line in builds)  # it takes the Containerfile's
