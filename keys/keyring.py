"""The gateway's own keys kept in the database, sealed under each machine's passphrase.

Every replica of a gateway reads the same ``gateway_keyring`` rows (SQLite or PostgreSQL, beside
the registry), so a rotation or a withdrawal made through any machine is in force on all of them
without copying files. What is stored (:class:`KeyringRecord`):

- per key: role, kid, algorithm, public key (SPKI), validity, status, compromise time, and the
  private key (PKCS#8) **sealed**: AES-256-GCM (``cryptography``) under a key derived with scrypt
  from the passphrase and the keyring's random salt; the associated data binds each blob to its
  role, kid and algorithm, so a blob moved to another row does not open;
- the pseudonym secret, sealed the same way;
- a check blob (a known text, sealed) that tells a wrong passphrase from damaged rows at once;
- a generation counter, increased by every change, which replicas compare to reload.

Only the passphrase is on each machine (``TRUSTGW_PASSPHRASE`` / ``TRUSTGW_PASSPHRASE_FILE``,
:func:`keys.keystore.passphrase_from_env`). Development mode stores the blobs unsealed (marked
``kdf: null``) and every open says so loudly in the log.

Nothing here touches the database: :mod:`keys.store.keyring` holds the SQL, and the plans of a
rotation and a withdrawal (:func:`plan_rotation`, :func:`plan_withdrawal`) are pure functions.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from keys.crypto import Algorithm, PrivateKey
from keys.errors import ConfigurationError, MalformedError, NotFoundError, PassphraseError
from keys.keystore import (
    DEFAULT_ACTIVATION_DELAY,
    PSEUDONYM_SECRET_BYTES,
    SCRYPT_N,
    SCRYPT_P,
    SCRYPT_R,
    GatewayKeyInfo,
    GatewayKeys,
    KeyEntry,
    KeyRole,
    check_gateway_algorithm,
)
from keys.model import KeyStatus
from keys.timeutil import ensure_utc, to_iso

log = logging.getLogger("trustgw.keys")

SEAL_FORMAT = 1
_NONCE_BYTES = 12
_SEALED = b"\x01"  # AES-256-GCM: 0x01 || nonce || ciphertext+tag
_OPEN = b"\x00"  # development mode: 0x00 || plaintext
_CHECK_TEXT = b"trustgw gateway keyring"
_AAD_PREFIX = b"trustgw/keyring/v1|"
MAX_BLOB_BYTES = 16 * 1024  # the largest sealed blob opened (an RSA PKCS#8 is ~1.7 KiB)
MAX_KDF_BYTES = 1024


class KeyringSeal:
    """What seals and opens the keyring's blobs: the key scrypt derives from the passphrase
    (or nothing, in development mode). Build with :meth:`new` or :meth:`open`."""

    def __init__(self, kdf: dict[str, Any], key: bytes | None) -> None:
        """Use :meth:`new`, :meth:`dev` or :meth:`open`."""
        self._kdf = kdf
        self._aead = AESGCM(key) if key is not None else None

    def __repr__(self) -> str:  # never the key
        return f"KeyringSeal(dev={self.dev})"

    @property
    def dev(self) -> bool:
        """True when blobs are stored unsealed (development only)."""
        return self._aead is None

    @property
    def kdf_text(self) -> str:
        """The key-derivation parameters as stored (JSON)."""
        return json.dumps(self._kdf, sort_keys=True, separators=(",", ":"))

    @classmethod
    def new(cls, passphrase: bytes) -> KeyringSeal:
        """A seal for a new keyring: a fresh salt, today's scrypt cost."""
        if not passphrase:
            raise PassphraseError()
        kdf = {
            "format": SEAL_FORMAT,
            "kdf": "scrypt",
            "n": SCRYPT_N,
            "r": SCRYPT_R,
            "p": SCRYPT_P,
            "salt": base64.b64encode(secrets.token_bytes(16)).decode("ascii"),
        }
        return cls(kdf, _derive(passphrase, kdf))

    @classmethod
    def development(cls) -> KeyringSeal:
        """The development seal: nothing is encrypted (and every open says so)."""
        _warn_dev(False)
        return cls({"format": SEAL_FORMAT, "kdf": None}, None)

    @classmethod
    def open(cls, kdf_text: str, check: bytes, passphrase: bytes | None) -> KeyringSeal:
        """The seal of a stored keyring, checked against its check blob.

        Raises :class:`PassphraseError` (none given for a sealed keyring, or a wrong one),
        :class:`ConfigurationError` (damaged parameters).
        """
        try:
            kdf = json.loads(kdf_text) if len(kdf_text) <= MAX_KDF_BYTES else None
        except ValueError:
            kdf = None
        if not isinstance(kdf, dict) or kdf.get("format") != SEAL_FORMAT:
            raise ConfigurationError("the gateway keyring's key-derivation parameters are damaged")
        if kdf.get("kdf") is None:
            seal = cls(kdf, None)
            _warn_dev(bool(passphrase))
        elif kdf.get("kdf") == "scrypt":
            if not passphrase:
                raise PassphraseError(
                    "the gateway keyring in the database is encrypted: set TRUSTGW_PASSPHRASE "
                    "or TRUSTGW_PASSPHRASE_FILE to its passphrase on this machine"
                )
            seal = cls(kdf, _derive(passphrase, kdf))
        else:
            raise ConfigurationError("the gateway keyring uses an unknown key derivation")
        try:
            text = seal.unseal(check, "check")
        except MalformedError:
            text = b""
        if text != _CHECK_TEXT:
            raise PassphraseError(
                "the passphrase does not open the gateway keyring in the database: wrong "
                "passphrase (check TRUSTGW_PASSPHRASE or TRUSTGW_PASSPHRASE_FILE on this machine)"
            )
        return seal

    def check_blob(self) -> bytes:
        """The sealed check text stored with a new keyring."""
        return self.seal(_CHECK_TEXT, "check")

    def seal(self, plaintext: bytes, label: str) -> bytes:
        """``plaintext`` sealed for the row named ``label`` (unsealed in dev mode)."""
        if self._aead is None:
            return _OPEN + plaintext
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return _SEALED + nonce + self._aead.encrypt(nonce, plaintext, _AAD_PREFIX + label.encode())

    def unseal(self, blob: bytes, label: str) -> bytes:
        """The plaintext of ``blob`` for the row ``label``; :class:`MalformedError` if it does
        not open (wrong key, another row's blob, damage, or a dev blob in a sealed keyring)."""
        if len(blob) > MAX_BLOB_BYTES or not blob:
            raise MalformedError(f"the keyring blob of {label} has an impossible size")
        if self._aead is None:
            if blob[:1] != _OPEN:
                raise MalformedError(f"the keyring blob of {label} is sealed, in a dev keyring")
            return blob[1:]
        if blob[:1] != _SEALED or len(blob) < 1 + _NONCE_BYTES + 16:
            raise MalformedError(f"the keyring blob of {label} is not sealed")
        nonce, body = blob[1 : 1 + _NONCE_BYTES], blob[1 + _NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, body, _AAD_PREFIX + label.encode())
        except InvalidTag:
            raise MalformedError(f"the keyring blob of {label} does not open") from None


