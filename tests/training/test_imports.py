"""Trainers take rows; tasks make them: nothing under tsllm/training/ imports a task or one task's env."""

from __future__ import annotations

import ast
from pathlib import Path

TRAINING = Path(__file__).resolve().parents[2] / "tsllm" / "training"
GENERIC_ENV = {"tsllm.envs.base"}  # the env interfaces every task shares (DataError, TextEnv, ...)


def imported(tree: ast.AST) -> list[str]:
    """Every module an import statement names, anywhere in the file (function bodies too), with
    `from a import b` read as both `a` and `a.b` (b may be a module)."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def forbidden(module: str) -> bool:
    if module == "tsllm.tasks" or module.startswith("tsllm.tasks."):
        return True
    if module.startswith("tsllm.envs."):  # a task's env; the shared base is fine
        return not any(module == g or module.startswith(g + ".") for g in GENERIC_ENV)
    return False


def test_training_imports_no_task():
    files = sorted(TRAINING.glob("*.py"))
    assert files
    bad = {f.name: [m for m in imported(ast.parse(f.read_text())) if forbidden(m)] for f in files}
    assert not {k: v for k, v in bad.items() if v}, bad


def test_the_check_sees_every_kind_of_import():
    code = "import tsllm.tasks\nfrom tsllm import tasks\ndef f():\n    from tsllm.envs.game24 import solve\n" \
           "from tsllm.envs import prontoqa\nfrom tsllm.envs.base import DataError\n"
    found = sorted(m for m in imported(ast.parse(code)) if forbidden(m))
    assert found == ["tsllm.envs.game24", "tsllm.envs.game24.solve", "tsllm.envs.prontoqa", "tsllm.tasks",
                     "tsllm.tasks"]
