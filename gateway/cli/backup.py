"""``trustgw backup`` and ``trustgw restore`` (docs/operations.md, "Backups and restore").

A backup is one tar file: ``MANIFEST.json`` first (format, time, the database's newest trust-list
version and audit head, and the size, SHA-256 and mode of every other member), then a consistent
copy of the SQLite database taken with SQLite's online backup API (the gateway may be serving),
then every other file of the data directory (keys, PKI, configuration). Over PostgreSQL the
database is ``pg_dump --format=custom`` output when ``pg_dump`` is on the PATH, else the command
to run is printed and the backup holds the data directory only.

A restore checks every member against the manifest, refuses any path outside the data
directory, checks the restored database's audit chain, and raises the trust list's version floor
above every version published before the restore (the newest version in the backup plus a
margin, or a verifier's last-seen version given with ``--trustlist-floor``): verifiers that saw
a list newer than the backup accept the restored gateway's next one.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from gateway.cli._common import EXIT_OK, add_json, int_type, path_type, print_json
from gateway.cli._store import add_store_args, database_target
from gateway.runtime import dburl
from keys.errors import MalformedError, UsageError
from keys.store import factory
from keys.timeutil import to_iso, utcnow

FORMAT = "trustgw-backup/v1"
MANIFEST = "MANIFEST.json"
DATABASE = "trustgw.db"  # the SQLite copy's name in the archive (and in the data directory)
PG_DUMP = "database.pgdump"
MAX_MANIFEST_BYTES = 1024 * 1024
MAX_MEMBERS = 10_000
MAX_MEMBER_BYTES = 64 * 1024**3
DEFAULT_MARGIN = 10_000  # versions: more than a gateway publishes between two daily backups
_SKIPPED = {DATABASE, DATABASE + "-wal", DATABASE + "-shm", DATABASE + "-journal"}
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Member:
    """One file of a backup as its manifest lists it."""

    name: str
    size: int
    sha256: str
    mode: int

    def to_json(self) -> dict[str, Any]:
        """The member's manifest entry."""
        return {"name": self.name, "size": self.size, "sha256": self.sha256, "mode": self.mode}


# --- backup -----------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _copy_sqlite(source: Path, copy: Path) -> tuple[int, dict[str, Any]]:
    """A consistent copy of the live database (SQLite's online backup API: readers and the
    gateway's writer go on meanwhile), and its newest trust-list version and audit head."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(copy)
        try:
            src.backup(dst)
            version = dst.execute("SELECT COALESCE(MAX(version), 0) FROM trustlist_versions")
            (latest,) = version.fetchone()
            head = dst.execute("SELECT count, hash FROM audit_head WHERE id = 1").fetchone()
        finally:
            dst.close()
    finally:
        src.close()
    return int(latest), {"count": int(head[0]), "hash": str(head[1])} if head else {}


async def _pg_state(target: str) -> tuple[int, dict[str, Any]]:
    store = await factory.open_store(target, migrate=False)
    try:
        latest = await store.latest_trustlist()
        head, _ = await store.read_audit(0, 1)
    finally:
        await store.close()
    return (0 if latest is None else latest.version), {"count": head.count, "hash": head.hash}


def _data_files(root: Path, out: Path) -> list[tuple[str, Path]]:
    """The data directory's regular files (not the database, its WAL, nor the backup itself)."""
    found = []
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or not path.is_file() or path.resolve() == out:
            continue
        name = path.relative_to(root).as_posix()
        if name in _SKIPPED:
            continue
        found.append((name, path))
    return found


