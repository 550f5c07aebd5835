"""A partner's own key files: anchor keys and code-signing keys, one key a file.

What ``trustgw partner-tools keygen`` writes for a partner region's engineer (docs/onboarding.md)::

    <kid>.key   the private key: JSON (type trustgw/partner-key/v1: region, role, kid, alg,
                encrypted, private_key = PKCS#8 PEM encrypted with the passphrase), mode 0600
    <kid>.jwk   the public key as a JWK with its kid and alg (what a partner file, a key set or
                ``trustgw verify --trust`` takes)
    <kid>.pem   the same public key as PEM (SubjectPublicKeyInfo)

The passphrase comes from ``TRUSTGW_PASSPHRASE`` / ``TRUSTGW_PASSPHRASE_FILE``, as for the
gateway's own keys; ``dev`` files are unencrypted and every load says so in the log. Files are
created with ``O_EXCL``: an existing key file is never overwritten.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from keys.anchors import ANCHOR_ALGORITHMS
from keys.crypto import Algorithm, PrivateKey, PublicKey, load_public_key
from keys.errors import (
    AlgorithmUnsupportedError,
    AlreadyExistsError,
    GatewayError,
    MalformedError,
    PassphraseError,
)
from keys.jsonutil import loads_strict
from keys.keyid import check_kid
from keys.regioncode import is_region_code
from keys.signed import get_str, require_keys

log = logging.getLogger("trustgw.keys")

KEY_FILE_TYPE = "trustgw/partner-key/v1"
MAX_KEY_FILE_BYTES = 64 * 1024
MAX_KEY_FILE_DEPTH = 4


class KeyFileRole(StrEnum):
    """What a partner key signs."""

    ANCHOR = "anchor"  # key sets, key revocations and revocation batches (never codes)
    SIGNING = "signing"  # the region's codes


@dataclass(frozen=True)
class PartnerKeyFile:
    """One private key of a partner region, with what it is for."""

    region: str
    role: KeyFileRole
    kid: str
    private: PrivateKey
    encrypted: bool

    def __post_init__(self) -> None:
        check_kid(self.kid)
        if not is_region_code(self.region):
            raise ValueError("a region is a 6-digit code")
        if self.role is KeyFileRole.ANCHOR and self.private.alg not in ANCHOR_ALGORITHMS:
            raise ValueError(f"an anchor key is EdDSA, ES256 or SM2, not {self.private.alg}")

    @property
    def public_key(self) -> PublicKey:
        """The public half of the file's private key."""
        return self.private.public_key()

    def public_jwk(self) -> dict[str, str]:
        """The public key as a JWK naming its kid and algorithm."""
        return {**self.public_key.to_jwk(), "kid": self.kid, "alg": self.private.alg.value}

    def to_bytes(self, passphrase: bytes | None) -> bytes:
        """The private key file (encrypted with ``passphrase``; None only for dev files)."""
        if self.encrypted and not passphrase:
            raise PassphraseError(_PASSPHRASE_UNSET)
        pem = self.private.to_pem(passphrase if self.encrypted else None)
        obj = {
            "type": KEY_FILE_TYPE,
            "region": self.region,
            "role": self.role.value,
            "kid": self.kid,
            "alg": self.private.alg.value,
            "encrypted": self.encrypted,
            "private_key": pem.decode("ascii"),
        }
        return (json.dumps(obj, indent=2) + "\n").encode("ascii")

    @classmethod
    def from_bytes(cls, data: bytes, passphrase: bytes | None, what: str) -> PartnerKeyFile:
        """Parse and decrypt a private key file.

        Raises :class:`MalformedError` / :class:`OversizedError` for a file that is not one,
        :class:`PassphraseError` when the file is encrypted and no passphrase is set or it does
        not decrypt the key.
        """
        obj = loads_strict(
            data, max_bytes=MAX_KEY_FILE_BYTES, max_depth=MAX_KEY_FILE_DEPTH, what=what
        )
        if not isinstance(obj, dict) or obj.get("type") != KEY_FILE_TYPE:
            raise MalformedError(f"{what} is not a partner key file ({KEY_FILE_TYPE})")
        require_keys(obj, ("type", "region", "role", "kid", "alg", "encrypted", "private_key"))
        try:
            role = KeyFileRole(obj["role"])
        except ValueError:
            raise MalformedError(f"{what}: the role is 'anchor' or 'signing'") from None
        kid = check_kid(obj["kid"])
        alg = Algorithm.parse(get_str(obj, "alg", max_chars=16))
        encrypted = obj["encrypted"]
        if not isinstance(encrypted, bool):
            raise MalformedError(f"{what}: 'encrypted' is true or false")
        pem_text = obj["private_key"]
        if not isinstance(pem_text, str) or not pem_text.isascii():
            raise MalformedError(f"{what}: 'private_key' is a PEM text")
        pem = pem_text.encode("ascii")
        if encrypted and not passphrase:
            raise PassphraseError(_PASSPHRASE_UNSET)
        if not encrypted:
            log.warning("DEV KEY: %s is NOT encrypted; it must not be used in production", what)
        try:
            private = PrivateKey.from_pem(pem, passphrase if encrypted else None)
        except MalformedError:
            if encrypted:
                raise PassphraseError(
                    f"the passphrase does not decrypt {what} (or the key in it is damaged)"
                ) from None
            raise MalformedError(f"{what}: the private key cannot be read") from None
        if private.alg is not alg:
            raise MalformedError(f"{what} says {alg} but holds a {private.alg} key")
        try:
            return cls(get_str(obj, "region", max_chars=6), role, kid, private, encrypted)
        except ValueError as exc:
            raise MalformedError(f"{what}: {exc}") from None

    @classmethod
    def read(cls, path: Path, passphrase: bytes | None) -> PartnerKeyFile:
        """:meth:`from_bytes` of the file at ``path``; raises ``OSError`` as well."""
        with open(path, "rb") as handle:
            data = handle.read(MAX_KEY_FILE_BYTES + 1)
        return cls.from_bytes(data, passphrase, str(path))

    def write(self, directory: Path, passphrase: bytes | None) -> tuple[Path, Path, Path]:
        """Write ``<kid>.key`` (0600), ``<kid>.jwk`` and ``<kid>.pem`` into ``directory``.

        Nothing is overwritten: raises :class:`AlreadyExistsError` if any of the three exists
        (and writes none), ``OSError`` if the directory cannot be written.
        """
        paths = tuple(directory / f"{self.kid}{suffix}" for suffix in (".key", ".jwk", ".pem"))
        key_path, jwk_path, pem_path = paths
        existing = [p for p in paths if os.path.lexists(p)]
        if existing:
            raise AlreadyExistsError(f"{existing[0]} exists: a key file is never overwritten")
        contents = (
            (key_path, self.to_bytes(passphrase), 0o600),
            (jwk_path, (json.dumps(self.public_jwk(), indent=2) + "\n").encode("ascii"), 0o644),
            (pem_path, self.public_key.to_pem().encode("ascii"), 0o644),
        )
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for path, data, mode in contents:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        return key_path, jwk_path, pem_path