def _derive(passphrase: bytes, kdf: dict[str, Any]) -> bytes:
    try:
        n, r, p = int(kdf["n"]), int(kdf["r"]), int(kdf["p"])
        salt = base64.b64decode(str(kdf["salt"]), validate=True)
    except (KeyError, TypeError, ValueError):
        raise ConfigurationError("the gateway keyring's scrypt parameters are damaged") from None
    if not (2**10 <= n <= 2**20 and 1 <= r <= 32 and 1 <= p <= 16 and len(salt) >= 16):
        raise ConfigurationError("the gateway keyring has unreasonable scrypt parameters")
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase)


def _warn_dev(passphrase_given: bool) -> None:
    log.warning(
        "DEV MODE: the gateway keys in the database are NOT encrypted%s. "
        "Dev mode must not be used in production.",
        " (the passphrase given is ignored)" if passphrase_given else "",
    )


def key_label(role: KeyRole, kid: str, alg: Algorithm) -> str:
    """What a key's blob is bound to (the AEAD's associated data)."""
    return f"key|{role.value}|{kid}|{alg.value}"


SECRET_LABEL = "pseudonym-secret"  # noqa: S105 (a label, not a secret)


@dataclass(frozen=True)
class SealedKey:
    """One row of the keyring: a gateway key's public description and its sealed private key."""

    info: GatewayKeyInfo
    sealed: bytes

    @property
    def role(self) -> KeyRole:
        """The key's role."""
        return self.info.role

    @property
    def kid(self) -> str:
        """The key's id (its public key's fingerprint)."""
        return self.info.kid


