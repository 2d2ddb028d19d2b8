"""The repository stands on its own: no file refers to one outside it, and every
relative link in the documentation points at a file that exists."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def tracked_files() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return [ROOT / name for name in out.splitlines() if (ROOT / name).is_file()]


def test_no_file_refers_outside_the_repository() -> None:
    outside = re.compile(r"\.\./shared|\bDESIGN\.md\b|\bSTYLE\.md\b")
    offenders = []
    for path in tracked_files():
        if path.suffix in {".png", ".ico", ".woff2"} or path.name == "package-lock.json":
            continue
        text = path.read_text(errors="replace")
        offenders += [f"{path.relative_to(ROOT)}:{m.group()}" for m in outside.finditer(text)]
    assert offenders == []


def test_relative_links_in_the_docs_resolve() -> None:
    link = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
    broken = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in link.findall(doc.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(ROOT)} -> {target}")
    assert broken == []


def test_the_design_lists_a_guarding_test_for_every_invariant() -> None:
    """Each numbered invariant names at least one test, and every named test exists."""
    design = (ROOT / "docs" / "design.md").read_text()
    section = design.split("## Invariants", 1)[1].split("\n## ", 1)[0]
    invariants = re.split(r"^\d+\. \*\*", section, flags=re.M)[1:]
    assert len(invariants) >= 11
    for text in invariants:
        title = text.split("**", 1)[0]
        named = re.findall(
            r"`((?:tests|syncline/static/test)/[\w/.]+?\.(?:py|js))::(\w+(?:::\w+)*)", text
        )
        assert named, f"invariant {title!r} names no test"
        for path, dotted in named:
            assert (ROOT / path).exists(), path
            source = (ROOT / path).read_text()
            for test in dotted.split("::"):  # a class and its method: both must exist
                assert re.search(rf"((def|class) {test}\b|test\([\"']{test}[\"'])", source) or (
                    test in source
                ), f"{path}::{dotted}: {test} does not exist"
