"""KeyDirectory: encryption at rest, file modes, dev mode, signer selection, rotation."""

from __future__ import annotations

import json
import logging
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from keys.crypto import Algorithm, PrivateKey
from keys.errors import ConfigurationError, KeyDirectoryError, MalformedError, PassphraseError
from keys.keystore import (
    MANIFEST,
    PSEUDONYM_FILE,
    KeyDirectory,
    KeyRole,
    passphrase_from_env,
)
from keys.model import KeyStatus

# PEM markers, spelled in two parts so that repository scans for committed keys do not match them.
PLAIN_PEM = b"-----BEGIN " + b"PRIVATE KEY-----"
ENCRYPTED_PEM = b"-----BEGIN ENCRYPTED " + b"PRIVATE KEY-----"


T0 = datetime(2026, 3, 11, 8, 0, tzinfo=UTC)
PASS = b"correct horse battery staple"


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    """A freshly created, encrypted key directory."""
    path = tmp_path / "keys"
    KeyDirectory.create(path, dev=False, passphrase=PASS, now=T0)
    return path


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_create_then_open_with_passphrase(key_dir: Path) -> None:
    opened = KeyDirectory.open(key_dir, passphrase=PASS)
    assert opened.dev is False
    infos = opened.public_keys()
    assert [i.role for i in infos] == sorted(KeyRole, key=lambda r: r.value)  # one per role
    for info in infos:
        assert info.public_key.alg is Algorithm.EDDSA
        assert info.kid == info.public_key.fingerprint()
        assert info.status is KeyStatus.ACTIVE
        assert (info.not_before, info.not_after) == (T0, T0 + timedelta(days=365))
    assert infos[0].kid != infos[1].kid


def test_reopened_keys_are_the_created_keys(tmp_path: Path) -> None:
    created = KeyDirectory.create(tmp_path / "k", dev=False, passphrase=PASS, now=T0)
    opened = KeyDirectory.open(tmp_path / "k", passphrase=PASS)
    assert opened.public_keys() == created.public_keys()
    info, private = opened.signer(KeyRole.ATTEST, T0)
    info.public_key.verify(b"decision", private.sign(b"decision"))


def test_pseudonym_secret_is_stable_across_reopen(key_dir: Path) -> None:
    first = KeyDirectory.open(key_dir, passphrase=PASS).pseudonym_secret()
    second = KeyDirectory.open(key_dir, passphrase=PASS).pseudonym_secret()
    assert first == second and len(first) == 32


def test_each_directory_has_its_own_pseudonym_secret(tmp_path: Path) -> None:
    a = KeyDirectory.create(tmp_path / "a", dev=False, passphrase=PASS, now=T0)
    b = KeyDirectory.create(tmp_path / "b", dev=False, passphrase=PASS, now=T0)
    assert a.pseudonym_secret() != b.pseudonym_secret()


@pytest.mark.parametrize(
    "passphrase",
    [pytest.param(None, id="none"), pytest.param(b"", id="empty")],
)
def test_create_without_passphrase_outside_dev_mode_is_refused(
    tmp_path: Path, passphrase: bytes | None
) -> None:
    with pytest.raises(PassphraseError):
        KeyDirectory.create(tmp_path / "keys", dev=False, passphrase=passphrase, now=T0)
    assert not (tmp_path / "keys").exists()


def test_open_without_passphrase_is_refused(key_dir: Path) -> None:
    with pytest.raises(PassphraseError):
        KeyDirectory.open(key_dir, passphrase=None)


def test_wrong_passphrase_is_refused_clearly(key_dir: Path) -> None:
    with pytest.raises(PassphraseError, match="wrong passphrase"):
        KeyDirectory.open(key_dir, passphrase=b"not the passphrase")


def test_file_modes(key_dir: Path) -> None:
    assert mode(key_dir) == 0o700
    files = list(key_dir.iterdir())
    assert {f.name for f in files} >= {MANIFEST, PSEUDONYM_FILE}
    assert len(files) == 2 + len(KeyRole)  # manifest, pseudonym secret, one key per role
    for file in files:
        assert mode(file) == 0o600, file


def test_file_modes_do_not_depend_on_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = tmp_path / "keys"
        KeyDirectory.create(path, dev=False, passphrase=PASS, now=T0)
    finally:
        os.umask(old)
    assert mode(path) == 0o700
    assert {mode(f) for f in path.iterdir()} == {0o600}


@pytest.mark.parametrize(
    "name",
    [pytest.param(MANIFEST, id="manifest"), pytest.param(PSEUDONYM_FILE, id="pseudonym")],
)
def test_group_readable_file_is_refused_by_name(key_dir: Path, name: str) -> None:
    os.chmod(key_dir / name, 0o640)
    with pytest.raises(KeyDirectoryError, match=name):
        KeyDirectory.open(key_dir, passphrase=PASS)


def test_world_readable_private_key_is_refused_by_name(key_dir: Path) -> None:
    pem = next(key_dir.glob("attest-*.pem"))
    os.chmod(pem, 0o604)
    with pytest.raises(KeyDirectoryError, match=pem.name):
        KeyDirectory.open(key_dir, passphrase=PASS)


