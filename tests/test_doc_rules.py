"""Rules of the contract pages that no other test pinned on its own (see tests/doc_contract.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.doc('verifying.md "Python API"')
@pytest.mark.parametrize("module", ["gateway.tokens", "keys.trustlist"])
def test_the_offline_verifiers_import_no_grpc(module: str) -> None:
    """verifying.md: "The module imports no gRPC" -- a checkpoint can verify without it."""
    probe = (
        f"import sys, {module}; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('grpc', 'grpc_status', 'grpc_health', 'grpc_reflection')))"
    )
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"
