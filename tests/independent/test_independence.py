"""The issuer, the checkpoint and the partner in tests/independent are written from the pages
alone: they import the standard library and ``cryptography`` (and pysmx, an SM2 of their own, for
the SM2 region and SM2 gateway keys: docs/partners.md §1.3), nothing of the project's."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize("module", ["doc_issuer.py", "doc_checkpoint.py", "doc_partner.py"])
def test_the_issuer_and_the_checkpoint_import_nothing_from_the_project(module: str) -> None:
    """Written from the pages alone: the standard library and ``cryptography`` only."""
    tree = ast.parse((Path(__file__).with_name(module)).read_text(encoding="utf-8"))
    imported = {
        name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for name in (
            [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        )
    }
    allowed = {"__future__", "cryptography", "pysmx", "doc_issuer", *sys.stdlib_module_names}
    assert imported <= allowed, imported - allowed
