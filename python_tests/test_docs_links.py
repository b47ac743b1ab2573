"""Every link and file name the project gives a reader leads to something in the repository.

- Markdown: every relative link ``[text](path#anchor)`` resolves to a file or directory inside the
  repository, and the anchor, where the target is Markdown, to one of its headings; every ``*.md``
  named in the text (inline code or prose, outside fenced code blocks) exists.
- Python, YAML, TOML, shell and C++ files: every ``*.md`` they name exists.

A name resolves relative to the file that names it, or to the repository root. Nothing may point
outside the repository: the project must stand alone.
"""

from __future__ import annotations

import re
import subprocess
import unicodedata
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP_DIRS = {".git", ".venv", "build", "dist", "runs", "bench-results", "__pycache__",
             ".pytest_cache", ".whl", ".gl", "node_modules"}
CODE_SUFFIXES = {".py", ".pyi", ".yaml", ".yml", ".toml", ".sh", ".cpp", ".h", ".cu", ".cuh", ".txt"}

LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
MD_NAME = re.compile(r"(?<![\w./-])((?:\.\.?/)*[\w.-]+(?:/[\w.-]+)*\.md)\b(?!/)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")


def _project_files() -> list[Path]:
    """The repository's files: git's list where this is a checkout, else a walk."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout.split("\n")
        files = [ROOT / name for name in listed if name]
    except (OSError, subprocess.CalledProcessError):
        files = [p for p in ROOT.rglob("*") if p.is_file()]
    return sorted(
        p for p in files
        if p.is_file() and not SKIP_DIRS.intersection(p.relative_to(ROOT).parts)
    )


FILES = _project_files()
MARKDOWN = [p for p in FILES if p.suffix == ".md"]
CODE = [p for p in FILES if p.suffix in CODE_SUFFIXES]


def _prose_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of a Markdown file outside fenced code blocks."""
    lines, fenced = [], False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line))
    return lines


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation removed, spaces -> '-'."""
    text = re.sub(r"`([^`]*)`", r"\1", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = text.strip().lower()
    kept = "".join(
        ch for ch in text
        if ch in " -_" or unicodedata.category(ch)[0] in "LN"
    )
    return kept.replace(" ", "-")


@cache
def _anchors(path: Path) -> frozenset[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for _, line in _prose_lines(path):
        match = HEADING.match(line)
        if match:
            slug = _slug(match.group(2))
            anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return frozenset(anchors)


def _resolve(name: str, source: Path) -> Path | None:
    """The path ``name`` refers to from ``source``, if it exists inside the repository."""
    for base in (source.parent, ROOT):
        target = (base / name).resolve()
        if target.exists() and target.is_relative_to(ROOT):
            return target
    return None


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("path", MARKDOWN, ids=_rel)
def test_markdown_links_resolve(path: Path) -> None:
    broken = []
    for number, line in _prose_lines(path):
        for target in LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
                continue
            name, _, anchor = target.partition("#")
            resolved = path if not name else _resolve(name, path)
            if resolved is None:
                broken.append(f"{_rel(path)}:{number}: {target} does not exist in the repository")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
                broken.append(f"{_rel(path)}:{number}: {target}: no heading #{anchor} in {_rel(resolved)}")
        for name in MD_NAME.findall(LINK.sub("", line)):
            if _resolve(name, path) is None:
                broken.append(f"{_rel(path)}:{number}: names {name}, which is not in the repository")
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize("path", CODE, ids=_rel)
def test_markdown_files_named_in_code_and_configs_exist(path: Path) -> None:
    broken = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        for name in MD_NAME.findall(line):
            if _resolve(name, path) is None:
                broken.append(f"{_rel(path)}:{number}: names {name}, which is not in the repository")
    assert not broken, "\n".join(broken)


def test_the_checks_see_the_documents() -> None:
    assert ROOT / "README.md" in MARKDOWN and ROOT / "docs/DESIGN.md" in MARKDOWN
    assert any(p.suffix == ".yaml" for p in CODE) and ROOT / "haml" / "cli.py" in CODE
    assert _slug("Dispatch: what runs") == "dispatch-what-runs"
    assert _slug("`haml.ops`, the kernels") == "hamlops-the-kernels"
