"""The deny list of client certificates: the ones the gateway refuses although its CA issued
them (a lost checkpoint, a leaked key), by serial number or SHA-256 fingerprint. Kept in
``DATA_DIR/pki/denied.json`` by ``trustgw pki deny`` / ``pki revoke``, read by the server at
start and on SIGHUP, and checked on every call (docs/operations.md, "Revoking a client
certificate").
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509

from gateway.pki import fingerprint, serial_hex, write_temp
from keys.errors import CertificateDeniedError, ConfigurationError
from keys.timeutil import parse_time, to_iso

DENY_FILE = "denied.json"  # in DATA_DIR/pki: read at start and on SIGHUP
MAX_DENY_BYTES = 4 * 1024 * 1024
_HEX = frozenset("0123456789abcdef")


def normal_serial(text: str) -> str:
    """A serial as ``openssl`` and ``pki list`` print it (upper-case hex, whole bytes), from
    hex with or without colons. Raises ``ValueError``."""
    given = text.replace(":", "").strip().lower()
    digits = given.lstrip("0") or "0"
    if not given or not set(digits) <= _HEX or len(digits) > 40:
        raise ValueError(f"not a certificate serial number (hex, at most 20 bytes): {text!r}")
    return digits.upper().zfill(len(digits) + len(digits) % 2)


def normal_fingerprint(text: str) -> str:
    """A SHA-256 fingerprint as ``pki list`` prints it (64 lower-case hex digits), from hex
    with or without colons. Raises ``ValueError``."""
    digits = text.replace(":", "").strip().lower()
    if len(digits) != 64 or not set(digits) <= _HEX:
        raise ValueError(f"not a SHA-256 fingerprint (64 hex digits): {text!r}")
    return digits


@dataclass(frozen=True)
class DeniedCertificate:
    """One entry of the deny list: a serial, a fingerprint or both."""

    serial: str | None
    fingerprint: str | None
    name: str | None
    reason: str
    denied_at: datetime

    def to_json(self) -> dict[str, Any]:
        """The entry as the deny file keeps it."""
        return {
            "serial": self.serial,
            "fingerprint_sha256": self.fingerprint,
            "name": self.name,
            "reason": self.reason,
            "denied_at": to_iso(self.denied_at),
        }


class DenyList:
    """The client certificates the gateway refuses, by serial or by SHA-256 fingerprint.

    A serial is unique only per CA: denying by serial refuses every certificate with that
    serial from any CA the gateway trusts; a fingerprint names exactly one certificate.
    Not changed once made: a reload makes a new one.
    """

    __slots__ = ("_fingerprints", "_seen", "_serials", "entries")

    def __init__(self, entries: Iterable[DeniedCertificate] = ()) -> None:
        self.entries = tuple(entries)
        self._serials = frozenset(e.serial for e in self.entries if e.serial)
        self._fingerprints = frozenset(e.fingerprint for e in self.entries if e.fingerprint)
        self._seen: dict[bytes, bool] = {}  # client certificate PEM -> denied

    def __bool__(self) -> bool:
        return bool(self.entries)

    def check_pem(self, pem: bytes) -> None:
        """Raise :class:`keys.errors.CertificateDeniedError` when the client certificate
        ``pem`` (as the TLS session gives it) is denied. Each certificate is read once."""
        seen = self._seen
        denied = seen.get(pem)
        if denied is None:
            denied = self._denies(pem)
            if len(seen) >= 4096:  # distinct client certificates: a bound, then start again
                seen.clear()
            seen[pem] = denied
        if denied:
            raise CertificateDeniedError()

    def _denies(self, pem: bytes) -> bool:
        try:
            cert = x509.load_pem_x509_certificate(pem)
        except ValueError:
            return True  # a verified session always carries a readable certificate
        return serial_hex(cert) in self._serials or fingerprint(cert) in self._fingerprints

    @classmethod
    def load(cls, path: Path) -> DenyList:
        """The deny list in ``path`` (none there: an empty list).

        Raises :class:`keys.errors.ConfigurationError` for a file that is unreadable, too
        large or not a deny list."""
        try:
            with path.open("rb") as handle:
                data = handle.read(MAX_DENY_BYTES + 1)
        except FileNotFoundError:
            return cls()
        except OSError as exc:
            raise ConfigurationError(f"cannot read the deny list {path}: {exc.strerror}") from None
        if len(data) > MAX_DENY_BYTES:
            raise ConfigurationError(f"the deny list {path} is larger than {MAX_DENY_BYTES} bytes")
        try:
            document = json.loads(data)
            entries = tuple(_denied_entry(item) for item in document["denied"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigurationError(f"the deny list {path} is not valid: {exc}") from None
        return cls(entries)

    def with_entry(self, entry: DeniedCertificate) -> DenyList:
        """This list and ``entry`` (an entry already there is not repeated)."""
        for old in self.entries:
            if (entry.serial and old.serial == entry.serial) or (
                entry.fingerprint and old.fingerprint == entry.fingerprint
            ):
                return self
        return DenyList((*self.entries, entry))

    def save(self, path: Path) -> None:
        """Write the list to ``path`` atomically (a reader sees the old or the new one)."""
        text = json.dumps({"version": 1, "denied": [e.to_json() for e in self.entries]}, indent=2)
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = write_temp(path.parent, path.name, (text + "\n").encode(), private=False)
        os.replace(temp, path)


def _denied_entry(item: Any) -> DeniedCertificate:
    serial = item.get("serial")
    fp = item.get("fingerprint_sha256")
    if not serial and not fp:
        raise ValueError("an entry names neither a serial nor a fingerprint")
    return DeniedCertificate(
        serial=normal_serial(serial) if serial else None,
        fingerprint=normal_fingerprint(fp) if fp else None,
        name=str(item["name"]) if item.get("name") else None,
        reason=str(item.get("reason") or ""),
        denied_at=parse_time(str(item["denied_at"])),
    )