@dataclass(frozen=True)
class KeyringRecord:
    """Everything the keyring table holds, read in one transaction."""

    generation: int
    kdf: str
    check: bytes
    secret: bytes
    keys: tuple[SealedKey, ...]

    @property
    def dev(self) -> bool:
        """True for an unsealed (development) keyring."""
        try:
            return bool(json.loads(self.kdf).get("kdf") is None)
        except (ValueError, AttributeError):
            return False


@dataclass(frozen=True)
class KeyringChange:
    """One change of the keyring, applied whole or not at all by the store.

    Refused with :class:`keys.errors.ConcurrentChangeError` unless the keyring is still at
    ``expected_generation`` (another machine changed it meanwhile: re-read and re-plan).
    """

    expected_generation: int
    add: tuple[SealedKey, ...] = ()
    update: tuple[GatewayKeyInfo, ...] = ()  # new status / window / compromise time of a key
    drop: tuple[tuple[KeyRole, str], ...] = ()
    action: str = "gateway_key.change"
    actor: str = "operator:cli"
    at: datetime | None = None


class GatewayKeyring(GatewayKeys):
    """The unsealed keys of one keyring generation: what signs now (``signer``) and what is
    published (``public_keys``), immutable. Built by :func:`unseal`."""

    def __init__(
        self,
        *,
        dev: bool,
        entries: list[KeyEntry],
        pseudonym_secret: bytes,
        generation: int,
        seal: KeyringSeal,
    ) -> None:
        """Use :func:`unseal`."""
        super().__init__(dev=dev, entries=entries, pseudonym_secret=pseudonym_secret)
        self.generation = generation
        self.seal = seal

    def __repr__(self) -> str:
        return f"GatewayKeyring(generation={self.generation}, dev={self.dev})"

    @property
    def where(self) -> str:
        """Where the keys are kept, for messages."""
        return "the database's gateway keyring"


def seal_new_keyring(
    seal: KeyringSeal, entries: list[KeyEntry], pseudonym_secret: bytes
) -> KeyringRecord:
    """The record of a new keyring holding ``entries`` (generation 1)."""
    if len(pseudonym_secret) != PSEUDONYM_SECRET_BYTES:
        raise ValueError(f"the pseudonym secret is {PSEUDONYM_SECRET_BYTES} bytes")
    return KeyringRecord(
        generation=1,
        kdf=seal.kdf_text,
        check=seal.check_blob(),
        secret=seal.seal(pseudonym_secret, SECRET_LABEL),
        keys=tuple(seal_key(seal, e) for e in entries),
    )


def seal_key(seal: KeyringSeal, entry: KeyEntry) -> SealedKey:
    """A key's row: its private key (unencrypted PKCS#8 PEM) sealed for its label."""
    info = entry.info
    label = key_label(info.role, info.kid, info.public_key.alg)
    return SealedKey(info, seal.seal(entry.private.to_pem(None), label))