def cmd_backup(opts: argparse.Namespace) -> int:
    root = Path(opts.data_dir)
    out = Path(opts.out).resolve()
    if out.is_dir():
        raise UsageError(f"--out {opts.out} is a directory")
    target = database_target(opts)
    postgres = factory.is_postgres_url(str(target))
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix=".trustgw-backup-", dir=out.parent) as tmp:
        members: list[tuple[str, Path]] = []
        if postgres:
            latest, head = asyncio.run(_pg_state(str(target)))
            dump = Path(tmp) / PG_DUMP
            command = ["pg_dump", "--format=custom", f"--file={dump}", str(target)]
            shown = f"pg_dump --format=custom --file=trustgw.pgdump '{dburl.redact(target)}'"
            if shutil.which("pg_dump") is None:
                notes.append(f"pg_dump is not on the PATH: back the database up with: {shown}")
            else:
                done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
                if done.returncode != 0:
                    last = (done.stderr.strip().splitlines() or ["failed"])[-1]
                    raise UsageError(f"pg_dump failed: {dburl.redact(last)[:200]}")
                members.append((PG_DUMP, dump))
        else:
            database = Path(target)
            if not database.is_file():
                raise UsageError(f"{database} does not exist: nothing to back up")
            copy = Path(tmp) / DATABASE
            try:
                latest, head = _copy_sqlite(database, copy)
            except sqlite3.Error as exc:
                raise UsageError(f"cannot copy the database {database}: {exc}") from None
            members.append((DATABASE, copy))
        members += _data_files(root, out)
        listed = [
            Member(name, path.stat().st_size, _sha256(path), path.stat().st_mode & 0o777)
            for name, path in members
        ]
        manifest = {
            "format": FORMAT,
            "created_at": to_iso(utcnow()),
            "database": "postgresql" if postgres else "sqlite",
            "database_included": any(m.name in (DATABASE, PG_DUMP) for m in listed),
            "trustlist_version": latest,
            "audit_head": head,
            "files": [m.to_json() for m in listed],
        }
        data = json.dumps(manifest, indent=2).encode()
        partial = Path(tmp) / "backup.tar"
        with tarfile.open(partial, "w:gz") as tar:
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mode = len(data), 0o600
            tar.addfile(info, io.BytesIO(data))
            for member, (_, path) in zip(listed, members, strict=True):
                info = tarfile.TarInfo(member.name)
                info.size, info.mode = member.size, member.mode
                with path.open("rb") as f:
                    tar.addfile(info, f)
        partial.chmod(0o600)  # private keys (encrypted) and personal records (pseudonymous)
        os.replace(partial, out)
    result = {
        "out": str(out),
        "files": len(listed),
        "bytes": out.stat().st_size,
        "trustlist_version": latest,
        "audit_head": head,
        "database_included": manifest["database_included"],
    }
    for note in notes:
        print(f"trustgw: note: {note}", file=sys.stderr)
    if opts.json:
        print_json(result)
    else:
        print(
            f"wrote {out}: {len(listed)} files, trust-list version {latest}, "
            f"audit head {head.get('count', 0)}"
        )
    return EXIT_OK


# --- restore ----------------------------------------------------------------------------------


def _member_name(name: str) -> str:
    path = PurePosixPath(name)
    if path.is_absolute() or not path.parts or any(p in ("", ".", "..") for p in path.parts):
        raise MalformedError(f"backup member {name[:80]!r} is not a relative path")
    return path.as_posix()


