"""The ``trustgw`` command: a testable ``main(argv)``.

Each area of the command lives in its own module with a ``register(subparsers)`` function.
Every error reaches the operator as exactly one line on stderr, ``trustgw: REASON: message``,
and a non-zero exit; ``-v`` adds the traceback (of errors raised while running a command):

* a command line that cannot be read (unknown option, missing argument, a value of the wrong
  form) exits 2 with reason ``USAGE``, or the value's own reason (``MALFORMED`` for a key id,
  ``TIME_OFFSET_REQUIRED`` / ``TIME_INVALID`` for a time), naming the option;
* an unusable input file (missing, unreadable, a directory, too large) exits 2 with ``USAGE``;
* a refusal by the gateway's rules exits 1 with the error's reason (``MALFORMED``,
  ``KEY_ALGORITHM_MISMATCH``, ``ALREADY_EXISTS`` ...); an operating-system error exits 1 with
  ``IO_ERROR``; anything unexpected exits 1 with ``INTERNAL`` (a bug: please report it, with the
  traceback of ``-v``).
"""

from __future__ import annotations

import os

# gRPC core writes its own lines (handshake failures, ...) to stderr, outside the JSON log:
# silenced before grpc loads, unless the operator asks for them (docs/operations.md, "Logs").
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from gateway.cli import (
    audit,
    backup,
    config,
    core,
    db,
    declarations,
    keys,
    partner,
    partner_tools,
    pki,
    place,
    purge,
    revocations,
    stock,
    trustlist,
    verify,
)
from gateway.cli._common import EXIT_REJECTED, EXIT_USAGE
from gateway.observability import version
from keys.errors import GatewayError, UsageError

log = logging.getLogger("trustgw.cli")

_AREAS = (core, config, db, keys, pki, verify, stock, declarations, place, purge, backup)
_REGISTRY_AREAS = (partner, revocations, trustlist, audit, partner_tools)  # the trust registry
_ERRORS_HELP = (
    "Errors print one line 'trustgw: REASON: message' on stderr: exit 2 for a command line or "
    "input file that cannot be used (reason USAGE, or the value's own reason such as MALFORMED "
    "or TIME_OFFSET_REQUIRED), 1 for a refusal. Times need a UTC offset: "
    "2026-01-01T08:00:00+08:00, 2026-01-01T00:00:00Z, or unix seconds."
)


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are :class:`UsageError` (one line), not usage + exit 2.

    Subcommand parsers are of the same class (argparse makes them with ``type(self)``).
    """

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("trustgw").strip()
        where = f"{command}: " if command else ""
        raise UsageError(f"{where}{message} (see {self.prog} --help)")

    def _get_value(self, action: argparse.Action, arg_string: str) -> Any:
        """Name the option in the message of a value refused with the project's own reason."""
        try:
            return super()._get_value(action, arg_string)
        except GatewayError as exc:
            name = "/".join(action.option_strings) or action.metavar or action.dest
            exc.message = f"{name}: {exc.message}"
            exc.args = (exc.message,)
            raise


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="trustgw",
        description="Interprovincial trust gateway for health pass codes.",
        epilog=_ERRORS_HELP,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="tracebacks and debug logs")
    parser.add_argument(
        "--version", action="version", version=f"trustgw {version()}", help="print the version"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for area in (*_AREAS, *_REGISTRY_AREAS):
        area.register(sub)
    return parser


def _one_line(reason: str, message: str) -> str:
    """``trustgw: REASON: message`` with the message's line breaks and controls escaped."""
    text = " ".join(message.split("\n")).strip() or "(no details)"
    text = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
    return f"trustgw: {reason}: {text}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``trustgw`` with ``argv`` (default: the process's arguments); return the exit status."""
    parser = build_parser()
    try:
        opts = parser.parse_args(argv)
    except SystemExit as exc:  # --help and --version exit 0 after printing
        return int(exc.code or 0)
    except GatewayError as exc:  # UsageError from Parser.error, or a value's own reason
        print(_one_line(exc.reason, exc.message), file=sys.stderr)
        return EXIT_USAGE
    held = _configure_logging(opts.verbose)
    try:
        status = int(opts.func(opts))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the one place where every error becomes one line
        if opts.verbose:
            log.exception("command failed")
        reason, message, status = _describe(exc)
        exit_status = getattr(opts, "exit_status", None)  # a command's own exit codes
        if exit_status is not None:
            status = exit_status(exc, status)
        if held is not None and held.records:
            message += f" (-v shows {len(held.records)} log line(s))"
        print(_one_line(reason, message), file=sys.stderr)
        return status
    if held is not None:
        held.write_out()
    return status


class _HeldLogs(logging.Handler):
    """A command's warnings, written to stderr when it succeeds (on an error, only its line)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def write_out(self) -> None:
        for record in self.records:
            print(self.format(record), file=sys.stderr)
        self.records.clear()


def _configure_logging(verbose: bool) -> _HeldLogs | None:
    """Debug logs straight to stderr with ``-v``; otherwise warnings held (see :class:`_HeldLogs`).

    Leaves logging alone when the process configured it already (tests, an embedding program).
    """
    root = logging.getLogger()
    if root.handlers:
        return None
    if verbose:
        logging.basicConfig(
            level=logging.DEBUG, format="%(asctime)s %(levelname)s %(name)s %(message)s"
        )
        return None
    held = _HeldLogs()
    root.addHandler(held)
    root.setLevel(logging.WARNING)
    return held


def _describe(exc: Exception) -> tuple[str, str, int]:
    """(reason, message, exit status) of an error raised by a command."""
    if isinstance(exc, UsageError):
        return exc.reason, exc.message, EXIT_USAGE
    if isinstance(exc, GatewayError):
        return exc.reason, exc.message, EXIT_REJECTED
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return "IO_ERROR", f"{exc.strerror or exc}{where}", EXIT_REJECTED
    return (
        "INTERNAL",
        f"unexpected {type(exc).__name__}: {exc} (a bug; -v shows the traceback)",
        EXIT_REJECTED,
    )


if __name__ == "__main__":
    sys.exit(main())
