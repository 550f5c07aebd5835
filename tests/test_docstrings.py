"""Issue 9 item 8: every public class and function of keys/, adapters/ and the client SDK
(gateway/sdk/, with the offline verifier it ships: gateway/tokens.py, gateway/claims.py) says
what it does, what it raises and what time it takes.

A name is public when neither it nor a class it sits in starts with ``_``; methods of public
classes count (properties included), nested functions do not. Generated protobuf code is left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SURFACE = ["keys", "adapters", "gateway/sdk", "gateway/tokens.py", "gateway/claims.py"]


def _files() -> list[Path]:
    files: list[Path] = []
    for entry in SURFACE:
        path = ROOT / entry
        found = [path] if path.is_file() else sorted(path.rglob("*.py"))
        files.extend(p for p in found if not p.name.endswith(("_pb2.py", "_pb2_grpc.py")))
    return files


def _undocumented(path: Path, root: Path = ROOT) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    missing: list[str] = []

    def walk(nodes: list[ast.stmt], prefix: str) -> None:
        for node in nodes:
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            if node.name.startswith("_"):
                continue
            if ast.get_docstring(node) is None:
                missing.append(f"{path.relative_to(root)}:{node.lineno} {prefix}{node.name}")
            if isinstance(node, ast.ClassDef):
                walk(node.body, f"{prefix}{node.name}.")

    walk(tree.body, "")
    return missing


def test_the_surface_is_found() -> None:
    files = _files()
    assert (
        ROOT / "keys" / "errors" / "_base.py" in files and ROOT / "gateway" / "tokens.py" in files
    )
    assert not any(p.name.endswith("_pb2.py") for p in files)


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_public_class_and_function_has_a_docstring(path: Path) -> None:
    assert _undocumented(path) == []


def test_the_check_finds_a_missing_docstring(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "class A:\n"
        '    """Documented."""\n'
        "    def f(self):\n"
        "        return 1\n"
        "    def _g(self):\n"
        "        return 2\n"
        "def h():\n"
        '    """Documented."""\n'
        "class _Private:\n"
        "    def i(self):\n"
        "        return 3\n",
        encoding="utf-8",
    )
    assert _undocumented(sample, tmp_path) == ["sample.py:3 A.f"]