def unseal(
    record: KeyringRecord, passphrase: bytes | None, seal: KeyringSeal | None = None
) -> GatewayKeyring:
    """Open every key of ``record``: a damaged row or a wrong passphrase stops here, at start-up,
    not at the first request. ``seal``, when given (a reload of the same keyring), saves the
    scrypt derivation.

    Raises :class:`PassphraseError`, :class:`ConfigurationError` (a damaged or mismatched row).
    """
    if seal is None or seal.kdf_text != _normal(record.kdf):
        seal = KeyringSeal.open(record.kdf, record.check, passphrase)
    try:
        secret = seal.unseal(record.secret, SECRET_LABEL)
    except MalformedError as exc:
        raise ConfigurationError(f"the gateway keyring's pseudonym secret: {exc}") from None
    if len(secret) != PSEUDONYM_SECRET_BYTES:
        raise ConfigurationError("the gateway keyring's pseudonym secret has the wrong size")
    entries: list[KeyEntry] = []
    for row in record.keys:
        info = row.info
        label = key_label(info.role, info.kid, info.public_key.alg)
        try:
            private = PrivateKey.from_pem(seal.unseal(row.sealed, label), None)
        except MalformedError as exc:
            raise ConfigurationError(f"gateway {info.role} key {info.kid}: {exc}") from None
        public = private.public_key()
        if private.alg is not info.public_key.alg or public.spki != info.public_key.spki:
            raise ConfigurationError(
                f"gateway {info.role} key {info.kid}: the sealed private key does not match "
                "its public key"
            )
        entries.append(KeyEntry(info, "", private))
    return GatewayKeyring(
        dev=seal.dev,
        entries=entries,
        pseudonym_secret=secret,
        generation=record.generation,
        seal=seal,
    )


def _normal(kdf_text: str) -> str:
    try:
        return json.dumps(json.loads(kdf_text), sort_keys=True, separators=(",", ":"))
    except ValueError:
        return kdf_text


# --- plans ---------------------------------------------------------------------------------------


def generate_entries(
    roles: tuple[KeyRole, ...], start: datetime, validity: timedelta, algorithm: Algorithm
) -> list[KeyEntry]:
    """A fresh key per role, valid from ``start`` for ``validity``."""
    check_gateway_algorithm(algorithm)
    entries = []
    for role in roles:
        private = PrivateKey.generate(algorithm)
        public = private.public_key()
        info = GatewayKeyInfo(
            role, public.fingerprint(), public, start, start + validity, KeyStatus.ACTIVE
        )
        entries.append(KeyEntry(info, "", private))
    return entries


def plan_rotation(
    keyring: GatewayKeyring,
    role: KeyRole,
    now: datetime,
    *,
    activate_at: datetime | None = None,
    validity: timedelta = timedelta(days=365),
    algorithm: Algorithm | None = None,
    actor: str = "operator:cli",
) -> tuple[KeyringChange, GatewayKeyInfo]:
    """The change that adds a new ``role`` key signing from ``activate_at`` (default ``now`` +
    :data:`DEFAULT_ACTIVATION_DELAY`), as :meth:`keys.keystore.KeyDirectory.rotate` does: the
    role's ACTIVE keys become RETIRED (they sign until the new one is valid, and stay published
    until their ``not_after``), its keys past ``not_after`` are dropped; REVOKED keys stay.

    Raises ``ValueError`` (``activate_at`` in the past, non-positive ``validity``, an algorithm
    the gateway does not sign with).
    """
    if algorithm is None:
        algorithm = keyring.algorithm(role)
    check_gateway_algorithm(algorithm)
    now = ensure_utc(now).replace(microsecond=0)
    start = ensure_utc(activate_at if activate_at is not None else now + DEFAULT_ACTIVATION_DELAY)
    start = start.replace(microsecond=0)
    if start < now:
        raise ValueError("activate_at must not be in the past")
    if validity <= timedelta(0):
        raise ValueError("validity must be positive")
    (new,) = generate_entries((role,), start, validity, algorithm)
    update: list[GatewayKeyInfo] = []
    drop: list[tuple[KeyRole, str]] = []
    for info in keyring.public_keys():
        if info.role is not role:
            continue
        if info.not_after < now and info.status is not KeyStatus.REVOKED:
            drop.append((role, info.kid))
        elif info.status is KeyStatus.ACTIVE:
            update.append(replace(info, status=KeyStatus.RETIRED))
    change = KeyringChange(
        expected_generation=keyring.generation,
        add=(seal_key(keyring.seal, new),),
        update=tuple(update),
        drop=tuple(drop),
        action="gateway_key.rotate",
        actor=actor,
        at=now,
    )
    return change, new.info


