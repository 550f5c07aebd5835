"""A name means one thing (issue 9, "One vocabulary"): no two classes of keys/, adapters/ and
gateway/ share a public name, and the operator CLI's store helpers are not called "registry".

The generated protobuf modules are left out: the SDK's result types mirror their messages'
names on purpose (``gateway.sdk.Decision`` is the client's ``pb.Decision``).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections import defaultdict
from pathlib import Path

import adapters
import gateway
import keys

ROOT = Path(__file__).resolve().parent.parent


def _modules() -> list[str]:
    names = []
    for package in (keys, adapters, gateway):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if not info.name.endswith(("_pb2", "_pb2_grpc", "__main__")):
                names.append(info.name)
    return names


def test_no_two_classes_share_a_public_name() -> None:
    where: dict[str, set[str]] = defaultdict(set)
    for name in _modules():
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if isinstance(value, type) and value.__module__ == name and not attr.startswith("_"):
                where[attr].add(name)
    shared = {attr: sorted(mods) for attr, mods in where.items() if len(mods) > 1}
    assert shared == {}


def test_the_names_that_used_to_mean_two_types_mean_one() -> None:
    from adapters.base import CodeEnvelope
    from gateway.engine import HomeCode, Recognition
    from gateway.sdk import ConvertedCode, Decision, SignedTrustList
    from keys.keystore import Signers
    from keys.signed import Envelope
    from keys.trustlist import PublishedTrustList

    assert Envelope is not CodeEnvelope  # a signed statement's envelope; a partner code's
    assert Decision is not Recognition  # the client's answer; the engine's
    assert ConvertedCode is not HomeCode
    assert SignedTrustList is not PublishedTrustList
    assert Signers.__module__ == "keys.keyset"  # one protocol for the engine and the stock job


def test_registry_names_the_key_registry_and_the_trust_registry_only() -> None:
    modules = sorted(
        str(p.relative_to(ROOT))
        for p in ROOT.glob("[kag]*/**/*registry*.py")
        if "api" not in p.parts and ".venv" not in p.parts
    )
    assert modules == ["keys/registry.py", "keys/trustregistry.py"]