def _read_manifest(tar: tarfile.TarFile) -> tuple[dict[str, Any], dict[str, Member]]:
    first = tar.next()
    if first is None or first.name != MANIFEST or not first.isfile():
        raise MalformedError(f"not a trustgw backup: {MANIFEST} is not its first member")
    if first.size > MAX_MANIFEST_BYTES:
        raise MalformedError("the backup's manifest is too large")
    handle = tar.extractfile(first)
    assert handle is not None  # a regular file
    try:
        manifest = json.loads(handle.read(MAX_MANIFEST_BYTES + 1))
        if manifest.get("format") != FORMAT:
            raise MalformedError(f"not a {FORMAT} backup")
        files = {
            _member_name(str(f["name"])): Member(
                _member_name(str(f["name"])), int(f["size"]), str(f["sha256"]), int(f["mode"])
            )
            for f in manifest["files"]
        }
        int(manifest["trustlist_version"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise MalformedError(f"the backup's manifest is not valid: {exc}") from None
    if len(files) > MAX_MEMBERS:
        raise MalformedError("the backup lists too many files")
    return manifest, files


def _extract(file: Path, staging: Path) -> tuple[dict[str, Any], dict[str, Member]]:
    """Every member into ``staging``, each checked against the manifest."""
    try:
        tar = tarfile.open(file, "r:*")
    except (OSError, tarfile.TarError) as exc:
        raise UsageError(f"cannot read the backup {file}: {exc}") from None
    with tar:
        manifest, files = _read_manifest(tar)
        seen: set[str] = set()
        count = 0
        while (info := tar.next()) is not None:
            count += 1
            name = _member_name(info.name)
            member = files.get(name)
            if count > MAX_MEMBERS or member is None or name in seen or not info.isfile():
                raise MalformedError(f"backup member {name[:80]!r} is not in its manifest")
            if info.size != member.size or info.size > MAX_MEMBER_BYTES:
                raise MalformedError(f"backup member {name[:80]!r} is not the size listed")
            seen.add(name)
            target = staging / name
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            source = tar.extractfile(info)
            assert source is not None
            _copy_checked(source, target, member)
        missing = sorted(set(files) - seen)
        if missing:
            raise MalformedError(f"the backup is missing {missing[0][:80]!r} (and others?)")
    return manifest, files


def _copy_checked(source: IO[bytes], target: Path, member: Member) -> None:
    digest = hashlib.sha256()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        for chunk in iter(lambda: source.read(_CHUNK), b""):
            digest.update(chunk)
            f.write(chunk)
    if digest.hexdigest() != member.sha256:
        raise MalformedError(f"backup member {member.name[:80]!r} does not match its checksum")
    target.chmod(member.mode & 0o700)  # never group- or world-readable, whatever the archive


async def _check_and_floor(database: Path, floor_from: int, margin: int) -> dict[str, Any]:
    from keys.audit import verify_store

    store = await factory.open_store(database)
    try:
        head = await verify_store(store)  # AuditIntegrityError: exit 1, nothing restored
        latest = await store.latest_trustlist()
        seen = max(floor_from, 0 if latest is None else latest.version)
        after = await store.raise_trustlist_floor(seen + margin, now=utcnow())
    finally:
        await store.close()
    return {
        "audit_head": f"{head.count}:{head.hash}",
        "trustlist_floor": seen + margin,
        "next_version_above": after.version,
    }


def cmd_restore(opts: argparse.Namespace) -> int:
    file, root = Path(opts.file), Path(opts.data_dir)
    if not file.is_file():
        raise UsageError(f"{file} is not a file")
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise UsageError(f"--data-dir {root} is not an empty directory: restore into a new one")
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".trustgw-restore-", dir=root.parent))
    try:
        manifest, files = _extract(file, staging)
        floor_from = max(int(manifest["trustlist_version"]), opts.trustlist_floor or 0)
        result: dict[str, Any] = {"data_dir": str(root), "files": len(files)}
        if DATABASE in files:
            result |= asyncio.run(_check_and_floor(staging / DATABASE, floor_from, opts.margin))
        elif PG_DUMP in files:
            result["pg_restore"] = (
                f"pg_restore --clean --if-exists --dbname=URL {root / PG_DUMP}; then "
                f"trustgw trustlist floor {floor_from + opts.margin} --data-dir {root} "
                "--database URL"
            )
        if root.exists():
            root.rmdir()  # empty: checked above
        os.replace(staging, root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if opts.json:
        print_json(result)
    else:
        print(f"restored {result['files']} files into {root}")
        if "audit_head" in result:
            print(f"  audit log intact, head {result['audit_head']}")
            print(
                f"  trust-list versions published from now on are above {result['trustlist_floor']}"
            )
        if "pg_restore" in result:
            print(f"  the database is a pg_dump: {result['pg_restore']}")
    return EXIT_OK


def register(sub: Any) -> None:
    p = sub.add_parser(
        "backup",
        help="write a consistent copy of the database and the data directory (keys, PKI, config)",
    )
    add_store_args(p)
    p.add_argument("--out", required=True, type=path_type, help="the backup file (a .tar.gz)")
    add_json(p)
    p.set_defaults(func=cmd_backup)
    p = sub.add_parser(
        "restore",
        help="restore a backup into a new data directory; checks the audit chain and keeps the "
        "trust list's versions above anything published before",
    )
    p.add_argument("file", type=path_type, help="a file trustgw backup wrote")
    p.add_argument(
        "--data-dir", required=True, type=path_type, help="the new data directory (empty or new)"
    )
    p.add_argument(
        "--trustlist-floor",
        type=int_type(0, 2**53 - 2),
        help="the newest trust-list version any verifier has seen (if above the backup's)",
    )
    p.add_argument(
        "--margin",
        type=int_type(0, 2**40),
        default=DEFAULT_MARGIN,
        help="versions to skip above that, for lists published after the backup and never "
        "reported (default %(default)s)",
    )
    add_json(p)
    p.set_defaults(func=cmd_restore)
