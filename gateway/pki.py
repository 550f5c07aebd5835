"""A development PKI for mutual TLS, and how a peer's certificate maps to a role.

Every client of the gateway presents a certificate. Its role is written as a URI in the
certificate's subjectAltName, which the gateway reads from the verified TLS session:

* ``trustgw://partner/<region>``: a partner provincial system; may write only that region;
* ``trustgw://verifier/<name>``: a checkpoint or verifier system; may recognise codes and read;
* ``trustgw://operator/<name>``: operator tooling; may read everything;
* ``trustgw://declarant-channel/<name>``: a province app back end; may only submit arrival
  declarations (``DeclarationService``);
* ``trustgw://tracer/<name>``: a contact tracer; may make the TracingService's queries, nothing
  else (and no other role may make them).

``trustgw pki`` creates a CA and certificates for development and tests. Production deployments
use the province's own CA with the same subjectAltName convention.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from keys.errors import (
    ConfigurationError,
    FilePermissionError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from keys.regioncode import is_region_code
from keys.timeutil import to_iso

URI_SCHEME = "trustgw://"


class Role(StrEnum):
    PARTNER = "partner"
    VERIFIER = "verifier"
    OPERATOR = "operator"
    DECLARANT_CHANNEL = "declarant-channel"  # arrival declarations (DeclarationService) only
    TRACER = "tracer"  # contact tracers: TracingService only (gateway.grpc.tracing)


@dataclass(frozen=True)
class Peer:
    """Who is calling, as proven by the client certificate (or ``None`` role in plaintext dev)."""

    role: Role
    name: str  # the region code for partners

    @classmethod
    def from_uri(cls, uri: str) -> Peer | None:
        if not uri.startswith(URI_SCHEME):
            return None
        role_text, _, name = uri[len(URI_SCHEME) :].partition("/")
        try:
            role = Role(role_text)
        except ValueError:
            return None
        if not name or len(name) > 64 or "/" in name:
            return None
        if role is Role.PARTNER and not is_region_code(name):
            return None
        return cls(role, name)

    @property
    def uri(self) -> str:
        return f"{URI_SCHEME}{self.role.value}/{self.name}"

    def require(self, *roles: Role) -> None:
        if self.role not in roles:
            raise PermissionDeniedError(
                f"a {self.role.value} certificate may not make this call", role=self.role.value
            )

    def require_region(self, region: str) -> None:
        """A partner may write only its own region."""
        self.require(Role.PARTNER)
        if self.name != region:
            raise PermissionDeniedError(
                f"partner {self.name} may not write region {region}",
                caller=self.name,
                region=region,
            )


def peer_from_auth_context(auth: dict[str, list[bytes]]) -> Peer:
    """The caller's identity from a gRPC auth context (a verified TLS session)."""
    for value in auth.get("x509_subject_alternative_name", []):
        peer = Peer.from_uri(value.decode("utf-8", "replace"))
        if peer is not None:
            return peer
    raise UnauthenticatedError()


# --- development CA ---------------------------------------------------------------------------

