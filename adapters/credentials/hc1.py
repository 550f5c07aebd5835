"""EU Digital COVID Certificates ("HC1:"), verified through the shared COSE codec.

Steps, named as the EU conformance suite names them (a failure's message starts with its name):

``UNPREFIX``  the text starts with ``HC1:``;
``B45DECODE`` strict RFC 9285 base45 (size-limited);
``COMPRESSION`` a complete zlib stream, inflated up to a size limit (uncompressed is an error);
``COSE``      a COSE_Sign1 (untagged, tag 18, or tag 18 inside CWT tag 61); alg and kid from the
              protected header first, the unprotected one otherwise; ES256, PS256 or EdDSA;
``VERIFY``    the kid names a trusted signer certificate (kid = first 8 bytes of SHA-256 over its
              DER) and the signature verifies with its key (ES256 raw r||s, PS256 salt 32);
``DECODE``    the signed payload is a CWT claims map with ``iat`` (6), ``exp`` (4) and the health
              certificate ``-260 -> {1: {...}}``; CBOR date tags 0 and 1 only where the DCC
              schema holds a date-time (a test's ``sc`` and ``dr``), shown as RFC 3339 text;
``EXPIRATIONCHECK`` ``iat <= now <= exp``, both ends inclusive;
``KEYUSAGE``  when the signer certificate names DCC extended-key-usage OIDs
              (1.3.6.1.4.1.1847.2021.1.{1 test, 2 vaccination, 3 recovery}, or the same with
              ``.0.`` after ``4.1``), each certificate type in the code (t, v, r) is allowed.

Nothing in the code is trusted before ``VERIFY``; nothing but the kid is read before it.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import cbor2
from cryptography import x509

from adapters.codecs.cose import CoseCodec, CoseTag, KidForm
from adapters.codecs.encoding import (
    DateTag,
    b45decode,
    inflate,
    parse_cbor,
    parse_json,
    strip_prefix,
)
from adapters.credentials import step
from keys.crypto import Algorithm, PublicKey, load_public_key
from keys.der import pem_blocks, read_certificate
from keys.errors import (
    AlgorithmUnsupportedError,
    CodeExpiredError,
    CodeNotYetValidError,
    ForeignDataError,
    KeyUnknownError,
    KeyUsageError,
    MalformedError,
    OversizedError,
    SignatureInvalidError,
)
from keys.timeutil import ensure_utc

PREFIX = "HC1:"
# A QR code holds at most 4296 alphanumeric characters; allow some room, but stay bounded.
MAX_TEXT_CHARS = 8 * 1024
MAX_MESSAGE_BYTES = 64 * 1024  # the COSE message after inflating
MAX_TRUST_BYTES = 256 * 1024

CWT_ISS, CWT_EXP, CWT_IAT, CWT_HCERT = 1, 4, 6, -260
HCERT_EU_DCC = 1

# Where the DCC schema holds a date-time ("format": "date-time"): a test entry's sample collection
# time ``sc`` and, in schemas 1.0 to 1.2, its result time ``dr``. Every other time in the schema is
# a date (dob, v.dt, r.fr, r.df, r.du) and the CWT's own times are untagged NumericDates.
DCC_DATE_TIME_MEMBERS = frozenset({"sc", "dr"})
MAX_DATE_TIME_CHARS = 40
_RFC3339_DATE_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
_LAST_EPOCH_SECOND = 253_402_300_799  # 9999-12-31T23:59:59Z

# Certificate type in the payload -> the extended-key-usage arc that allows it.
_TYPE_ARC = {"t": 1, "v": 2, "r": 3}
_EKU_PREFIXES = ("1.3.6.1.4.1.1847.2021.1.", "1.3.6.1.4.1.0.1847.2021.1.")

CODEC = CoseCodec(
    PREFIX,
    frozenset({Algorithm.ES256, Algorithm.PS256, Algorithm.EDDSA}),
    kid_form=KidForm.BASE64,
    tag=CoseTag.CWT_SIGN1,
    max_message_bytes=MAX_MESSAGE_BYTES,
)


@dataclass(frozen=True)
class Signer:
    """A trusted document signer: its key, its kid, and the certificate types it may sign."""

    kid: str | None  # base64 of 8 bytes; None for a bare public key (matches any kid)
    key: PublicKey | None  # None: a certificate whose key the gateway cannot use
    allowed_types: frozenset[str] | None  # None = no key-usage restriction
    unusable: str = ""  # why ``key`` is None

    @classmethod
    def from_certificate(cls, der: bytes) -> Signer:
        """From a DER certificate, strict DER or not. Raises ``ForeignDataError``.

        A certificate whose key is of a kind the gateway does not verify with (RSA under 2048
        bits, another curve ...) still loads: codes it signed are then refused at VERIFY.
        """
        kid = base64.b64encode(hashlib.sha256(der).digest()[:8]).decode("ascii")
        allowed = _allowed_types(_extended_key_usage(der))
        try:
            return cls(kid, load_public_key(der), allowed)
        except ForeignDataError as exc:
            read_certificate(der)  # not a certificate at all: raise
            return cls(kid, None, allowed, f"the signer certificate's key: {exc.message}")


@dataclass(frozen=True)
class DccTrust:
    """The signer certificates an offline check trusts."""

    signers: tuple[Signer, ...]

    @classmethod
    def from_bytes(cls, data: bytes) -> DccTrust:
        """Certificates as PEM (one or more), DER, or base64 of DER; a bare public key (PEM/DER);
        or a conformance-suite case file (its ``TESTCTX.CERTIFICATE``).

        Raises ``ValueError`` for a file that holds none of these (a usage error).
        """
        if len(data) > MAX_TRUST_BYTES:
            raise ValueError(f"the trust file exceeds {MAX_TRUST_BYTES} bytes")
        try:
            return cls(_load_signers(data))
        except (ForeignDataError, ValueError) as exc:  # a file that holds no signer: usage error
            raise ValueError(f"not a signer certificate or public key ({exc})") from None

    def signer_for(self, kid: str | None) -> Signer:
        """The document signer with key id ``kid`` (or the only one without a kid); raises
        :class:`KeyUnknownError`.
        """
        if kid is None:
            raise KeyUnknownError("the COSE headers carry no kid")
        for signer in self.signers:
            if signer.kid == kid:
                return signer
        bare = [s for s in self.signers if s.kid is None]
        if len(bare) == 1:
            return bare[0]
        raise KeyUnknownError(f"no trusted signer certificate has kid {kid}", kid=kid)


def _load_signers(data: bytes) -> tuple[Signer, ...]:
    stripped = data.strip()
    if stripped.startswith(b"{"):
        case = parse_json(stripped, limit=MAX_TRUST_BYTES)
        context = case.get("TESTCTX") if isinstance(case, dict) else None
        certificate = context.get("CERTIFICATE") if isinstance(context, dict) else None
        if not isinstance(certificate, str):
            raise ValueError("a JSON trust file is a conformance case with TESTCTX.CERTIFICATE")
        der = base64.b64decode(certificate, validate=True)
        return (Signer.from_certificate(der),)
    if b"-----BEGIN CERTIFICATE-----" in stripped:
        blocks = pem_blocks(stripped, "CERTIFICATE")
        if not blocks:
            raise MalformedError("no PEM certificate could be read")
        return tuple(Signer.from_certificate(der) for der in blocks)
    if stripped.startswith(b"-----BEGIN"):
        return (Signer(None, load_public_key(stripped), None),)
    if stripped[:1] == b"M" and stripped.isascii():  # base64 of a DER SEQUENCE
        der = base64.b64decode(b"".join(stripped.split()), validate=True)
        return (Signer.from_certificate(der),)
    try:
        return (Signer.from_certificate(data),)
    except MalformedError:
        return (Signer(None, load_public_key(data), None),)


def _extended_key_usage(der: bytes) -> tuple[str, ...] | None:
    """The certificate's EKU OIDs: cryptography first, the tolerant DER reader otherwise."""
    try:
        cert = x509.load_der_x509_certificate(der)
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        return tuple(oid.dotted_string for oid in usage)
    except x509.ExtensionNotFound:
        return None
    except ValueError:  # not strict DER: cryptography refuses it or one of its extensions
        return read_certificate(der).extended_key_usage


