"""What every ``trustgw`` subcommand shares: exit codes, argument types, output helpers."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from keys.errors import GatewayError
from keys.timeutil import parse_time

EXIT_OK, EXIT_REJECTED, EXIT_USAGE = 0, 1, 2


class UsageError(GatewayError):
    """The command line or an input file is unusable (exit status 2)."""

    reason = "USAGE"
    default_message = "invalid usage"


def data_dir_type(value: str) -> Path:
    return Path(value).expanduser().resolve()


def time_type(value: str) -> Any:
    try:
        return parse_time(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not ISO 8601 (no offset = UTC) or unix seconds"
        ) from None


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True))


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", type=data_dir_type, required=True, help="the gateway's data directory"
    )


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")