def test_open_directory_is_refused(key_dir: Path) -> None:
    os.chmod(key_dir, 0o755)  # noqa: S103 (the unsafe mode under test)
    with pytest.raises(KeyDirectoryError, match="0700"):
        KeyDirectory.open(key_dir, passphrase=PASS)


def test_symlinked_key_file_is_refused(key_dir: Path, tmp_path: Path) -> None:
    pem = next(key_dir.glob("issue-*.pem"))
    target = tmp_path / "elsewhere.pem"
    os.rename(pem, target)
    os.symlink(target, pem)
    with pytest.raises(KeyDirectoryError):
        KeyDirectory.open(key_dir, passphrase=PASS)


def test_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyDirectoryError, match="does not exist"):
        KeyDirectory.open(tmp_path / "nope", passphrase=PASS)


def test_create_refuses_a_non_empty_directory(key_dir: Path) -> None:
    with pytest.raises(KeyDirectoryError):
        KeyDirectory.create(key_dir, dev=False, passphrase=PASS, now=T0)
    KeyDirectory.open(key_dir, passphrase=PASS)  # untouched


def test_create_accepts_an_existing_empty_directory(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.mkdir(mode=0o755)
    KeyDirectory.create(path, dev=False, passphrase=PASS, now=T0)
    assert mode(path) == 0o700
    KeyDirectory.open(path, passphrase=PASS)


def test_no_pem_on_disk_is_unencrypted_outside_dev_mode(key_dir: Path) -> None:
    pems = list(key_dir.glob("*.pem"))
    assert len(pems) == len(KeyRole)
    for pem in pems:
        data = pem.read_bytes()
        assert data.startswith(ENCRYPTED_PEM)
        assert PLAIN_PEM not in data
        with pytest.raises(MalformedError):
            PrivateKey.from_pem(data, None)
    sealed = json.loads((key_dir / PSEUDONYM_FILE).read_text())
    assert sealed["kdf"] == "scrypt" and "secret" not in sealed
    secret = KeyDirectory.open(key_dir, passphrase=PASS).pseudonym_secret()
    for file in key_dir.iterdir():
        assert secret not in file.read_bytes()
        assert secret.hex().encode() not in file.read_bytes()


def test_unencrypted_pem_swapped_into_a_non_dev_directory_is_refused(key_dir: Path) -> None:
    pem = next(key_dir.glob("attest-*.pem"))
    private = PrivateKey.from_pem(pem.read_bytes(), PASS)
    pem.unlink()
    fd = os.open(pem, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private.to_pem(None))
    with pytest.raises(KeyDirectoryError, match="not encrypted"):
        KeyDirectory.open(key_dir, passphrase=PASS)


def test_manifest_lists_roles_files_and_dev_flag(key_dir: Path) -> None:
    manifest = json.loads((key_dir / MANIFEST).read_text())
    assert manifest["dev"] is False
    for entry in manifest["keys"]:
        assert set(entry) >= {"role", "kid", "alg", "file", "not_before", "not_after", "status"}
        assert (key_dir / entry["file"]).is_file()
        assert entry["alg"] == "EdDSA"


def test_damaged_manifest_is_refused(key_dir: Path) -> None:
    path = key_dir / MANIFEST
    path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write('{"format": 1, "dev": false, "keys": [{"role": "attest"}]}')
    with pytest.raises(KeyDirectoryError, match="damaged"):
        KeyDirectory.open(key_dir, passphrase=PASS)


# --- dev mode ----------------------------------------------------------------------------------


def test_dev_mode_is_unencrypted_and_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "keys"
    with caplog.at_level(logging.WARNING, logger="trustgw.keys"):
        created = KeyDirectory.create(path, dev=True, passphrase=None, now=T0)
    assert created.dev is True
    assert any(
        r.levelno == logging.WARNING
        and "NOT encrypted" in r.getMessage()
        and "production" in r.getMessage()
        for r in caplog.records
    )
    for pem in path.glob("*.pem"):
        assert pem.read_bytes().startswith(PLAIN_PEM)
    assert json.loads((path / MANIFEST).read_text())["dev"] is True

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="trustgw.keys"):
        opened = KeyDirectory.open(path, passphrase=None)
    assert opened.dev is True
    assert any("NOT encrypted" in r.getMessage() for r in caplog.records)
    assert opened.pseudonym_secret() == created.pseudonym_secret()
    assert mode(path) == 0o700 and {mode(f) for f in path.iterdir()} == {0o600}


# --- signer selection and rotation -------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "ok"),
    [
        pytest.param(timedelta(0), True, id="at-not-before"),
        pytest.param(timedelta(days=200), True, id="inside"),
        pytest.param(-timedelta(seconds=1), False, id="before-not-before"),
        pytest.param(timedelta(days=365), False, id="at-not-after"),
        pytest.param(timedelta(days=400), False, id="expired"),
    ],
)
def test_signer_requires_a_key_valid_now(key_dir: Path, offset: timedelta, ok: bool) -> None:
    keys = KeyDirectory.open(key_dir, passphrase=PASS)
    for role in KeyRole:
        if ok:
            info, private = keys.signer(role, T0 + offset)
            assert info.role is role
            assert private.public_key() == info.public_key
        else:
            with pytest.raises(ConfigurationError):
                keys.signer(role, T0 + offset)


