"""The image's scripts import flat modules by name from /opt/kor-ner: the Containerfile must copy
every module they import, from container/ and from handler/, and those must need nothing else."""

from __future__ import annotations

import ast
import re
import sys

from serving import paths

FLAT = {p.stem: p for folder in ("container", "handler") for p in (paths.ROOT / folder).glob("*.py")}


def flat_imports(name: str) -> set[str]:
    """The flat modules ``name`` imports, and theirs."""
    seen, todo = set(), [name]
    while todo:
        module = todo.pop()
        tree = ast.parse(FLAT[module].read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
                node.body = []  # annotations only: not imported at run time
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            )
            for found in names:
                top = found.split(".")[0]
                if top in FLAT and top not in seen:
                    seen.add(top)
                    todo.append(top)
    return seen


def test_the_image_copies_every_module_its_scripts_import():
    text = (paths.ROOT / "container" / "Containerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    copied = {
        m.group(1)
        for line in text.splitlines()
        if line.startswith("COPY ") and "--from" not in line
        for m in re.finditer(r"(?:container|handler)/(\w+)\.py", line)
    }
    scripts = {"entrypoint", "healthcheck", "v2_status"}
    needed = scripts | set().union(*(flat_imports(s) for s in scripts))
    assert needed <= copied, sorted(needed - copied)
    assert all(m not in sys.stdlib_module_names for m in needed)
