"""Dependencies point one way: gateway -> adapters -> keys; keys/ and adapters/ import no gRPC."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "keys": (
        "grpc",
        "grpc_status",
        "grpc_health",
        "grpc_reflection",
        "google.rpc",
        "adapters",
        "gateway",
    ),
    "adapters": ("grpc", "grpc_status", "grpc_health", "grpc_reflection", "google.rpc", "gateway"),
}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_lower_layers_do_not_import_upper_layers_or_grpc(package: str) -> None:
    offenders = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for name in _imports(path)
        if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN[package])
    ]
    assert offenders == []


def test_generated_protobuf_types_stay_in_the_gateway_layer() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for package in ("keys", "adapters")
        for path in (ROOT / package).rglob("*.py")
        if any("_pb2" in name for name in _imports(path))
    ]
    assert offenders == []
