"""A development PKI for mutual TLS, and how a peer's certificate maps to a role.

Every client of the gateway presents a certificate. Its role is written as a URI in the
certificate's subjectAltName, which the gateway reads from the verified TLS session:

* ``trustgw://partner/<region>``: a partner provincial system; may write only that region;
* ``trustgw://verifier/<name>``: a checkpoint or verifier system; may recognise codes and read;
* ``trustgw://operator/<name>``: operator tooling; may read everything.

``trustgw pki`` creates a CA and certificates for development and tests. Production deployments
use the province's own CA with the same subjectAltName convention.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from keys.errors import ConfigurationError, GatewayError

URI_SCHEME = "trustgw://"


class Role(StrEnum):
    PARTNER = "partner"
    VERIFIER = "verifier"
    OPERATOR = "operator"


class PermissionDeniedError(GatewayError):
    reason = "PERMISSION_DENIED"
    grpc_status = "PERMISSION_DENIED"
    default_message = "the caller's certificate does not allow this call"


class UnauthenticatedError(GatewayError):
    reason = "UNAUTHENTICATED"
    grpc_status = "UNAUTHENTICATED"
    default_message = "the call carries no client certificate the gateway recognises"


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
        if role is Role.PARTNER and (len(name) != 6 or not name.isdigit()):
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


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(path: Path, data: bytes, private: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(path, flags, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass(frozen=True)
class DevCA:
    """A development certificate authority kept in a directory (``ca.pem``, ``ca.key``)."""

    directory: Path

    @property
    def cert_path(self) -> Path:
        return self.directory / "ca.pem"

    @classmethod
    def create(cls, directory: Path, now: datetime, days: int = 365) -> DevCA:
        if (directory / "ca.key").exists():
            raise ConfigurationError(f"{directory} already holds a CA")
        key = _key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "trustgw development CA")])
        cert = (
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
            .sign(key, hashes.SHA256())
        )
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

    def issue(
        self,
        name: str,
        *,
        uri: str | None = None,
        server: bool = False,
        now: datetime,
        days: int = 90,
        hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
    ) -> tuple[Path, Path]:
        """Issue a certificate and key into the CA directory as ``<name>.pem`` / ``<name>.key``.

        A server certificate names ``hosts``; a client certificate carries ``uri`` (its role).
        """
        ca_cert, ca_key = self._load()
        key = _key()
        alt_names: list[x509.GeneralName] = []
        if server:
            for host in hosts:
                try:
                    alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    alt_names.append(x509.DNSName(host))
        if uri:
            alt_names.append(x509.UniformResourceIdentifier(uri))
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        cert_path = self.directory / f"{name}.pem"
        key_path = self.directory / f"{name}.key"
        _write(key_path, _pem_key(key), private=True)
        _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), private=False)
        return cert_path, key_path


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
            serialization.load_pem_private_key(key, None)
        except (ValueError, TypeError):
            raise ConfigurationError(
                f"TLS file {self.key} is not an unencrypted PEM private key"
            ) from None
        return cert, key, ca
