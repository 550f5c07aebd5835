"""The ``trustgw`` command: a testable ``main(argv)``.

Each area of the command lives in its own module with a ``register(subparsers)`` function.
Errors from the project reach the operator as one line (``trustgw: <reason>: <message>``) and a
non-zero exit; ``-v`` adds the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from gateway.cli import (
    audit,
    config,
    core,
    keys,
    partner,
    pki,
    purge,
    revocations,
    stock,
    trustlist,
    verify,
)
from gateway.cli._common import EXIT_REJECTED, EXIT_USAGE, UsageError
from keys.errors import GatewayError

log = logging.getLogger("trustgw.cli")

_AREAS = (core, config, keys, pki, verify, stock, purge)
_REGISTRY_AREAS = (partner, revocations, trustlist, audit)  # the trust registry


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trustgw", description="Interprovincial trust gateway for health pass codes."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for area in (*_AREAS, *_REGISTRY_AREAS):
        area.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        opts = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    logging.basicConfig(
        level=logging.DEBUG if opts.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    try:
        return int(opts.func(opts))
    except UsageError as exc:
        print(f"trustgw: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except GatewayError as exc:
        if opts.verbose:
            log.exception("command failed")
        print(f"trustgw: {exc.reason}: {exc.message}", file=sys.stderr)
        return EXIT_REJECTED
    except OSError as exc:
        if opts.verbose:
            log.exception("command failed")
        print(f"trustgw: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_REJECTED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
