"""The three layers (``DESIGN.md``): the library and the experiments never parse arguments, print,
switch precision or import the CLI; the library does not import the experiments at import time;
no star-imports. Read from the source (AST), so docstrings and messages do not count."""

from __future__ import annotations

import ast
import pathlib

import pytest

PKG = pathlib.Path(__file__).resolve().parents[1] / "ufm"
# __main__.py is the CLI's entry point (``python -m ufm``)
MODULES = sorted(p for p in PKG.rglob("*.py") if "cli" not in p.relative_to(PKG).parts and p.name != "__main__.py")
LIBRARY_DIRS = {"curvature", "theory", "networks", "dynamics"}


def _dotted(node) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _problems(path: pathlib.Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    rel = path.relative_to(PKG)
    library = len(rel.parts) == 1 or rel.parts[0] in LIBRARY_DIRS
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [("." * node.level) + (node.module or "")]
            if any(a.name == "*" for a in node.names):
                out.append(f"line {node.lineno}: star-import")
        else:
            names = []
        for name in names:
            if name == "argparse":
                out.append(f"line {node.lineno}: imports argparse")
            if name.lstrip(".") == "cli" or name.endswith(".cli") or name.startswith(("ufm.cli", "..cli", ".cli")):
                out.append(f"line {node.lineno}: imports the CLI ({name})")
        if isinstance(node, ast.Call):
            fn = _dotted(node.func)
            if fn == "print":
                out.append(f"line {node.lineno}: print()")
            if fn.endswith("config.update") and any(
                isinstance(a, ast.Constant) and a.value == "jax_enable_x64" for a in node.args
            ):
                out.append(f"line {node.lineno}: switches precision")
    if library:
        for node in tree.body:  # module level only: a function may import what it returns
            if isinstance(node, ast.ImportFrom) and "experiments" in (node.module or ""):
                out.append(f"line {node.lineno}: the library imports the experiments at import time")
    return out


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_outside_the_cli_nothing_parses_prints_or_switches_precision(path):
    assert _problems(path) == []


def test_the_cli_is_a_package_with_one_module_per_command():
    names = {p.stem for p in (PKG / "cli").glob("*.py")}
    assert {"train", "verify", "theory", "real", "analyze", "figures", "dynamics"} <= names
