"""A partner's side of the trust registry, written from docs/trust-registry.md alone.

Canonical JSON (§1), the partner file and its anchor fingerprint (§2), the envelope (§3), key
sets (§4), key revocations (§5) and code/holder revocation batches (§6). Like doc_issuer.py it
imports nothing from the project: the standard library and ``cryptography`` only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import unicodedata
from dataclasses import dataclass
from typing import Any

from doc_issuer import SigningKey


def canonical(value: Any) -> bytes:
    """§1: RFC 8785 restricted to objects, arrays, strings, integers, true, false, null."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass
class Anchors:
    keys: list[SigningKey]
    threshold: int

    def entries(self) -> list[dict[str, Any]]:
        return [{"kid": k.kid, "public_key": k.public_jwk()} for k in self.keys]

    def fingerprint(self) -> str:
        """§2: SHA-256 hex of the canonical JSON of the keys sorted by kid and the threshold."""
        keys = sorted(self.entries(), key=lambda e: e["kid"])
        return hashlib.sha256(canonical({"keys": keys, "threshold": self.threshold})).hexdigest()


def partner_file(region: str, name: str, mode: str, max_age: int, anchors: Anchors) -> bytes:
    """§2, the file handed to the operator out of band."""
    return json.dumps(
        {
            "type": "trustgw/partner/v1",
            "region": region,
            "name": name,
            "mode": mode,
            "max_age": max_age,
            "anchors": anchors.entries(),
            "threshold": anchors.threshold,
        },
        ensure_ascii=False,
        indent=2,
    ).encode()


def envelope(signed: bytes, signers: list[SigningKey]) -> bytes:
    """§3: the signed bytes in base64url and each anchor's signature over exactly them."""
    return canonical(
        {
            "signed": b64url(signed),
            "signatures": [{"keyid": k.kid, "sig": b64url(k.sign(signed))} for k in signers],
        }
    )


def keyset(
    region: str, version: int, expires: int, keys: list[tuple[SigningKey, int, int]]
) -> dict[str, Any]:
    """§4: the region's complete list of code-signing keys (key, not_before, not_after)."""
    return {
        "type": "trustgw/keyset/v1",
        "region": region,
        "version": version,
        "expires": expires,
        "keys": [
            {
                "kid": k.kid,
                "alg": k.alg,
                "public_key": k.public_jwk(),
                "not_before": nb,
                "not_after": na,
            }
            for k, nb, na in keys
        ],
    }


def code_hash(region: str, code_id: str) -> str:
    """§6: sha256("<region>|<code id>")."""
    return hashlib.sha256(f"{region}|{code_id}".encode()).hexdigest()


def holder_hash(region: str, id_number: str) -> str:
    """§6: sha256("<region>|<normalised ID number>"): NFKC, stripped, upper case."""
    normalised = unicodedata.normalize("NFKC", id_number).strip().upper()
    return hashlib.sha256(f"{region}|{normalised}".encode()).hexdigest()


def revocations(
    region: str, batch_id: str, effective_at: int, codes: list[str], holders: list[str]
) -> dict[str, Any]:
    """§6: a batch of code and holder revocations."""
    return {
        "type": "trustgw/revocations/v1",
        "region": region,
        "batch_id": batch_id,
        "effective_at": effective_at,
        "codes": sorted(codes),
        "holders": sorted(holders),
    }