def _allowed_types(oids: tuple[str, ...] | None) -> frozenset[str] | None:
    arcs = {
        oid[len(prefix) :]
        for oid in oids or ()
        for prefix in _EKU_PREFIXES
        if oid.startswith(prefix)
    }
    if not arcs:
        return None
    return frozenset(t for t, arc in _TYPE_ARC.items() if str(arc) in arcs)


def _numeric_date(claims: Mapping[Any, Any], label: int, name: str) -> float:
    value = claims.get(label)
    if value is None:
        raise MalformedError(f"the CWT has no {name} claim")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise MalformedError(f"the CWT {name} claim is not a number")
    return float(value)


def _dcc_claims(payload: bytes) -> Mapping[Any, Any]:
    """The verified CWT claims, with date tags resolved where the DCC schema allows them."""
    claims = parse_cbor(payload, limit=MAX_MESSAGE_BYTES, date_tags=True)
    if not isinstance(claims, Mapping):
        raise MalformedError("the CWT claims are not a CBOR map")
    resolved: Mapping[Any, Any] = _resolve_dates(claims, ())
    return resolved


def _is_date_time_member(path: tuple[Any, ...]) -> bool:
    """``-260 -> 1 -> "t" -> i -> "sc" | "dr"``: a test entry's date-time."""
    return (
        len(path) == 5
        and type(path[0]) is int
        and path[0] == CWT_HCERT
        and type(path[1]) is int
        and path[1] == HCERT_EU_DCC
        and path[2] == "t"
        and type(path[3]) is int
        and path[4] in DCC_DATE_TIME_MEMBERS
    )


