"""The key directory's files at rest: private (0600 files in a 0700 directory, never through a
symbolic link), bounded in size, written new or replaced atomically and made durable with fsync.

Used by :mod:`keys.keystore`; nothing here knows what the files hold.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path
from typing import Any

from keys.errors import KeyDirectoryError, MalformedError
from keys.jsonutil import loads_strict

MAX_FILE_BYTES = 1024 * 1024  # the largest key-directory file read (manifest, key, secret)


def check_private(path: Path, *, directory: bool) -> os.stat_result:
    """Stat the key directory and refuse it unless it is ours alone (no group or other bits)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise KeyDirectoryError(f"{path} does not exist") from None
    except OSError as exc:
        raise KeyDirectoryError(f"cannot read {path}: {exc.strerror or exc}") from None
    check_mode(path, st, directory=directory)
    return st


def check_mode(path: Path, st: os.stat_result, *, directory: bool) -> None:
    """Refuse ``st`` unless it is a directory (or a regular file) that only its owner can reach.

    Raises KeyDirectoryError."""
    kind_ok = stat.S_ISDIR(st.st_mode) if directory else stat.S_ISREG(st.st_mode)
    if not kind_ok:
        kind = "directory" if directory else "regular file"
        links = "" if directory else " (symbolic links are refused)"
        raise KeyDirectoryError(f"{path} is not a {kind}{links}")
    if st.st_mode & 0o077:
        raise KeyDirectoryError(
            f"{path} is accessible to group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"it must be {'0700' if directory else '0600'}"
        )


def read_private(path: Path) -> bytes:
    """Read a file of the key directory, refusing symlinks and group/other permissions."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise KeyDirectoryError(f"{path} is missing") from None
    except OSError as exc:
        raise KeyDirectoryError(f"cannot read {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as handle:
        check_mode(path, os.fstat(fd), directory=False)
        data = handle.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise KeyDirectoryError(f"{path} is larger than 1 MiB")
    return data


def read_json(path: Path) -> dict[str, Any]:
    """Read a private file holding one JSON object (strictly parsed). Raises KeyDirectoryError."""
    try:
        document = loads_strict(read_private(path), max_bytes=MAX_FILE_BYTES, max_depth=16)
    except MalformedError as exc:
        raise KeyDirectoryError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise KeyDirectoryError(f"{path} does not hold a JSON object")
    return document


def write_new(path: Path, data: bytes) -> None:
    """Write a new file, created 0600 (O_EXCL: never over an existing file), and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def replace_file(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data`` through a new 0600 file beside it."""
    temp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    try:
        write_new(temp, data)
        os.replace(temp, path)
    except BaseException:
        unlink_quietly(temp)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make a directory's entries durable (best effort: a filesystem may not support it)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def unlink_quietly(path: Path) -> None:
    """Remove a file if it is there; never raises."""
    try:
        os.unlink(path)
    except OSError:
        pass


def remove_tree(path: Path) -> None:
    """Remove the staging directory of a failed :meth:`KeyDirectory.create` (flat, files only)."""
    if not path.is_dir():
        return
    for child in path.iterdir():
        unlink_quietly(child)
    try:
        os.rmdir(path)
    except OSError:
        pass
