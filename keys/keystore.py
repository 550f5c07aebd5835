"""The gateway's own keys, kept in a key directory.

Layout (directory mode 0700, every file 0600, created with that mode, never chmod-ed later)::

    keys.json               manifest: dev flag, and per key: role, kid, alg, file, validity, status
    attest-<kid>.pem        PKCS#8 PEM, encrypted with the passphrase (unencrypted in dev mode)
    issue-<kid>.pem
    pseudonym.key           JSON: the 32-byte pseudonym secret as a Fernet token under a key
                            derived with scrypt from the passphrase and a random salt

Three roles, three keys: ``attest`` signs the gateway's decisions, ``issue`` signs converted
home-province codes, ``trustlist`` signs the trust list (see keys/trustlist.py); a verifier that
trusts one role does not thereby trust another. A directory created before the ``trustlist``
role existed gets its trustlist key when it is next opened.

Dev mode stores everything unencrypted, for demos and tests only, and says so loudly in the log.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from keys.crypto import Algorithm, PrivateKey
from keys.errors import (
    ConfigurationError,
    KeyDirectoryError,
    MalformedError,
    PassphraseError,
)
from keys.keyset import GatewayKeyInfo, GatewayKeys, KeyEntry, KeyRole, Signers
from keys.model import KeyStatus
from keys.privatefiles import (
    MAX_FILE_BYTES,
    check_private,
    fsync_dir,
    read_json,
    read_private,
    remove_tree,
    replace_file,
    unlink_quietly,
    write_new,
)
from keys.timeutil import ensure_utc, parse_time, to_iso

log = logging.getLogger("trustgw.keys")

# Roles a key directory written before they existed may lack (KeyDirectory.open).
_LATER_ROLES = frozenset({KeyRole.TRUSTLIST, KeyRole.PLACE})
MANIFEST = "keys.json"
PSEUDONYM_FILE = "pseudonym.key"
FORMAT_VERSION = 1
PSEUDONYM_SECRET_BYTES = 32
# scrypt cost for the pseudonym secret's key: ~0.1 s and 32 MiB once per start. Stored in the
# file, so that a later change of defaults still opens old directories.
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1

# A rotation's new key signs this long after it is published, unless told otherwise: long
# enough for every replica to reload the key directory (one refresh interval, 0.5 s by default,
# or a copy to another host) and to record and push the trust list that carries the key, and for
# a watcher whose connection dropped to reconnect (gRPC backs off up to 120 s between attempts)
# and fetch that list. See docs/operations.md, "Rotating keys".
DEFAULT_ACTIVATION_DELAY = timedelta(minutes=5)

# Names of environment variables, not secrets.
ENV_PASSPHRASE = "TRUSTGW_PASSPHRASE"  # noqa: S105
ENV_PASSPHRASE_FILE = "TRUSTGW_PASSPHRASE_FILE"  # noqa: S105


# What the gateway's own keys may be: Ed25519 by default, SM2 for a deployment whose partners
# require the national algorithms (docs/verifying.md §"Algorithms"), ES256 where P-256 is asked.
GATEWAY_ALGORITHMS = frozenset({Algorithm.EDDSA, Algorithm.ES256, Algorithm.SM2})


def check_gateway_algorithm(alg: Algorithm) -> Algorithm:
    """``alg`` if the gateway may sign with it; ``ValueError`` otherwise."""
    if alg not in GATEWAY_ALGORITHMS:
        raise ValueError(f"the gateway does not sign with {alg}")
    return alg


_Entry = KeyEntry
__all__ = [
    "DEFAULT_ACTIVATION_DELAY",
    "GATEWAY_ALGORITHMS",
    "GatewayKeyInfo",
    "GatewayKeys",
    "KeyDirectory",
    "KeyEntry",
    "KeyRole",
    "Signers",
    "check_gateway_algorithm",
    "passphrase_from_env",
]


def passphrase_from_env(environ: Mapping[str, str] = os.environ) -> bytes | None:
    """The key directory's passphrase from the environment, or None if none is configured.

    ``TRUSTGW_PASSPHRASE`` holds it directly; ``TRUSTGW_PASSPHRASE_FILE`` names a file holding it
    (a trailing newline is stripped). Empty variables count as unset. Raises
    :class:`ConfigurationError` if both are set, :class:`PassphraseError` if the file cannot be
    read or is empty.
    """
    direct = environ.get(ENV_PASSPHRASE) or None
    file_name = environ.get(ENV_PASSPHRASE_FILE) or None
    if direct is not None and file_name is not None:
        raise ConfigurationError(
            f"both {ENV_PASSPHRASE} and {ENV_PASSPHRASE_FILE} are set: set only one"
        )
    if direct is not None:
        return direct.encode("utf-8")
    if file_name is None:
        return None
    try:
        with open(file_name, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise PassphraseError(
            f"cannot read the passphrase file {file_name} ({ENV_PASSPHRASE_FILE}): "
            f"{exc.strerror or exc}"
        ) from None
    if len(data) > MAX_FILE_BYTES:
        raise PassphraseError(f"the passphrase file {file_name} is larger than 1 MiB")
    if data.endswith(b"\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n"):
        data = data[:-1]
    if not data:
        raise PassphraseError(f"the passphrase file {file_name} is empty")
    return data


class KeyDirectory(GatewayKeys):
    """The gateway's signing keys and pseudonym secret, loaded from a key directory.

    All private keys are decrypted when the directory is opened, so that a wrong passphrase or a
    damaged file stops the gateway at start-up, not at its first request.
    """

    def __init__(
        self,
        path: Path,
        *,
        dev: bool,
        passphrase: bytes | None,
        entries: list[_Entry],
        pseudonym_secret: bytes,
    ) -> None:
        """Use :meth:`create` or :meth:`open`."""
        super().__init__(dev=dev, entries=entries, pseudonym_secret=pseudonym_secret)
        self._path = path
        self._passphrase = passphrase

    @property
    def where(self) -> str:
        """Where the keys are kept, for messages."""
        return str(self._path)

    def __repr__(self) -> str:
        return f"KeyDirectory({str(self._path)!r}, dev={self._dev})"

    # -- constructors ------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: Path,
        *,
        dev: bool,
        passphrase: bytes | None,
        now: datetime,
        validity: timedelta = timedelta(days=365),
        algorithm: Algorithm = Algorithm.EDDSA,
    ) -> KeyDirectory:
        """Create a key directory at ``path`` with one key per role, valid from ``now``, all of
        ``algorithm`` (the deployment's choice: EdDSA unless partners require SM2 or ES256).

        ``path`` must not exist, or be an empty directory. The directory is built under a
        temporary name beside ``path`` and renamed into place, so a failure leaves nothing behind.

        Raises :class:`PassphraseError` without a passphrase outside dev mode,
        :class:`KeyDirectoryError` if ``path`` is not empty or cannot be written, ``ValueError``
        for a non-positive ``validity`` or an algorithm the gateway does not sign with.
        """
        path = Path(path)
        check_gateway_algorithm(algorithm)
        if validity <= timedelta(0):
            raise ValueError("validity must be positive")
        if not dev and not passphrase:
            raise PassphraseError()
        if dev:
            _warn_dev(path, passphrase)
            passphrase = None
        start = ensure_utc(now).replace(microsecond=0)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise KeyDirectoryError(f"{path} already exists and is not an empty directory")
        staging = path.parent / f".{path.name}.tmp-{secrets.token_hex(4)}"
        try:
            os.mkdir(staging, 0o700)
            entries = [
                _new_entry(staging, role, start, start + validity, passphrase, algorithm)
                for role in KeyRole
            ]
            secret = secrets.token_bytes(PSEUDONYM_SECRET_BYTES)
            write_new(staging / PSEUDONYM_FILE, _seal_secret(secret, passphrase))
            write_new(staging / MANIFEST, _manifest_bytes(dev, entries))
            fsync_dir(staging)
            os.rename(staging, path)  # replaces an empty directory at `path` atomically
            fsync_dir(path.parent)
        except OSError as exc:
            remove_tree(staging)
            raise KeyDirectoryError(f"cannot create key directory {path}: {exc}") from exc
        except BaseException:
            remove_tree(staging)
            raise
        log.info(
            "key directory %s created: %s",
            path,
            ", ".join(f"{e.info.role} {e.info.kid}" for e in entries),
        )
        return cls(path, dev=dev, passphrase=passphrase, entries=entries, pseudonym_secret=secret)

    @classmethod
    def open(
        cls, path: Path, *, passphrase: bytes | None, now: datetime | None = None
    ) -> KeyDirectory:
        """Open an existing key directory and decrypt every key in it.

        A directory without a ``trustlist`` key (created before that role existed) gets one,
        valid from ``now`` (default: the clock) for 365 days, written like a rotation.

        Raises :class:`KeyDirectoryError` if the directory or a file in it is missing, damaged,
        or accessible to group or others, or the missing trustlist key cannot be written;
        :class:`PassphraseError` if a passphrase is needed and missing, or does not decrypt
        the keys.
        """
        path = Path(path)
        check_private(path, directory=True)
        manifest = read_json(path / MANIFEST)
        try:
            if manifest.get("format") != FORMAT_VERSION:
                raise KeyDirectoryError(
                    f"{path / MANIFEST} has format {manifest.get('format')!r}; "
                    f"this gateway reads format {FORMAT_VERSION}"
                )
            dev = manifest["dev"]
            if not isinstance(dev, bool):
                raise KeyDirectoryError(f"{path / MANIFEST}: 'dev' must be true or false")
            if dev:
                _warn_dev(path, passphrase)
                passphrase = None
            elif not passphrase:
                raise PassphraseError()
            secret = _unseal_secret(path / PSEUDONYM_FILE, passphrase)
            entries = [_load_entry(path, item, passphrase) for item in manifest["keys"]]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise KeyDirectoryError(f"{path / MANIFEST} is damaged: {exc!r}") from None
        for role in KeyRole:
            # trustlist and place came later: a directory without them gets/needs a rotation
            if role in _LATER_ROLES:
                continue
            if not any(e.info.role is role for e in entries):
                raise KeyDirectoryError(f"{path / MANIFEST} lists no {role} key")
        directory = cls(
            path, dev=dev, passphrase=passphrase, entries=entries, pseudonym_secret=secret
        )
        if not any(e.info.role is KeyRole.TRUSTLIST for e in entries):
            start = ensure_utc(now if now is not None else datetime.now(UTC))
            # No trustlist key existed, so no verifier can be waiting for this one: at once.
            info = directory.rotate(KeyRole.TRUSTLIST, start, activate_at=start)
            log.info("key directory %s had no trustlist key: created %s", path, info.kid)
        return directory

    @property
    def path(self) -> Path:
        """Where the directory lives."""
        return self._path

    # -- rotation ----------------------------------------------------------------------------

    def rotate(
        self,
        role: KeyRole,
        now: datetime,
        *,
        activate_at: datetime | None = None,
        validity: timedelta = timedelta(days=365),
        algorithm: Algorithm | None = None,
    ) -> GatewayKeyInfo:
        """Add a new key for ``role`` that signs from ``activate_at`` on.

        The new key is of ``algorithm``, by default that of the role's newest key: a deployment
        keeps its algorithm across rotations, and changes it (say EdDSA to SM2) by a rotation
        that names the new one. Verifiers hold both keys meanwhile, each with its algorithm.

        ``activate_at`` defaults to ``now`` + :data:`DEFAULT_ACTIVATION_DELAY`, so that every
        replica and every trust-list watcher has the key before anything carries its signature;
        ``activate_at=now`` is for an emergency (a compromised key). The new key is published at
        once (it appears in :meth:`public_keys`). The role's previous ACTIVE keys become
        RETIRED: they keep signing until the new key is valid and stay published until their
        ``not_after``, so that what they signed can still be verified. The role's keys whose
        ``not_after`` is before ``now`` are dropped (with their files).
        The manifest is replaced atomically.

        Raises ``ValueError`` if ``activate_at`` is before ``now``, ``validity`` is not
        positive or the gateway does not sign with ``algorithm``, :class:`KeyDirectoryError` if
        the directory cannot be written.
        """
        if algorithm is None:
            algorithm = self.algorithm(role)
        check_gateway_algorithm(algorithm)
        now = ensure_utc(now).replace(microsecond=0)
        if activate_at is None:
            activate_at = now + DEFAULT_ACTIVATION_DELAY
        start = ensure_utc(activate_at).replace(microsecond=0)
        if start < now:
            raise ValueError("activate_at must not be in the past")
        if validity <= timedelta(0):
            raise ValueError("validity must be positive")
        try:
            new = _new_entry(self._path, role, start, start + validity, self._passphrase, algorithm)
        except OSError as exc:
            raise KeyDirectoryError(f"cannot write a new key into {self._path}: {exc}") from exc
        kept: list[_Entry] = []
        dropped: list[_Entry] = []
        for entry in self._entries:
            # Published through its not_after (what it signed may be valid until then).
            if entry.info.role is role and entry.info.not_after < now:
                dropped.append(entry)
            elif entry.info.role is role and entry.info.status is KeyStatus.ACTIVE:
                kept.append(replace(entry, info=replace(entry.info, status=KeyStatus.RETIRED)))
            else:
                kept.append(entry)
        entries = [*kept, new]
        try:
            replace_file(self._path / MANIFEST, _manifest_bytes(self._dev, entries))
        except OSError as exc:
            unlink_quietly(self._path / new.file)
            raise KeyDirectoryError(f"cannot update {self._path / MANIFEST}: {exc}") from exc
        for entry in dropped:
            unlink_quietly(self._path / entry.file)
        self._entries = entries
        log.info(
            "gateway %s key %s added to %s, signing from %s",
            role,
            new.info.kid,
            self._path,
            to_iso(start),
        )
        return new.info


# --- helpers -----------------------------------------------------------------------------------


def _warn_dev(path: Path, passphrase: bytes | None) -> None:
    log.warning(
        "DEV MODE: the gateway keys in %s are NOT encrypted%s. "
        "Dev mode must not be used in production.",
        path,
        " (the passphrase given is ignored)" if passphrase else "",
    )


def _new_entry(
    directory: Path,
    role: KeyRole,
    not_before: datetime,
    not_after: datetime,
    passphrase: bytes | None,
    algorithm: Algorithm = Algorithm.EDDSA,
) -> _Entry:
    private = PrivateKey.generate(algorithm)
    public = private.public_key()
    kid = public.fingerprint()
    file = f"{role.value}-{kid}.pem"
    write_new(directory / file, private.to_pem(passphrase))
    info = GatewayKeyInfo(role, kid, public, not_before, not_after, KeyStatus.ACTIVE)
    return _Entry(info, file, private)


def _load_entry(path: Path, item: Mapping[str, Any], passphrase: bytes | None) -> _Entry:
    role = KeyRole(item["role"])
    kid = str(item["kid"])
    alg = Algorithm(item["alg"])
    file = str(item["file"])
    if os.path.basename(file) != file or file.startswith("."):
        raise KeyDirectoryError(f"{path / MANIFEST} names an unsafe key file {file!r}")
    pem = read_private(path / file)
    if passphrase is not None and b"ENCRYPTED" not in pem:
        raise KeyDirectoryError(
            f"{path / file} is not encrypted, but the directory is not in dev mode"
        )
    try:
        private = PrivateKey.from_pem(pem, passphrase)
    except MalformedError as exc:
        if passphrase is not None:
            raise PassphraseError(
                f"the passphrase does not decrypt {path / file}: wrong passphrase "
                "(check TRUSTGW_PASSPHRASE or TRUSTGW_PASSPHRASE_FILE)"
            ) from None
        raise KeyDirectoryError(f"cannot load {path / file}: {exc}") from None
    public = private.public_key()
    if private.alg is not alg or public.fingerprint() != kid:
        raise KeyDirectoryError(f"{path / file} does not hold key {kid} ({alg}) of the manifest")
    info = GatewayKeyInfo(
        role,
        kid,
        public,
        parse_time(str(item["not_before"])),
        parse_time(str(item["not_after"])),
        KeyStatus(item["status"]),
    )
    return _Entry(info, file, private)


def _manifest_bytes(dev: bool, entries: list[_Entry]) -> bytes:
    document = {
        "format": FORMAT_VERSION,
        "dev": dev,
        "pseudonym_secret": PSEUDONYM_FILE,
        "keys": [
            {
                "role": e.info.role.value,
                "kid": e.info.kid,
                "alg": e.info.public_key.alg.value,
                "file": e.file,
                "not_before": to_iso(e.info.not_before),
                "not_after": to_iso(e.info.not_after),
                "status": e.info.status.value,
            }
            for e in entries
        ],
    }
    return (json.dumps(document, indent=2) + "\n").encode("utf-8")


def _scrypt_key(passphrase: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    raw = Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase)
    return base64.urlsafe_b64encode(raw)


def _seal_secret(secret: bytes, passphrase: bytes | None) -> bytes:
    if passphrase is None:
        document: dict[str, Any] = {
            "format": FORMAT_VERSION,
            "kdf": None,
            "secret": base64.b64encode(secret).decode("ascii"),
        }
    else:
        salt = secrets.token_bytes(16)
        key = _scrypt_key(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
        document = {
            "format": FORMAT_VERSION,
            "kdf": "scrypt",
            "n": SCRYPT_N,
            "r": SCRYPT_R,
            "p": SCRYPT_P,
            "salt": base64.b64encode(salt).decode("ascii"),
            "token": Fernet(key).encrypt(secret).decode("ascii"),
        }
    return (json.dumps(document, indent=2) + "\n").encode("utf-8")


def _unseal_secret(file: Path, passphrase: bytes | None) -> bytes:
    document = read_json(file)
    kdf = document.get("kdf")
    if passphrase is None:
        if kdf is not None:
            raise KeyDirectoryError(f"{file} is encrypted, but the manifest says dev mode")
        secret = base64.b64decode(document["secret"], validate=True)
    else:
        if kdf != "scrypt":
            raise KeyDirectoryError(
                f"{file} is not encrypted, but the directory is not in dev mode"
            )
        n, r, p = int(document["n"]), int(document["r"]), int(document["p"])
        if not (2**10 <= n <= 2**20 and 1 <= r <= 32 and 1 <= p <= 16):
            raise KeyDirectoryError(f"{file} has unreasonable scrypt parameters")
        key = _scrypt_key(passphrase, base64.b64decode(document["salt"], validate=True), n, r, p)
        try:
            secret = Fernet(key).decrypt(str(document["token"]).encode("ascii"))
        except InvalidToken:
            raise PassphraseError(
                f"the passphrase does not decrypt {file}: wrong passphrase "
                "(check TRUSTGW_PASSPHRASE or TRUSTGW_PASSPHRASE_FILE)"
            ) from None
    if len(secret) != PSEUDONYM_SECRET_BYTES:
        raise KeyDirectoryError(f"{file} does not hold a {PSEUDONYM_SECRET_BYTES}-byte secret")
    return secret