def test_roles_have_distinct_keys(key_dir: Path) -> None:
    keys = KeyDirectory.open(key_dir, passphrase=PASS)
    attest, _ = keys.signer(KeyRole.ATTEST, T0)
    issue, _ = keys.signer(KeyRole.ISSUE, T0)
    assert attest.kid != issue.kid


def test_rotation_publishes_before_use_and_keeps_the_old_key(key_dir: Path) -> None:
    keys = KeyDirectory.open(key_dir, passphrase=PASS)
    old, _ = keys.signer(KeyRole.ATTEST, T0)
    now = T0 + timedelta(days=100)
    new = keys.rotate(KeyRole.ATTEST, now, activate_at=now + timedelta(days=1))

    published = {i.kid: i for i in keys.public_keys()}
    assert new.kid in published  # published at once ...
    assert keys.signer(KeyRole.ATTEST, now)[0].kid == old.kid  # ... but not used yet
    assert keys.signer(KeyRole.ATTEST, now + timedelta(days=1))[0].kid == new.kid
    assert published[old.kid].status is KeyStatus.RETIRED
    assert keys.signer(KeyRole.ISSUE, now)[0].status is KeyStatus.ACTIVE  # other role untouched

    reopened = KeyDirectory.open(key_dir, passphrase=PASS)
    assert reopened.public_keys() == keys.public_keys()
    assert reopened.signer(KeyRole.ATTEST, now + timedelta(days=2))[0].kid == new.kid
    assert {mode(f) for f in key_dir.iterdir()} == {0o600}
    for pem in key_dir.glob("*.pem"):
        assert pem.read_bytes().startswith(ENCRYPTED_PEM)


def test_rotation_drops_expired_keys(key_dir: Path) -> None:
    keys = KeyDirectory.open(key_dir, passphrase=PASS)
    first, _ = keys.signer(KeyRole.ISSUE, T0)
    keys.rotate(KeyRole.ISSUE, T0 + timedelta(days=300))
    later = T0 + timedelta(days=400)
    third = keys.rotate(KeyRole.ISSUE, later)
    kids = {i.kid for i in keys.public_keys() if i.role is KeyRole.ISSUE}
    assert first.kid not in kids and third.kid in kids and len(kids) == 2
    assert not list(key_dir.glob(f"*{first.kid}*"))
    # The expired attest key is kept (only the rotated role is pruned), but it cannot sign.
    with pytest.raises(ConfigurationError):
        keys.signer(KeyRole.ATTEST, later)
    reopened = KeyDirectory.open(key_dir, passphrase=PASS)
    assert reopened.public_keys() == keys.public_keys()


def test_rotation_refuses_activation_in_the_past(key_dir: Path) -> None:
    keys = KeyDirectory.open(key_dir, passphrase=PASS)
    with pytest.raises(ValueError):
        keys.rotate(KeyRole.ATTEST, T0, activate_at=T0 - timedelta(hours=1))


# --- passphrase from the environment -------------------------------------------------------------


def test_passphrase_from_env_direct() -> None:
    assert passphrase_from_env({"TRUSTGW_PASSPHRASE": "s3cret"}) == b"s3cret"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(b"s3cret\n", b"s3cret", id="trailing-newline"),
        pytest.param(b"s3cret\r\n", b"s3cret", id="trailing-crlf"),
        pytest.param(b"s3cret", b"s3cret", id="no-newline"),
        pytest.param(b"with space \n", b"with space ", id="inner-spaces-kept"),
    ],
)
def test_passphrase_from_env_file(tmp_path: Path, content: bytes, expected: bytes) -> None:
    file = tmp_path / "pass"
    file.write_bytes(content)
    assert passphrase_from_env({"TRUSTGW_PASSPHRASE_FILE": str(file)}) == expected


@pytest.mark.parametrize(
    "environ",
    [pytest.param({}, id="unset"), pytest.param({"TRUSTGW_PASSPHRASE": ""}, id="empty")],
)
def test_passphrase_from_env_none(environ: dict[str, str]) -> None:
    assert passphrase_from_env(environ) is None


def test_passphrase_from_env_both_set_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "pass"
    file.write_bytes(b"x")
    with pytest.raises(ConfigurationError, match="only one"):
        passphrase_from_env({"TRUSTGW_PASSPHRASE": "a", "TRUSTGW_PASSPHRASE_FILE": str(file)})


@pytest.mark.parametrize(
    "content",
    [pytest.param(None, id="missing-file"), pytest.param(b"\n", id="empty-file")],
)
def test_passphrase_file_problems(tmp_path: Path, content: bytes | None) -> None:
    file = tmp_path / "pass"
    if content is not None:
        file.write_bytes(content)
    with pytest.raises(PassphraseError, match=str(file)):
        passphrase_from_env({"TRUSTGW_PASSPHRASE_FILE": str(file)})
