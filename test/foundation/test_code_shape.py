"""The package keeps its shape: files split along responsibilities stay under 400 lines,
and public functions take at most 8 arguments (group the rest into the dataclasses that
already exist: Gaussians, PinholeCameras, RasterConfig, MapUpdate, BagOptions ...)."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "ilrm_ros"
MAX_LINES = 400
MAX_ARGS = 8


def argument_count(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Positional + keyword-only parameters, not counting self/cls (``*args``/``**kwargs`` neither)."""
    a = fn.args
    names = [p.arg for p in a.posonlyargs + a.args] + [p.arg for p in a.kwonlyargs]
    if names and names[0] in ("self", "cls"):
        names = names[1:]
    return len(names)


def public_functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
            yield node


def test_no_module_is_longer_than_400_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these along their responsibilities: {long}"


def test_no_public_function_takes_more_than_8_arguments():
    wide = [f"{p.relative_to(PACKAGE)}:{fn.lineno} {fn.name} ({argument_count(fn)})"
            for p in sorted(PACKAGE.rglob("*.py")) for fn in public_functions(ast.parse(p.read_text()))
            if argument_count(fn) > MAX_ARGS]
    assert not wide, "group arguments into a dataclass:\n  " + "\n  ".join(wide)


def test_the_argument_counter_counts_what_callers_pass():
    tree = ast.parse("class A:\n def m(self, a, b, *rest, c=1, **kw): pass\ndef f(a, /, b, *, c): pass")
    counts = {fn.name: argument_count(fn) for fn in public_functions(tree)}
    assert counts == {"m": 3, "f": 3}