def _where(path: tuple[Any, ...]) -> str:
    return ".".join(str(step) for step in path)[:80] or "the top level"


def _resolve_dates(value: Any, path: tuple[Any, ...]) -> Any:
    if isinstance(value, DateTag):
        if not _is_date_time_member(path):
            raise MalformedError(
                f"CBOR tag {value.tag} at {_where(path)} is not accepted: date tags are "
                "accepted only on a test's sc and dr (-260.1.t.N)"
            )
        return _date_time_text(value, path)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            _no_date_tags(key, path)
            out[key] = _resolve_dates(item, (*path, key))
        return out
    if isinstance(value, list):
        return [_resolve_dates(item, (*path, index)) for index, item in enumerate(value)]
    if isinstance(value, tuple):  # an array as a map key: never a date-time
        _no_date_tags(value, path)
    if isinstance(value, cbor2.CBORTag):
        return cbor2.CBORTag(value.tag, _resolve_dates(value.value, (*path, f"tag{value.tag}")))
    return value


def _no_date_tags(key: Any, path: tuple[Any, ...]) -> None:
    if isinstance(key, DateTag):
        raise MalformedError(f"CBOR tag {key.tag} as a map key at {_where(path)} is not accepted")
    if isinstance(key, (tuple, Mapping)):
        for item in key.items() if isinstance(key, Mapping) else key:
            _no_date_tags(item, path)


def _date_time_text(tagged: DateTag, path: tuple[Any, ...]) -> str:
    """RFC 8949 §3.4.1 / §3.4.2: the tag's content, as RFC 3339 text.

    Tag 0 must hold an RFC 3339 date-time with an offset (kept as written); tag 1 an integer or
    finite float of epoch seconds (written as UTC, ``Z``).
    """
    where = _where(path)
    value = tagged.value
    if tagged.tag == 0:
        if (
            type(value) is not str
            or len(value) > MAX_DATE_TIME_CHARS
            or not _RFC3339_DATE_TIME.fullmatch(value)
        ):
            raise MalformedError(f"CBOR tag 0 at {where} does not hold an RFC 3339 date-time")
        try:
            datetime.fromisoformat(value.upper())
        except ValueError:
            raise MalformedError(f"CBOR tag 0 at {where} holds no valid date-time") from None
        return value
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not 0 <= value <= _LAST_EPOCH_SECOND
    ):
        raise MalformedError(f"CBOR tag 1 at {where} does not hold epoch seconds (1970-9999)")
    return datetime.fromtimestamp(value, UTC).isoformat().replace("+00:00", "Z")


