"""The layering rules of docs/DESIGN.md, checked on the source: entry points reach runners only
through the registry, and the training stack never tests an environment family's name."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import haml
from haml.envs.registry import env_names
from haml.runners import _RUNNER_CLASSES

PACKAGE = Path(haml.__file__).parent

RUNNER_CLASS_NAMES = {target.split(":")[1] for target in _RUNNER_CLASSES.values()}

FAMILY_BLIND = ["runners", "algorithms", "models", "buffers", "training.py", "evaluation.py"]
"""Modules that must work for every env family alike (a family's specifics live in its adapter
and reach them through the env registry's hooks)."""


def _modules(*parts: str) -> list[Path]:
    found = []
    for part in parts:
        path = PACKAGE / part
        found += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return found


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
        # An attribute docstring: a string statement right after an assignment.
        if hasattr(node, "body") and isinstance(node.body, list):
            for stmt in node.body:
                if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
                    ids.add(id(stmt.value))
    return ids


def _code_words(path: Path) -> set[str]:
    """Identifiers and string constants of ``path``'s code (docstrings and comments left out)."""
    tree = ast.parse(path.read_text(), str(path))
    docs = _docstrings(tree)
    words: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            words.add(node.id)
        elif isinstance(node, ast.Attribute):
            words.add(node.attr)
        elif isinstance(node, ast.alias):
            words.update(node.name.split("."))
        elif isinstance(node, ast.ImportFrom) and node.module:
            words.update(node.module.split("."))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            words.add(node.value)
    return words


@pytest.mark.parametrize(
    "path", [p for p in _modules(".") if "runners" not in p.relative_to(PACKAGE).parts],
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_no_module_outside_runners_names_a_runner_class(path):
    assert not (_code_words(path) & RUNNER_CLASS_NAMES)


@pytest.mark.parametrize("path", _modules(*FAMILY_BLIND), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_training_stack_names_no_env_family(path):
    tokens = {t for word in _code_words(path) for t in re.split(r"[^a-z0-9]+", word.lower())}
    named = set(env_names()) & tokens
    assert not named, f"{path.relative_to(PACKAGE)} names env families {sorted(named)} in its code"


def test_the_checks_see_what_they_look_for(tmp_path):
    """The scanner finds a runner class and a family name in code, and not in a docstring."""
    module = tmp_path / "m.py"
    module.write_text('"""Trains on smax."""\nfrom haml.runners.on_policy import OnPolicyRunner\n'
                      'x = "mamujoco"\n')
    words = _code_words(module)
    assert "OnPolicyRunner" in words and "mamujoco" in words and "Trains on smax." not in words
