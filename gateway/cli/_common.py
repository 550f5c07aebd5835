"""What every ``trustgw`` subcommand shares: exit codes, argument types, output helpers.

Every option that takes a value takes one of the types below (or ``choices``), so that every
malformed value is refused while the command line is read, as one line
``trustgw: REASON: message`` (``tests/test_cli_inputs.py`` walks the parser to hold this).
A type raises :class:`argparse.ArgumentTypeError` (reason ``USAGE``) or a
:class:`keys.errors.GatewayError` whose reason says more (``MALFORMED`` for a key id,
``TIME_OFFSET_REQUIRED`` / ``TIME_INVALID`` for a time).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gateway.runtime.datadir import DataDir
from keys.errors import UsageError
from keys.keyid import check_kid
from keys.timeutil import parse_time

EXIT_OK, EXIT_REJECTED, EXIT_USAGE = 0, 1, 2
MAX_PATH_CHARS = 4096
MAX_TEXT_CHARS = 256
_ASCII_INT = re.compile(r"-?[0-9]{1,18}")
_ASCII_NUMBER = re.compile(r"-?(?:[0-9]{1,18}(?:\.[0-9]{0,9})?|\.[0-9]{1,9})")


def _shown(value: str, limit: int = 60) -> str:
    return repr(value) if len(value) <= limit else f"{value[:limit]!r}… ({len(value)} characters)"


def _has_control(value: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in value)


def path_type(value: str) -> Path:
    """A file name as given: not empty, no control characters, at most 4096 characters.

    Whether the file exists is for the command that reads or writes it to say.
    """
    if not value:
        raise argparse.ArgumentTypeError("an empty file name")
    if len(value) > MAX_PATH_CHARS:
        raise argparse.ArgumentTypeError(f"a file name of {len(value)} characters")
    if _has_control(value):
        raise argparse.ArgumentTypeError(f"{_shown(value)} holds control characters")
    return Path(value).expanduser()


def data_dir_type(value: str) -> Path:
    """A data directory to create (see :func:`path_type`), made absolute."""
    return path_type(value).resolve()


def existing_data_dir_type(value: str) -> Path:
    """The data directory of an initialised gateway: it holds ``trustgw.db``, ``pki/`` or
    ``keys/`` (:meth:`DataDir.is_initialised`)."""
    path = data_dir_type(value)
    if not DataDir(path).is_initialised():
        raise argparse.ArgumentTypeError(
            f"{_shown(str(path))} is not a gateway data directory (no trustgw.db, no pki/, "
            "no keys/; make one with trustgw init)"
        )
    return path


def text_type(max_chars: int = MAX_TEXT_CHARS) -> Callable[[str], str]:
    """A short printable text: 1 to ``max_chars`` characters, no control characters."""

    def text(value: str) -> str:
        if not value.strip():
            raise argparse.ArgumentTypeError("an empty value")
        if len(value) > max_chars:
            raise argparse.ArgumentTypeError(f"{_shown(value)} is longer than {max_chars}")
        if _has_control(value):
            raise argparse.ArgumentTypeError(f"{_shown(value)} holds control characters")
        return value

    text.__name__ = "text"
    return text


def int_type(low: int, high: int) -> Callable[[str], int]:
    """An integer from ``low`` to ``high``, written in ASCII digits."""

    def integer(value: str) -> int:
        text = value.strip()
        if not _ASCII_INT.fullmatch(text) or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(
                f"{_shown(value)} is not an integer from {low} to {high}"
            )
        return int(text)

    integer.__name__ = "integer"
    return integer


def float_type(low: float, high: float) -> Callable[[str], float]:
    """A finite decimal number from ``low`` to ``high``, written in ASCII digits."""

    def number(value: str) -> float:
        text = value.strip()
        parsed = float(text) if _ASCII_NUMBER.fullmatch(text) else math.nan
        if not low <= parsed <= high:
            raise argparse.ArgumentTypeError(
                f"{_shown(value)} is not a number from {low:g} to {high:g}"
            )
        return parsed

    number.__name__ = "number"
    return number


def kid_type(value: str) -> str:
    """A key id under the one rule (:mod:`keys.keyid`); raises ``MALFORMED``."""
    return check_kid(value)


def time_type(value: str) -> Any:
    """A time an operator gives: :func:`keys.timeutil.parse_time` (an offset is required)."""
    return parse_time(value)


def read_input(path: Path | str, what: str, limit: int) -> bytes:
    """The bytes of an input file of at most ``limit`` bytes.

    Raises :class:`UsageError` (exit 2) for a file that is missing, unreadable, a directory or
    larger than ``limit``.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise UsageError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise UsageError(f"the {what} {path} is larger than {limit} bytes")
    return data


def print_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain-text table whose columns are as wide as their widest value: nothing is cut.

    Identifiers an operator copies into another command (key ids, regions, fingerprints) are
    shown whole; the last column is not padded.
    """
    cells = [[str(c) for c in columns], *[[str(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    for row in cells:
        print("  ".join([*(v.ljust(w) for v, w in zip(row[:-1], widths, strict=False)), row[-1]]))


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True))


def add_data_dir(parser: argparse.ArgumentParser, *, existing: bool = True) -> None:
    """``--data-dir``: an initialised data directory (``existing=False``: one to create)."""
    parser.add_argument(
        "--data-dir",
        type=existing_data_dir_type if existing else data_dir_type,
        required=True,
        help="the gateway's data directory",
    )


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")
