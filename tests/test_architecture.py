"""The house rules of the four rooms, read off the source: which room imports what, that
Optuna's private API is reached from one module only, and that modules and functions stay
small enough to read."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lrsweep"
MODULES = sorted(p for p in PACKAGE.rglob("*.py"))

# room → (third-party packages it must not import, rooms of ours it must not import)
RULES = {
    "train": ({"optuna", "sqlalchemy", "pandas", "seaborn", "matplotlib"},
              {"search", "store", "report", "cli", "cli_errors", "cli_options", "tables", "progress", "bench"}),
    "search": ({"torch", "torchvision", "pandas", "seaborn", "matplotlib"},
               {"report", "cli", "cli_errors", "cli_options", "progress", "bench"}),
    "store": ({"torch", "torchvision", "pandas", "seaborn", "matplotlib"},
              {"train", "search", "report", "cli", "cli_errors", "cli_options", "progress", "bench"}),
    "report": ({"torch", "torchvision"}, {"train", "cli", "cli_errors", "cli_options", "progress", "bench"}),
    "schedules": ({"torch", "optuna", "numpy", "pandas"}, {"train", "search", "store", "report"}),
    "outcomes": ({"torch", "optuna", "numpy", "pandas"}, {"train", "search", "store", "report"}),
    "numbers": ({"torch", "optuna", "numpy", "pandas"}, {"train", "search", "store", "report"}),
    "names": ({"torch", "optuna", "numpy", "pandas"}, {"train", "search", "store", "report"}),
    "atomic": ({"torch", "optuna", "numpy", "pandas"}, {"train", "search", "store", "report"}),
}
PRIVATE_DOOR = PACKAGE / "store" / "optuna_private.py"
# Reaching into Optuna: its private modules, and the private attributes of its objects.
PRIVATE = re.compile(r"optuna\.[\w.]*\._\w+|\._storage\b|\._trial_id\b|\._study_id\b|"
                     r"_thread_local|_tell_with_warning|\._backend\b|storages\._rdb")
MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 60


def room(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else path.stem


def imports(path: Path) -> set[str]:
    """Every module the file imports, at the top or inside functions, as dotted names."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_each_room_imports_only_what_it_may(path):
    rule = RULES.get(room(path))
    if rule is None:
        return  # cli, tables, progress, bench: the commands' own, they may import anything
    banned_packages, banned_rooms = rule
    found = imports(path)
    assert not {name.split(".")[0] for name in found} & banned_packages
    ours = {name.split(".")[1] for name in found
            if name.startswith("lrsweep.") and len(name.split(".")) > 1}
    assert not ours & banned_rooms


def test_every_room_is_checked():
    rooms = {room(p) for p in MODULES} - {"__init__", "__main__", "cli", "cli_errors", "cli_options", "tables",
                                          "progress", "bench"}
    assert rooms == set(RULES)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_optunas_private_api_is_reached_from_one_module(path):
    if path == PRIVATE_DOOR:
        return
    code = "\n".join(line for line in path.read_text().splitlines()
                     if not line.lstrip().startswith("#"))
    assert PRIVATE.findall(code) == []


def test_the_private_door_does_reach_in():
    # Not vacuous: the pattern above finds what the one module does.
    assert PRIVATE.findall(PRIVATE_DOOR.read_text())


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_and_functions_stay_small(path):
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_MODULE_LINES
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            assert node.end_lineno - node.lineno + 1 <= MAX_FUNCTION_LINES, node.name


def test_the_command_line_starts_without_the_heavy_packages():
    """`lrsweep --help`, a mistyped option and every command's first line come before torch,
    Optuna or pandas are imported: each command imports what it needs when it runs."""
    import subprocess
    import sys

    code = ("import sys, lrsweep.cli; print(sorted(m for m in ('torch', 'optuna', 'sqlalchemy', "
            "'pandas', 'matplotlib') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=PACKAGE.parent, timeout=120)
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr
