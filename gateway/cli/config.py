"""``trustgw config check`` and ``config show``, and the settings flags ``serve`` shares.

Precedence, highest first: flags > ``TRUSTGW_*`` environment > ``--config`` file > defaults.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from gateway.cli._common import EXIT_OK, EXIT_REJECTED, add_json, path_type, print_json
from gateway.runtime import settings as config

_METAVARS = {
    "path": "PATH",
    "database": "URL-or-PATH",
    "address": "HOST:PORT",
    "int": "N",
    "float": "X",
    "choice": None,
}


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` and one flag per setting (absent flags leave lower layers in force)."""
    parser.add_argument(
        "--config",
        type=path_type,
        metavar="FILE",
        help="TOML configuration file (flags > TRUSTGW_* env > file)",
    )
    for option in config.OPTIONS:
        help_text = f"{option.help} [{option.env}, {option.key}]"
        if option.kind == "bool":
            parser.add_argument(
                option.flag,
                dest=option.attr,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        elif option.kind == "choice":
            parser.add_argument(
                option.flag,
                dest=option.attr,
                choices=option.choices,
                default=None,
                help=help_text,
            )
        else:
            parser.add_argument(
                option.flag,
                dest=option.attr,
                default=None,
                metavar=_METAVARS[option.kind],
                help=help_text,
            )


def settings_from(opts: argparse.Namespace) -> config.Settings:
    """The effective settings for a command that took :func:`add_settings_flags`."""
    flags = {o.attr: getattr(opts, o.attr, None) for o in config.OPTIONS}
    return config.load(getattr(opts, "config", None), os.environ, flags)


def cmd_check(opts: argparse.Namespace) -> int:
    problems = config.check_file(opts.file)
    if opts.json:
        print_json(
            {
                "file": str(opts.file),
                "valid": not problems,
                "problems": [p.to_json() for p in problems],
            }
        )
    elif problems:
        for problem in problems:
            print(f"{opts.file}: {problem.key}: {problem.message}")
        print(f"{opts.file}: {len(problems)} problem(s)")
    else:
        print(f"{opts.file}: ok")
    return EXIT_REJECTED if problems else EXIT_OK


def cmd_show(opts: argparse.Namespace) -> int:
    settings = settings_from(opts)
    rows = settings.effective()
    if opts.json:
        print_json({"settings": rows})
        return EXIT_OK
    width = max(len(r["key"]) for r in rows)
    for row in rows:
        value: Any = row["value"]
        text = (
            "(unset)"
            if value is None
            else str(value).lower()
            if isinstance(value, bool)
            else str(value)
        )
        print(f"{row['key'].ljust(width)}  {text}  [{row['source']}]")
    return EXIT_OK


def register(sub: Any) -> None:
    p = sub.add_parser("config", help="check a configuration file or show the effective settings")
    area = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)

    q = area.add_parser("check", help="validate a TOML configuration file (exit 0 valid, 1 not)")
    q.add_argument("file", type=path_type, help="the TOML file")
    add_json(q)
    q.set_defaults(func=cmd_check)

    q = area.add_parser(
        "show", help="the effective settings (file, environment, flags) and where each came from"
    )
    add_settings_flags(q)
    add_json(q)
    q.set_defaults(func=cmd_show)