def plan_withdrawal(
    keyring: GatewayKeyring,
    role: KeyRole,
    kid: str,
    compromised_at: datetime,
    now: datetime,
    *,
    actor: str = "operator:cli",
) -> tuple[KeyringChange, GatewayKeyInfo, GatewayKeyInfo | None]:
    """The change that withdraws a gateway key from ``compromised_at`` on: its status becomes
    REVOKED with that compromise time (an earlier one already stored is kept: a withdrawal only
    ever moves earlier), it never signs again, and verifiers refuse what it signed at or after
    ``compromised_at``.

    Withdrawing a key that signs now, or would sign later, **triggers a rotation**: a new key
    of the role, valid at once (an emergency rotation: no activation delay, since the
    withdrawn key must not sign even meanwhile), is added in the same change. Returns the
    change, the withdrawn key as stored after it, and the replacement (None when another key of
    the role already signs).

    Raises :class:`NotFoundError` (no such key of that role), ``ValueError`` (a compromise
    time after ``now``: a withdrawal is of what already happened).
    """
    now = ensure_utc(now).replace(microsecond=0)
    at = ensure_utc(compromised_at).replace(microsecond=0)
    if at > now:
        raise ValueError(
            f"the compromise time {to_iso(at)} is in the future: a withdrawal is of a key "
            "already compromised (rotate instead to replace a key in due course)"
        )
    current = next(
        (i for i in keyring.public_keys() if i.role is role and i.kid == kid),
        None,
    )
    if current is None:
        raise NotFoundError(f"the gateway has no {role.value} key {kid}", region="370000")
    if current.revoked_at is not None and current.revoked_at <= at:
        at = current.revoked_at
    withdrawn = replace(current, status=KeyStatus.REVOKED, revoked_at=at)
    remaining = [
        i
        for i in keyring.public_keys()
        if i.role is role and i.kid != kid and i.status is not KeyStatus.REVOKED
    ]
    # Someone else signs now and on: a key valid now, or one already announced.
    covered = any(i.valid_at(now) for i in remaining)
    add: tuple[SealedKey, ...] = ()
    update = [withdrawn]
    replacement: GatewayKeyInfo | None = None
    if not covered:
        validity = max(current.not_after - current.not_before, timedelta(days=1))
        (new,) = generate_entries((role,), now, validity, current.public_key.alg)
        add = (seal_key(keyring.seal, new),)
        replacement = new.info
        update += [
            replace(i, status=KeyStatus.RETIRED) for i in remaining if i.status is KeyStatus.ACTIVE
        ]
    change = KeyringChange(
        expected_generation=keyring.generation,
        add=add,
        update=tuple(update),
        action="gateway_key.withdraw",
        actor=actor,
        at=now,
    )
    return change, withdrawn, replacement


def info_json(info: GatewayKeyInfo) -> dict[str, Any]:
    """A gateway key as the audit trail records it (public facts only)."""
    out: dict[str, Any] = {
        "role": info.role.value,
        "kid": info.kid,
        "alg": info.public_key.alg.value,
        "not_before": to_iso(info.not_before),
        "not_after": to_iso(info.not_after),
        "status": info.status.value,
    }
    if info.revoked_at is not None:
        out["revoked_at"] = to_iso(info.revoked_at)
    return out


__all__ = [
    "GatewayKeyring",
    "KeyringChange",
    "KeyringRecord",
    "KeyringSeal",
    "SealedKey",
    "generate_entries",
    "info_json",
    "key_label",
    "plan_rotation",
    "plan_withdrawal",
    "seal_key",
    "seal_new_keyring",
    "unseal",
]
