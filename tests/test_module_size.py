"""House limits on size: a module holds one concern (at most 400 lines), and the engine's functions read on
one screen or two (at most 80 lines)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80

def _modules(*packages: str) -> list[str]:
    return sorted(
        path.relative_to(PROJECT).as_posix() for p in packages for path in (PROJECT / p).rglob("*.py")
    )


@pytest.mark.parametrize("module", _modules("llmkick_models", "llmkick_tasks"))
def test_module_has_at_most_400_lines(module: str) -> None:
    lines = len((PROJECT / module).read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{module}: {lines} lines; split it by concern"


@pytest.mark.parametrize("module", _modules("llmkick_models/engine"))
def test_engine_functions_have_at_most_80_lines(module: str) -> None:
    tree = ast.parse((PROJECT / module).read_text())
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{module}: {', '.join(long)}; split them"