_PASSPHRASE_UNSET = (
    "no passphrase for the partner key file: set TRUSTGW_PASSPHRASE or TRUSTGW_PASSPHRASE_FILE "  # noqa: S105
    "(or make development keys with --dev)"
)


def read_public_jwk(data: bytes, what: str) -> tuple[str, PublicKey]:
    """The kid and key of a public JWK file (as ``<kid>.jwk`` holds it).

    Raises :class:`MalformedError` (no JSON object, no ``kid``, private material),
    :class:`AlgorithmUnsupportedError`.
    """
    obj = loads_strict(data, max_bytes=MAX_KEY_FILE_BYTES, max_depth=MAX_KEY_FILE_DEPTH, what=what)
    if not isinstance(obj, dict):
        raise MalformedError(f"{what} is not a JWK object")
    if "d" in obj or obj.get("type") == KEY_FILE_TYPE:
        raise MalformedError(f"{what} holds private key material: give the public .jwk file")
    if "kid" not in obj:
        raise MalformedError(f"{what} names no kid (make keys with trustgw partner-tools keygen)")
    kid = check_kid(obj["kid"])
    try:
        key = load_public_key({k: obj[k] for k in ("kty", "crv", "x", "y") if k in obj})
    except GatewayError as exc:
        raise type(exc)(f"{what}: {exc.message}") from None
    declared = obj.get("alg")
    if declared is not None and declared != key.alg.value:
        raise AlgorithmUnsupportedError(f"{what} says alg {str(declared)[:16]!r}: it is {key.alg}")
    return kid, key


__all__ = ["KEY_FILE_TYPE", "KeyFileRole", "PartnerKeyFile", "read_public_jwk"]