# Validity defaults (docs/operations.md "TLS certificates"): the CA outlives what it issues; a
# server certificate stays under the 398 days that clients commonly accept; client certificates
# a year. No certificate is issued past the CA's own not_after.
CA_DAYS = 1825
SERVER_DAYS = 397
CLIENT_DAYS = 365
MAX_DAYS = 3650
DEFAULT_HOSTS = ("localhost", "127.0.0.1")
RETIRED = "retired"  # the sub-directory that keeps replaced certificates and keys


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(path: Path, data: bytes, private: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(path, flags, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def write_temp(directory: Path, final: str, data: bytes, private: bool) -> Path:
    """``data`` in a new temporary file beside ``final``, flushed to disk (for os.replace)."""
    path = directory / f".{final}.tmp-{secrets.token_hex(4)}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return path


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def serial_hex(cert: x509.Certificate) -> str:
    """The serial number as ``openssl x509 -noout -serial`` prints it: upper-case hex."""
    text = format(cert.serial_number, "X")
    return text.zfill(len(text) + len(text) % 2)  # whole bytes, as OpenSSL prints them


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 over the certificate's DER, lower-case hex (``sha256sum`` of the DER form)."""
    return cert.fingerprint(hashes.SHA256()).hex()


@dataclass(frozen=True)
class CertInfo:
    """What an operator needs to know of one certificate (``trustgw pki list`` / ``show``)."""

    name: str  # the file stem in the CA directory (``server``, ``verifier-checkpoint-1``) or path
    path: Path
    subject: str
    issuer: str
    role: str  # "ca", "server", a peer role ("partner", "verifier", "operator") or "none"
    uri: str | None  # the role URI in subjectAltName (client certificates)
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    serial: str  # upper-case hex
    fingerprint: str  # SHA-256 of the DER, lower-case hex
    not_before: datetime
    not_after: datetime
    retired: bool = False  # kept in retired/ after being replaced

    @classmethod
    def of(
        cls, cert: x509.Certificate, name: str, path: Path, *, retired: bool = False
    ) -> CertInfo:
        """Read ``cert``'s fields (nothing is verified here)."""
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            dns = tuple(san.get_values_for_type(x509.DNSName))
            ips = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
            uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        except x509.ExtensionNotFound:
            dns, ips, uris = (), (), []
        peer = next((p for p in map(Peer.from_uri, uris) if p is not None), None)
        return cls(
            name=name,
            path=path,
            subject=cert.subject.rfc4514_string(),
            issuer=cert.issuer.rfc4514_string(),
            role=_role_of(cert, peer),
            uri=None if peer is None else peer.uri,
            dns_names=dns,
            ip_addresses=ips,
            serial=serial_hex(cert),
            fingerprint=fingerprint(cert),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            retired=retired,
        )

    def days_left(self, now: datetime) -> int:
        """Whole days from ``now`` until not_after (negative once expired)."""
        return (self.not_after - now) // timedelta(days=1)

    def to_json(self, now: datetime) -> dict[str, Any]:
        """A JSON object of every field, times in ISO 8601 UTC, and ``days_left`` at ``now``."""
        return {
            "name": self.name,
            "path": str(self.path),
            "subject": self.subject,
            "issuer": self.issuer,
            "role": self.role,
            "uri": self.uri,
            "dns_names": list(self.dns_names),
            "ip_addresses": list(self.ip_addresses),
            "serial": self.serial,
            "fingerprint_sha256": self.fingerprint,
            "not_before": to_iso(self.not_before),
            "not_after": to_iso(self.not_after),
            "days_left": self.days_left(now),
            "expired": now >= self.not_after,
            "retired": self.retired,
        }


def _role_of(cert: x509.Certificate, peer: Peer | None) -> str:
    try:
        if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return "ca"
    except x509.ExtensionNotFound:
        pass
    if peer is not None:
        return peer.role.value
    try:
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return "none"
    return "server" if ExtendedKeyUsageOID.SERVER_AUTH in usage else "none"


def read_certificate(path: Path, name: str | None = None) -> CertInfo:
    """The first certificate of a PEM file, described.

    Raises :class:`keys.errors.ConfigurationError` for a file that cannot be read or holds no
    PEM certificate.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        cert = x509.load_pem_x509_certificates(data)[0]
    except (ValueError, IndexError):
        raise ConfigurationError(f"{path} is not a PEM certificate") from None
    retired = path.parent.name == RETIRED
    stem = path.stem.rpartition(".")[0] if retired and "." in path.stem else path.stem
    return CertInfo.of(cert, name or stem, path, retired=retired)


@dataclass(frozen=True)
class Issued:
    """A certificate just issued into the CA directory, and what it replaced."""

    cert_path: Path
    key_path: Path
    info: CertInfo
    replaced: CertInfo | None  # the certificate that had this name before, now in retired/
    clamped: bool  # not_after was cut to the CA's own not_after


def _alt_names(hosts: Iterable[str], uri: str | None) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    if uri:
        names.append(x509.UniformResourceIdentifier(uri))
    return names


@dataclass(frozen=True)
class DevCA:
    """A development certificate authority kept in a directory (``ca.pem``, ``ca.key``).

    Certificates it issues live beside it as ``<name>.pem`` / ``<name>.key``; issuing a name
    again replaces both files atomically and keeps the previous pair in ``retired/`` as
    ``<name>.<serial>.pem`` / ``.key``, so that its serial stays on record.
    """

    directory: Path

    @property
    def cert_path(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def exists(self) -> bool:
        """True when the directory holds a CA key."""
        return (self.directory / "ca.key").exists()

    @classmethod
    def create(cls, directory: Path, now: datetime, days: int = CA_DAYS) -> DevCA:
        """A new CA valid ``days`` from ``now``.

        Raises :class:`keys.errors.ConfigurationError` if ``directory`` already holds one.
        """
        if (directory / "ca.key").exists():
            raise ConfigurationError(f"{directory} already holds a CA")
        key = _key()
        cert = _ca_certificate(key, now, days)
        _write(directory / "ca.key", _pem_key(key), private=True)
        _write(directory / "ca.pem", cert.public_bytes(serialization.Encoding.PEM), private=False)
        return cls(directory)

    def _load(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        try:
            cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
            key = serialization.load_pem_private_key(
                (self.directory / "ca.key").read_bytes(), password=None
            )
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"cannot load the CA in {self.directory}: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigurationError("the CA key is not an EC key")
        return cert, key

    def info(self) -> CertInfo:
        """The CA certificate, described. Raises :class:`ConfigurationError`."""
        return CertInfo.of(self._load()[0], "ca", self.cert_path)

    def issue(
        self,
        name: str,
        *,
        uri: str | None = None,
        server: bool = False,
        now: datetime,
        days: int | None = None,
        hosts: tuple[str, ...] = DEFAULT_HOSTS,
    ) -> tuple[Path, Path]:
        """Issue ``<name>.pem`` / ``<name>.key`` and return their paths (:meth:`issue_cert`)."""
        issued = self.issue_cert(name, uri=uri, server=server, now=now, days=days, hosts=hosts)
        return issued.cert_path, issued.key_path

    def issue_cert(
        self,
        name: str,
        *,
        uri: str | None = None,
        server: bool = False,
        now: datetime,
        days: int | None = None,
        hosts: Sequence[str] = DEFAULT_HOSTS,
        subject: str | None = None,
    ) -> Issued:
        """Issue a certificate (new key, new random serial) named ``name`` in the CA directory.

        A server certificate names ``hosts`` (DNS names and IP addresses) and is for server
        authentication; a client certificate carries ``uri`` (its role) and is for client
        authentication. ``days`` defaults to :data:`SERVER_DAYS` / :data:`CLIENT_DAYS`; the
        certificate never outlives the CA (``Issued.clamped``). An existing ``<name>`` pair is
        replaced atomically (each file by rename) and kept in ``retired/``.

        Raises :class:`keys.errors.ConfigurationError` if the CA cannot be loaded or has expired.
        """
        ca_cert, ca_key = self._load()
        if now >= ca_cert.not_valid_after_utc:
            raise ConfigurationError(
                f"the CA in {self.directory} expired at {to_iso(ca_cert.not_valid_after_utc)}: "
                f"renew it first (trustgw pki renew --data-dir DIR ca)"
            )
        days = days if days is not None else (SERVER_DAYS if server else CLIENT_DAYS)
        not_after = now + timedelta(days=days)
        clamped = not_after > ca_cert.not_valid_after_utc
        not_after = min(not_after, ca_cert.not_valid_after_utc)
        key = _key()
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject or name)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.SubjectAlternativeName(_alt_names(hosts if server else (), uri)),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        cert_path, key_path = self.directory / f"{name}.pem", self.directory / f"{name}.key"
        replaced = self._install(name, _pem_key(key), cert.public_bytes(serialization.Encoding.PEM))
        return Issued(cert_path, key_path, CertInfo.of(cert, name, cert_path), replaced, clamped)

    def renew(self, name: str, now: datetime, days: int | None = None) -> Issued:
        """Re-issue ``<name>.pem`` with the same subject, names and role: a new key and serial.

        ``ca`` renews the CA certificate (:meth:`renew_ca`). Raises :class:`ConfigurationError`
        for a name with no certificate, or one whose role the development CA does not issue.
        """
        if name == "ca":
            return self.renew_ca(now, CA_DAYS if days is None else days)
        path = self.directory / f"{name}.pem"
        if not path.is_file():
            raise ConfigurationError(
                f"there is no certificate {name!r} in {self.directory} (trustgw pki list)"
            )
        current = read_certificate(path, name)
        cert = x509.load_pem_x509_certificates(path.read_bytes())[0]
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        subject = str(names[0].value) if names else name
        if current.role == "server":
            hosts = (*current.dns_names, *current.ip_addresses)
            return self.issue_cert(
                name, server=True, now=now, days=days, hosts=hosts, subject=subject
            )
        if current.uri is None:
            raise ConfigurationError(
                f"{path} is neither a server certificate nor one with a trustgw:// role URI: "
                "issue a new one with trustgw pki issue"
            )
        return self.issue_cert(name, uri=current.uri, now=now, days=days, subject=subject)

    def renew_ca(self, now: datetime, days: int = CA_DAYS) -> Issued:
        """A new CA certificate for the same CA key and name, valid ``days`` from ``now``.

        Everything the CA issued keeps verifying under the new ``ca.pem`` (same issuer name,
        same key); peers must be given the new ``ca.pem`` before the old one expires. The old CA
        certificate is kept in ``retired/``. Raises :class:`ConfigurationError`.
        """
        old, key = self._load()
        cert = _ca_certificate(key, now, days, old.subject)
        replaced = self._install("ca", None, cert.public_bytes(serialization.Encoding.PEM))
        info = CertInfo.of(cert, "ca", self.cert_path)
        return Issued(self.cert_path, self.directory / "ca.key", info, replaced, False)

    def _install(self, name: str, key_pem: bytes | None, cert_pem: bytes) -> CertInfo | None:
        """Put ``<name>.key`` (unless None) and ``<name>.pem`` in place, each by an atomic
        rename, after keeping any previous pair in ``retired/``; return the previous one."""
        cert_path, key_path = self.directory / f"{name}.pem", self.directory / f"{name}.key"
        self.directory.mkdir(parents=True, exist_ok=True)
        temp_key = (
            None if key_pem is None else write_temp(self.directory, key_path.name, key_pem, True)
        )
        temp_cert = write_temp(self.directory, cert_path.name, cert_pem, False)
        try:
            replaced = self._retire(name, key_pem is not None) if cert_path.exists() else None
            if temp_key is not None:  # the key first: a reader that finds a new certificate
                os.replace(temp_key, key_path)  # always finds its key beside it
            os.replace(temp_cert, cert_path)
        finally:
            for temp in (temp_key, temp_cert):
                if temp is not None and temp.exists():
                    temp.unlink()
        return replaced

    def _retire(self, name: str, with_key: bool) -> CertInfo:
        """Keep the current ``<name>.pem`` (and ``.key`` when it is replaced too) in
        ``retired/`` (hard links, else copies)."""
        current = read_certificate(self.directory / f"{name}.pem")
        retired = self.directory / RETIRED
        retired.mkdir(mode=0o700, exist_ok=True)
        kept = retired / f"{name}.{current.serial}.pem"
        for suffix, private in ((".pem", False), (".key", True))[: 2 if with_key else 1]:
            source = self.directory / f"{name}{suffix}"
            target = retired / f"{name}.{current.serial}{suffix}"
            if not source.exists() or target.exists():
                continue
            try:
                os.link(source, target)
            except OSError:
                _write(target, source.read_bytes(), private)
        return CertInfo.of(
            x509.load_pem_x509_certificate(kept.read_bytes()), name, kept, retired=True
        )

    def certificates(self, *, retired: bool = False) -> list[CertInfo]:
        """Every certificate in the CA directory (the CA first), and with ``retired`` those kept
        in ``retired/``; files that hold no certificate are skipped."""
        paths = sorted(self.directory.glob("*.pem"))
        if retired:
            paths += sorted((self.directory / RETIRED).glob("*.pem"))
        found = []
        for path in paths:
            try:
                found.append(read_certificate(path))
            except ConfigurationError:
                continue
        return sorted(found, key=lambda c: (c.retired, c.name != "ca", c.name, c.not_after))


def _ca_certificate(
    key: ec.EllipticCurvePrivateKey, now: datetime, days: int, name: x509.Name | None = None
) -> x509.Certificate:
    name = name or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "trustgw development CA")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


@dataclass(frozen=True)
class TlsFiles:
    """Paths of one side's certificate, key and the CA it trusts."""

    cert: Path
    key: Path
    ca: Path

    def read(self) -> tuple[bytes, bytes, bytes]:
        """The three files' PEM bytes, each checked to hold what it should.

        Raises :class:`keys.errors.ConfigurationError` naming the file that is unreadable or is
        not a PEM certificate (chain) / unencrypted PEM private key.
        """
        try:
            cert, key, ca = self.cert.read_bytes(), self.key.read_bytes(), self.ca.read_bytes()
        except PermissionError as exc:
            raise FilePermissionError(
                f"cannot read TLS file {exc.filename}: {exc.strerror} (run as the user that "
                "owns the data directory)"
            ) from None
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read TLS file {exc.filename}: {exc.strerror}"
            ) from None
        for path, data in ((self.cert, cert), (self.ca, ca)):
            try:
                x509.load_pem_x509_certificates(data)
            except ValueError:
                raise ConfigurationError(f"TLS file {path} is not a PEM certificate") from None
        try:
            private = serialization.load_pem_private_key(key, None)
        except (ValueError, TypeError):
            raise ConfigurationError(
                f"TLS file {self.key} is not an unencrypted PEM private key"
            ) from None
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        leaf = x509.load_pem_x509_certificates(cert)[0]
        if private.public_key().public_bytes(*spki) != leaf.public_key().public_bytes(*spki):
            raise ConfigurationError(
                f"TLS files {self.key} and {self.cert} are not a pair: the key is not the "
                "certificate's (replace both together)"
            )
        return cert, key, ca