def code_of(text: str) -> str:
    """The code in ``text``: the text itself, without surrounding line breaks, or the ``PREFIX``
    of a conformance-suite case file."""
    stripped = text.strip("\r\n\t").lstrip(" ")
    if stripped.startswith("{") and len(stripped) <= 4 * MAX_TRUST_BYTES:
        try:
            case = parse_json(stripped.encode("utf-8", "surrogatepass"), limit=4 * MAX_TRUST_BYTES)
        except ForeignDataError:
            return stripped
        if isinstance(case, dict) and isinstance(case.get("PREFIX"), str):
            return str(case["PREFIX"])
    return stripped


def verify(
    text: str, trust: DccTrust, now: datetime, verified: dict[Any, Any] | None = None
) -> Mapping[Any, Any]:
    """Verify one HC1 code at ``now``; return its CWT claims.

    Raises a :class:`keys.errors.ForeignDataError` subclass whose message starts with the step
    that failed. Once the claims are verified and decoded they are also put in ``verified``.
    """
    with step("UNPREFIX"):
        body = strip_prefix(text, PREFIX)
    with step("B45DECODE"):
        if len(body) > MAX_TEXT_CHARS:
            raise OversizedError(f"the code is longer than {MAX_TEXT_CHARS} characters")
        data = b45decode(body, limit=MAX_TEXT_CHARS)
    with step("COMPRESSION"):
        message = inflate(data, raw=False, limit=MAX_MESSAGE_BYTES)
    with step("COSE"):
        envelope = CODEC.open_message(message)
    with step("VERIFY"):
        signer = trust.signer_for(envelope.kid_hint)
        if signer.key is None:
            raise AlgorithmUnsupportedError(signer.unusable)
        if envelope.alg is not signer.key.alg:
            raise SignatureInvalidError(
                f"the code declares {envelope.alg}, the signer's key is {signer.key.alg}"
            )
        signer.key.verify(envelope.signing_input, envelope.signature)
    # From here on the payload is signed by a trusted signer.
    with step("DECODE"):
        claims = _dcc_claims(envelope.payload)
        iat = _numeric_date(claims, CWT_IAT, "iat (6)")
        exp = _numeric_date(claims, CWT_EXP, "exp (4)")
        hcert = claims.get(CWT_HCERT)
        if not isinstance(hcert, Mapping) or not isinstance(hcert.get(HCERT_EU_DCC), Mapping):
            raise MalformedError("the CWT has no health certificate (-260 -> 1 -> map)")
        dcc: Mapping[Any, Any] = hcert[HCERT_EU_DCC]
        types = {t for t in _TYPE_ARC if t in dcc}
    if verified is not None:
        verified.update(claims)
    with step("EXPIRATIONCHECK"):
        at = ensure_utc(now).timestamp()
        if at < iat:
            raise CodeNotYetValidError(f"the code is issued at {iat:.0f}, after {at:.0f}")
        if at > exp:
            raise CodeExpiredError(f"the code expired at {exp:.0f}, before {at:.0f}")
    with step("KEYUSAGE"):
        if signer.allowed_types is not None and not types <= signer.allowed_types:
            allowed = ",".join(sorted(signer.allowed_types)) or "none"
            raise KeyUsageError(
                f"the signer certificate allows types {allowed}, the code holds "
                f"{','.join(sorted(types))}"
            )
    return claims


__all__ = ["CODEC", "PREFIX", "DccTrust", "Signer", "code_of", "verify"]
