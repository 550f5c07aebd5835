"""Every command-line input error is one line ``trustgw: REASON: message`` and a non-zero exit.

The test walks the argparse tree of :func:`gateway.cli.build_parser`: every subcommand, every
option and positional. Each is given malformed values chosen by the kind of value it takes
(derived from its argparse ``type``/``choices``/``nargs``): too long, empty, the wrong type,
non-ASCII, control characters, missing / directory / empty / malformed files. A new subcommand or
option is covered as soon as it exists; one whose kind the walker cannot tell gets the values
that no option may accept (empty, 5000 characters, control characters). Runs are in process
through ``main([...])`` against a data directory made once with ``trustgw init --dev``.

Pins README.md "Running a gateway" and docs/trust-registry.md §13: "Errors print one line
``trustgw: REASON: message``".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import io
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cli_support import Ran, trustgw
from support.clock import REAL_NOW

from gateway.cli import _common, _partner_rpc, _store, build_parser
from gateway.cli import audit as cli_audit
from gateway.cli import declarations as cli_declarations
from gateway.cli import keys as cli_keys
from gateway.cli import pki as cli_pki
from gateway.cli import place as cli_place
from gateway.cli import purge as cli_purge
from gateway.cli import stock as cli_stock
from gateway.cli import verify as cli_verify
from gateway.runtime import settings as gateway_config
from keys.crypto import Algorithm, PrivateKey
from keys.partner import PartnerSigner
from keys.timeutil import to_iso


class Reached(Exception):
    """Raised in place of serving / running the demo: the command accepted its arguments."""


# --- the parser tree ------------------------------------------------------------------------


def _leaves(
    parser: argparse.ArgumentParser, words: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield words, parser
        return
    for action in subs:
        for name, child in action.choices.items():
            yield from _leaves(child, (*words, name))


LEAVES = dict(_leaves(build_parser()))


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        a
        for a in parser._actions
        if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
        and a.dest != "verbose"
    ]


def _flag(action: argparse.Action) -> str | None:
    long = [s for s in action.option_strings if s.startswith("--")]
    return (long or action.option_strings or [None])[0]


# --- what kind of value each option takes ---------------------------------------------------

TYPE_KINDS: dict[Any, str] = {
    _common.time_type: "time",
    cli_verify._time: "time",
    _common.kid_type: "kid",
    _store.region_arg: "region",
    _common.existing_data_dir_type: "data_dir",
    _common.data_dir_type: "new_dir",
    _common.path_type: "path",
    cli_keys._duration: "duration",
    cli_purge._days: "days",
    cli_audit._head_arg: "head",
    cli_audit._limit_arg: "integer",
    cli_verify._format: "format",
    cli_pki.host_type: "host",
    cli_pki.name_type: "name",
    cli_pki.ip_type: "ip",
    cli_pki.serial_type: "serial",
    cli_pki.fingerprint_type: "fingerprint",
    _partner_rpc.address_type: "address",
    cli_stock.job_type: "job",
    cli_declarations.declaration_id: "declaration_id",
    cli_declarations.day: "day",
    cli_declarations.groups: "groups",
    cli_place._venue_id: "venue",
    cli_place._division: "region",  # a district's 6 digits (37xxxx): refused as a region's are
}
# Where a path is written rather than read.
OUTPUTS = {"out", "report", "keep", "out_dir", "receipt_out"}
# Directories written into, made when missing: only a path under a file is refused.
OUTPUT_DIRS = {
    (("convert-batch",), "qr_dir"),
    (("stock", "export"), "qr_dir"),
    (("restore",), "data_dir"),
}
# Inputs whose content is what the command judges: bad content is its answer (a verdict or a
# report on stdout), not an input error; a file that cannot be read still is one.
SUBJECTS = {
    (("verify",), "code"),
    (("trustlist", "verify"), "file"),
    (("trustlist", "verify"), "base"),
    (("config", "check"), "file"),
    (("convert-batch",), "file"),
}


def kind_of(words: tuple[str, ...], action: argparse.Action) -> str:
    if action.nargs == 0:
        return "flag"
    if (words, action.dest) in SUBJECTS:
        return "subject"
    if action.choices is not None:
        return "choice"
    if action.type in TYPE_KINDS:
        kind = TYPE_KINDS[action.type]
        if kind == "path" and (words, action.dest) in OUTPUT_DIRS:
            return "output_dir"
        if kind == "path":
            return "output" if action.dest in OUTPUTS else "input"
        return kind
    name = getattr(action.type, "__name__", None)
    if name in ("integer", "number", "text"):
        return name
    if action.type is None and action.dest in gateway_config.BY_ATTR:
        return "setting-" + gateway_config.BY_ATTR[action.dest].kind
    return "unknown"


def test_every_option_takes_a_checked_kind_of_value() -> None:
    """New options use the shared argument types of gateway/cli/_common.py (or choices)."""
    unknown = [
        (" ".join(words), _flag(a) or a.dest)
        for words, parser in LEAVES.items()
        for a in _options(parser)
        if kind_of(words, a) == "unknown"
    ]
    assert unknown == []


# --- files and values -----------------------------------------------------------------------


@dataclass(frozen=True)
class Files:
    """Inputs for the runs, made once per session."""

    root: Path
    data_dir: Path
    jwk: Path
    partner_file: Path
    trust: Path  # trustgw keys export
    trustlist: Path  # trustgw trustlist export
    toml: Path
    csv: Path
    venue: str  # a venue's id (trustgw place add)

    def bad(self, name: str) -> Path:
        return self.root / "bad" / name


BAD_FILES = {
    "missing": None,
    "directory": "dir/",
    "empty": b"",
    "bad-json": b'{"kty": "OKP", ',
    "json-array": b"[1, 2]",
    "bad-pem": b"-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n",
    "binary": bytes(range(256)) * 4,
    "big": b"{" + b" " * (5 * 1024 * 1024) + b"}",
    "nul-json": b'{"a": "\x00"}',
    "broken-link": "link",
    "under-a-file": "under",
    "a-file": b"x",
    "nonempty-directory": "full/",
}


@pytest.fixture(scope="session")
def files(dev_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Files:
    import shutil

    from gateway.cli import main

    root = tmp_path_factory.mktemp("inputs")
    data_dir = root / "gw"  # a copy: the walker adds a key and a partner to it
    shutil.copytree(dev_data_dir, data_dir)
    bad = root / "bad"
    bad.mkdir()
    for name, content in BAD_FILES.items():
        path = bad / name
        if content == "dir/":
            path.mkdir()
        elif content == "full/":
            path.mkdir()
            (path / "something").write_bytes(b"x")
        elif content == "link":
            path.symlink_to(root / "nowhere")
        elif content == "under":
            (bad / "afile").write_bytes(b"x")
        elif isinstance(content, bytes):
            path.write_bytes(content)
    jwk = root / "key.jwk"
    jwk.write_text(json.dumps(PrivateKey.generate(Algorithm.EDDSA).public_key().to_jwk()))
    partner_file = root / "partner.json"
    partner_file.write_bytes(PartnerSigner.generate("110000").partner_file())
    trust = root / "trust.json"
    assert main(["keys", "export", "--data-dir", str(data_dir), "--out", str(trust)]) == 0
    argv = ["pki", "issue", "--data-dir", str(data_dir), "--role", "verifier", "--name", "cp-1"]
    assert main(argv) == 0  # for pki revoke
    trustlist = root / "trustlist.json"
    argv = ["trustlist", "export", "--data-dir", str(data_dir), "--out", str(trustlist)]
    assert main(argv) == 0
    toml = root / "gw.toml"
    toml.write_text(f'data_dir = "{data_dir}"\nlisten = "127.0.0.1:0"\n')
    csv = root / "stock.csv"
    csv.write_text("city,certificate_id,id_number,name,status,resident_since\n")
    job_csv = root / "stock-job.csv"  # a finished job, for stock export (stock.csv stays new)
    job_csv.write_text("city,certificate_id,id_number,name,status,resident_since\r\n")
    assert main(["convert-batch", str(job_csv), "--data-dir", str(data_dir)]) == 0
    argv = ["keys", "add", "--data-dir", str(data_dir), "--region", "110000",
            "--public-key", str(jwk), "--kid", "K1"]  # fmt: skip
    assert main(argv) == 0
    argv = ["partner", "add", "--data-dir", str(data_dir), "--file", str(partner_file)]
    assert main(argv) == 0
    asyncio.run(_declare(data_dir))  # for declarations show
    assert main(["backup", "--data-dir", str(data_dir), "--out", str(root / "backup.tar.gz")]) == 0
    tools = root / "tools"  # a partner's development kit, made with partner-tools itself
    pt = ["partner-tools"]
    assert (
        main(
            [
                *pt,
                "keygen",
                "--region",
                "110000",
                "--role",
                "anchor",
                "--kid",
                "a1",
                "--out-dir",
                str(tools),
                "--dev",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                *pt,
                "keygen",
                "--region",
                "110000",
                "--role",
                "signing",
                "--kid",
                "s1",
                "--out-dir",
                str(tools),
                "--dev",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                *pt,
                "partner-file",
                "--region",
                "110000",
                "--anchor",
                str(tools / "a1.jwk"),
                "--threshold",
                "1",
                "--out",
                str(tools / "partner.json"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                *pt,
                "keyset",
                "--region",
                "110000",
                "--version",
                "1",
                "--key",
                str(tools / "s1.jwk"),
                "--sign",
                str(tools / "a1.key"),
                "--out",
                str(tools / "keyset-1.json"),
            ]
        )
        == 0
    )
    assert main([*pt, "code", "--signing-key", str(tools / "s1.key"),
                 "--out", str(tools / "code.txt")]) == 0  # fmt: skip
    argv = ["place", "add", "--data-dir", str(data_dir), "--name", "v", "--division", "370102",
            "--category", "mall", "--json"]  # fmt: skip
    capsys_free = io.StringIO()
    with contextlib.redirect_stdout(capsys_free):
        assert main(argv) == 0
    venue = json.loads(capsys_free.getvalue())["id"]
    return Files(root, data_dir, jwk, partner_file, trust, trustlist, toml, csv, venue)


DECLARATION_ID = "SD" + "0123456789abcdef0123456789abcd"


async def _declare(data_dir: Path) -> None:
    """A stored declaration (as the service stores one: no ID number) for declarations show."""
    from datetime import date, timedelta

    from keys.personal import DeclarationRecord
    from keys.store import SQLiteStore

    store = await SQLiteStore.open(data_dir / "trustgw.db")
    try:
        await store.declare(
            DeclarationRecord(
                DECLARATION_ID, "h1-x", "d", "420000", "province", date(2026, 3, 9), "yellow",
                ("ARRIVED_UNDER_14_DAYS",), date(2026, 3, 23), False, "SD1:x", REAL_NOW,
                REAL_NOW + timedelta(days=7), REAL_NOW,
            ),
            REAL_NOW,
        )  # fmt: skip
    finally:
        await store.close()


def _bad_path(files: Files, name: str) -> str:
    if name == "under-a-file":
        return str(files.bad("afile") / "x.json")
    return str(files.bad(name))


LONG = "x" * 5000
CONTROL = "a\x1b[31mb"
# Values no option may accept, whatever it takes.
UNIVERSAL = [("empty", ""), ("5000-chars", LONG), ("control", CONTROL), ("newline", "a\nb")]
VALUES: dict[str, list[tuple[str, str]]] = {
    "time": [
        ("no-offset", "2026-01-01T00:00:00"),
        ("date-only", "2026-01-01"),
        ("words", "tomorrow"),
        ("fullwidth-digits", "\uff12\uff10\uff12\uff16-01-01T00:00:00Z"),
        ("out-of-range", "99999999999"),
        ("negative", "-1"),
        ("trailing-control", "2026-01-01T00:00:00Z\x07"),
    ],
    "kid": [("space", "K 1"), ("non-ascii", "ключ"), ("129-chars", "k" * 129), ("tab", "a\tb")],
    "region": [
        ("five-digits", "11000"),
        ("seven-digits", "1100000"),
        ("letters", "abcdef"),
        ("arabic-digits", "\u0661\u0661\u0660\u0660\u0660\u0660"),
        ("fullwidth-digits", "\uff11\uff11\uff10\uff10\uff10\uff10"),
    ],
    "integer": [
        ("word", "many"),
        ("fraction", "1.5"),
        ("negative", "-1"),
        ("huge", "9" * 30),
        ("arabic-digit", "\u0663"),
        ("exponent", "1e3"),
    ],
    "number": [
        ("word", "many"),
        ("nan", "nan"),
        ("inf", "inf"),
        ("negative", "-1"),
        ("huge", "1e999"),
        ("arabic-digit", "\u0663"),
    ],
    "duration": [
        ("word", "soon"),
        ("negative", "-1h"),
        ("nan", "nanh"),
        ("overflow", "1e999d"),
        ("huge", "99999999999d"),
        ("arabic-digit", "\u0663h"),
    ],
    "days": [("word", "many"), ("negative", "-1"), ("nan", "nan"), ("too-many", "36501")],
    "head": [("word", "head"), ("short-hash", "1:abc"), ("non-ascii", "\uff11:" + "a" * 64)],
    "format": [
        ("word", "nope"),
        ("arabic-digits", "\u0661\u0661\u0660\u0660\u0660\u0660"),
        ("five-digits", "11000"),
    ],
    "choice": [("word", "nope"), ("fullwidth", "\uff4a\uff53\uff4f\uff4e")],
    "host": [
        ("space", "a b"),
        ("non-ascii", "检查站.cn"),
        ("slash", "a/b"),
        ("254-chars", "a" * 254),
    ],
    "name": [("space", "a b"), ("non-ascii", "检查站"), ("slash", "a/b"), ("65-chars", "a" * 65)],
    "address": [
        ("no-port", "localhost"),
        ("bad-port", "localhost:99999"),
        ("port-0", "a:0"),
        ("non-ascii", "检查站:50051"),
        ("fullwidth-port", "a:\uff15"),
    ],
    "ip": [("name", "gw.internal"), ("five-octets", "1.2.3.4.5"), ("fullwidth", "\uff11.2.3.4")],
    "serial": [("not-hex", "xyz"), ("fullwidth", "\uff11"), ("21-bytes", "a" * 42)],
    "job": [
        ("short", "abc1234"),
        ("not-hex", "g" * 16),
        ("fullwidth", "\uff11" * 16),
        ("65-digits", "a" * 65),
    ],
    "declaration_id": [
        ("short", "SD1234"),
        ("not-hex", "SD" + "g" * 30),
        ("fullwidth", "SD" + "\uff11" * 30),
        ("lower-prefix", "sd" + "0" * 30),
    ],
    "day": [("impossible", "2026-02-30"), ("not-iso", "11/03/2026"), ("fullwidth", "\uff12" * 4)],
    "groups": [("unknown", "holder"), ("twice", "origin,origin"), ("empty", ",")],
    "fingerprint": [("short", "ab" * 10), ("not-hex", "g" * 64), ("fullwidth", "\uff11" * 64)],
    "text": [("301-chars", "x" * 301), ("bidi-override", "ab\u202ecd")],
    "setting-address": [("no-port", "localhost"), ("bad-port", "127.0.0.1:99999")],
    "setting-float": [("word", "many"), ("nan", "nan"), ("negative", "-1"), ("huge", "1e999")],
    "setting-path": [],
    "setting-database": [
        ("other-scheme", "mysql://u:pw@h/db"),
        ("bad-port", "postgresql://u:pw@h:99999/db"),
        ("space", "postgresql://u:pw@h/a b"),
    ],
}
FILE_VALUES = {
    "input": [
        "missing", "directory", "empty", "bad-json", "json-array", "bad-pem", "binary", "big",
        "broken-link", "under-a-file",
    ],
    "subject": ["missing", "directory", "broken-link", "under-a-file"],
    "output": ["directory", "under-a-file"],
    "output_dir": ["under-a-file"],
    "data_dir": ["missing", "empty", "under-a-file"],
    "new_dir": ["a-file", "under-a-file"],
    "setting-path": ["missing", "directory", "bad-pem"],
}  # fmt: skip
# Where an option's files mean something else than its kind's (a valid value is not tried).
FILE_VALUES_FOR = {
    (("demo",), "keep"): ["a-file", "nonempty-directory", "under-a-file"],
    (("serve",), "config"): ["missing", "directory", "bad-json", "binary", "under-a-file"],
    (("config", "show"), "config"): ["missing", "directory", "bad-json", "binary", "under-a-file"],
    (("init",), "config"): ["missing", "directory", "bad-json", "binary", "under-a-file"],
    (("db", "status"), "config"): ["missing", "directory", "bad-json", "binary", "under-a-file"],
    (("db", "migrate"), "config"): ["missing", "directory", "bad-json", "binary", "under-a-file"],
    # config show shows the paths it is given; only serve uses them.
    (("config", "show"), "data_dir"): [],
    (("config", "show"), "tls_cert"): [],
    (("config", "show"), "tls_key"): [],
    (("config", "show"), "tls_ca"): [],
    (("config", "show"), "online_file"): [],  # serve reads it (tests/test_startup_errors.py)
    # keygen's --out-dir is a directory to write into (made when missing).
    (("partner-tools", "keygen"), "out_dir"): ["a-file", "under-a-file"],
    # A code id is any printable text, so any line of text is one: only unusable files fail.
    (("partner-tools", "revocations"), "code_ids"): [
        "missing",
        "directory",
        "empty",
        "binary",
        "big",
        "broken-link",
        "under-a-file",
    ],
}
# What the baseline adds to the required options for the command to run.
EXTRA: dict[tuple[str, ...], list[str]] = {
    ("init",): ["--dev"],
    ("serve",): ["--listen", "127.0.0.1:0"],
    ("pki", "issue"): ["--name", "checkpoint-1"],  # --name is required for client roles
    ("pki", "deny"): ["--fingerprint", "ab" * 32],  # one of --serial, --fingerprint
    ("partner-tools", "keygen"): ["--dev"],
    ("partner-tools", "keyset"): ["--region", "110000", "--version", "1"],
    ("partner-tools", "revocations"): ["--code-id", "c0ffee01"],
    ("keys", "revoke"): ["--region", "110000"],  # a partner's key (or --role: the gateway's)
    ("place", "qr"): ["--format", "png"],  # the baseline's --out (out.json) names no image kind
}


def _valid(words: tuple[str, ...], dest: str, files: Files, tmp: Path) -> str:
    """A value that the command accepts for this option (the other options' baseline)."""
    if dest == "data_dir":
        if words == ("restore",):
            return str(tmp / "restored")  # a new directory, as restore wants
        return str(tmp / "new-gw") if words in (("init",), ("pki", "init")) else str(files.data_dir)
    table: dict[str, str] = {
        "region": "110000",
        "public_key": str(files.jwk),
        "kid": "K1",
        "role": {"keys": "attest", "pki": "verifier"}.get(words[0], ""),
        "name": "checkpoint-1",
        "format": "110000",
        "trust": str(files.jwk),
        "code": "BJ1:x",
        "pinned": str(files.trust),
        "out": str(tmp / "out.json"),
        "config": str(files.toml),
        "job": hashlib.sha256((files.root / "stock-job.csv").read_bytes()).hexdigest(),
        "floor": "1",
        "id": DECLARATION_ID,
        "by": "origin,day",
        "since": "2026-03-01",
        "until": "2026-03-31",
        "division": "370102",
        "category": "mall",
        "venue": files.venue,
        # keys update: a start K1 may take (narrowing the window it was added with)
        "not_before": to_iso(REAL_NOW),
    }
    if words == ("partner", "add") and dest == "file":
        return str(files.partner_file)
    if words == ("trustlist", "verify") and dest == "file":
        return str(files.trustlist)
    if words == ("config", "check") and dest == "file":
        return str(files.toml)
    if words == ("restore",) and dest == "file":
        return str(files.root / "backup.tar.gz")
    if words == ("convert-batch",) and dest == "file":
        return str(files.csv)
    if words[0] == "partner-tools":
        tools = files.root / "tools"
        pki = files.data_dir / "pki"
        value = {
            "role": "anchor",
            "out_dir": str(tmp / "made-keys"),
            "anchor": str(tools / "a1.jwk"),
            "threshold": "1",
            "sign": str(tools / "a1.key"),
            "compromised_at": "2026-01-01T00:00:00Z",
            "batch_id": "b-1",
            "partner_file": str(tools / "partner.json"),
            "statement": str(tools / "keyset-1.json"),
            "signing_key": str(tools / "s1.key"),
            "gateway": "localhost:50051",
            "cert": str(pki / "server.pem"),
            "key": str(pki / "server.key"),
            "ca": str(pki / "ca.pem"),
            "code_file": str(tools / "code.txt"),
            "code": "SD" + "0" * 30,  # code-status: a home code's id
        }.get(dest)
        if value is not None:
            return value
    if words == ("pki", "renew") and dest == "certificate":
        return "server"
    if words == ("pki", "revoke") and dest == "certificate":
        return "verifier-cp-1"
    if words == ("pki", "show") and dest == "certificate":
        return str(files.data_dir / "pki" / "server.pem")
    return table[dest]


# Commands whose --data-dir is optional (a --database may stand for it) but that the baseline
# gives.
OPTIONAL_DATA_DIR = {("serve",), ("db", "status"), ("db", "migrate")}


def baseline(words: tuple[str, ...], files: Files, tmp: Path) -> list[str]:
    """The shortest command line that runs: required options and positionals only."""
    parser = LEAVES[words]
    argv = [*words, *EXTRA.get(words, [])]
    positionals = []
    for action in _options(parser):
        flag = _flag(action)
        if flag is None:
            positionals.append(_valid(words, action.dest, files, tmp))
        elif action.required or (words in OPTIONAL_DATA_DIR and action.dest == "data_dir"):
            argv += [flag, _valid(words, action.dest, files, tmp)]
    return [*argv, *positionals]


def with_value(
    words: tuple[str, ...], action: argparse.Action, value: str, files: Files, tmp: Path
) -> list[str]:
    """The baseline with ``action`` given ``value`` (replacing the baseline's own value)."""
    parser = LEAVES[words]
    argv = [*words, *EXTRA.get(words, [])]
    positionals = []
    for other in _options(parser):
        flag = _flag(other)
        if other is action:
            if flag is None:
                positionals.append(value)
            else:
                argv.append(f"{flag}={value}")
        elif flag is None:
            positionals.append(_valid(words, other.dest, files, tmp))
        elif other.required or (words in OPTIONAL_DATA_DIR and other.dest == "data_dir"):
            argv += [flag, _valid(words, other.dest, files, tmp)]
    return [*argv, "--", *positionals] if positionals else argv


def cases() -> list[Any]:
    params = []
    for words, parser in LEAVES.items():
        command = " ".join(words)
        for action in _options(parser):
            kind = kind_of(words, action)
            name = _flag(action) or action.dest
            if kind == "flag":
                params.append(pytest.param(words, action.dest, "value", "x",
                                           id=f"{command} {name}=x"))  # fmt: skip
                continue
            values = UNIVERSAL
            if kind in ("input", "output", "subject", "data_dir", "new_dir"):
                values = [("empty", ""), ("5000-chars", LONG), ("control", CONTROL)]
            for label, value in [*values, *VALUES.get(kind, [])]:
                params.append(
                    pytest.param(words, action.dest, label, value, id=f"{command} {name} {label}")
                )
            for label in FILE_VALUES_FOR.get((words, action.dest), FILE_VALUES.get(kind, [])):
                params.append(
                    pytest.param(words, action.dest, label, None, id=f"{command} {name} {label}")
                )
    return params


# --- running ----------------------------------------------------------------------------------


@pytest.fixture
def contained(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Never really serve or run the demo; keep the test process's logging as it is; write any
    relative file name into the test's own directory."""
    import gateway.cli.core
    import gateway.demo
    import gateway.runtime.gateway

    async def reached(*_: Any, **__: Any) -> Any:
        raise Reached("the command accepted its arguments")

    monkeypatch.setattr(gateway.runtime.gateway.Gateway, "open", reached)
    monkeypatch.setattr(gateway.demo, "run_demo", reached)

    def connect(*_: Any, **__: Any) -> Any:
        raise Reached("the command accepted its arguments")

    monkeypatch.setattr(_partner_rpc, "_client", connect)
    monkeypatch.setattr(gateway.cli.core, "configure_logging", lambda *_: None)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRUSTGW_PASSPHRASE", raising=False)
    monkeypatch.delenv("TRUSTGW_PASSPHRASE_FILE", raising=False)
    for option in gateway_config.OPTIONS:
        monkeypatch.delenv(option.env, raising=False)


def assert_one_line_refusal(ran: Ran, caplog: pytest.LogCaptureFixture) -> str:
    """Exit non-zero, stderr exactly one line ``trustgw: REASON: message``, no traceback."""
    assert ran.status != 0, f"accepted (exit 0): {ran.out[:200]!r}"
    assert "Traceback" not in ran.err + ran.out
    assert ran.reason is not None, f"stderr is not one 'trustgw: REASON: message' line: {ran.err!r}"
    assert ran.reason != "INTERNAL", ran.err
    logged = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not logged, [r.getMessage() for r in logged]
    return ran.reason


def assert_judged(ran: Ran, caplog: pytest.LogCaptureFixture) -> None:
    """A subject input: a one-line refusal, or the command's own verdict/report on stdout."""
    if ran.err.strip():
        assert_one_line_refusal(ran, caplog)
        return
    assert "Traceback" not in ran.out
    assert ran.out.strip(), "neither an error line nor an answer"


@pytest.mark.usefixtures("contained")
@pytest.mark.parametrize(("words", "dest", "label", "value"), cases())
def test_a_malformed_value_is_refused_in_one_line(
    words: tuple[str, ...],
    dest: str,
    label: str,
    value: str | None,
    files: Files,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    action = next(a for a in _options(LEAVES[words]) if a.dest == dest)
    kind = kind_of(words, action)
    if value is None:
        value = _bad_path(files, label)
    argv = with_value(words, action, value, files, tmp_path)
    ran = trustgw(capsys, *argv)
    if kind == "subject":
        assert_judged(ran, caplog)
    else:
        assert_one_line_refusal(ran, caplog)


# --- the command line's own errors ----------------------------------------------------------

COMMANDS = [pytest.param(words, id=" ".join(words)) for words in LEAVES]


@pytest.mark.usefixtures("contained")
@pytest.mark.parametrize("words", COMMANDS)
def test_usage_errors_are_one_line_usage(
    words: tuple[str, ...],
    files: Files,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An unknown option, a missing required option or positional: ``USAGE``, exit 2."""
    argv = baseline(words, files, tmp_path)
    broken = [[*argv, "--no-such-option"], [*words[:-1], f"{words[-1]}x"]]
    parser = LEAVES[words]
    for action in _options(parser):
        if action.required or _flag(action) is None:
            dropped = baseline(words, files, tmp_path)
            value = _valid(words, action.dest, files, tmp_path)
            flag = _flag(action)
            index = dropped.index(value)
            del dropped[index - (1 if flag else 0) : index + 1]
            broken.append(dropped)
    for command in broken:
        ran = trustgw(capsys, *command)
        assert assert_one_line_refusal(ran, caplog) == "USAGE", command
        assert ran.status == 2, command


@pytest.mark.parametrize("words", [pytest.param((), id="trustgw"), *COMMANDS])
def test_every_command_has_help(words: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    ran = trustgw(capsys, *words, "--help")
    assert ran.status == 0 and ran.out.startswith("usage: trustgw") and not ran.err


def test_the_top_level_help_says_how_errors_look(capsys: pytest.CaptureFixture[str]) -> None:
    out = trustgw(capsys, "--help").out
    assert "trustgw: REASON: message" in out and "TIME_OFFSET_REQUIRED" in out


def test_the_walker_covers_every_subcommand() -> None:
    assert len(LEAVES) >= 26
    assert ("keys", "add") in LEAVES and ("serve",) in LEAVES and ("verify",) in LEAVES


@pytest.mark.usefixtures("contained")
@pytest.mark.parametrize("words", COMMANDS)
def test_every_baseline_runs(
    words: tuple[str, ...],
    files: Files,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The walker's baseline is a working command line, so each refusal above is the value's."""
    import shutil

    own = tmp_path / "own"
    shutil.copytree(files.data_dir, own)
    argv = [own.as_posix() if a == str(files.data_dir) else a
            for a in baseline(words, files, tmp_path)]  # fmt: skip
    if words == ("init",):
        argv = baseline(words, files, tmp_path)
    try:
        ran = trustgw(capsys, *argv)
    except Reached:
        return
    if ran.err.startswith("trustgw: INTERNAL: unexpected Reached"):
        return
    if words in {("verify",), ("trustlist", "verify"), ("config", "check")}:
        assert ran.status in (0, 1) and ran.out.strip(), ran.err
        return
    assert ran.status == 0, ran.err


def _ids(params: list[Any]) -> list[str]:
    return [p.id for p in params]


def test_the_walker_feeds_every_kind_of_malformed_value() -> None:
    ids = _ids(cases())
    for expected in (
        "keys add --kid 129-chars",
        "keys add --not-before no-offset",
        "keys add --public-key directory",
        "keys add --public-key bad-pem",
        "keys revoke --at no-offset",
        "verify --at no-offset",
        "partner add --file missing",
        "serve --listen no-port",
        "trustlist export --since arabic-digit",
    ):
        assert expected in ids


@pytest.mark.integration
def test_a_real_process_prints_exactly_one_line(files: Files, tmp_path: Path) -> None:
    """Outside the test's logging capture: the dev-mode warning is held back on an error."""
    import subprocess
    import sys

    out = str(tmp_path / "no" / "such" / "x")
    argv = [sys.executable, "-m", "gateway.cli", "trustlist", "export",
            "--data-dir", str(files.data_dir), "--out", out]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRUSTGW_")}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)  # noqa: S603
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("trustgw: IO_ERROR: ")
    assert "-v shows 1 log line" in done.stderr
    argv = [sys.executable, "-m", "gateway.cli", "keys", "add", "--data-dir", str(files.data_dir),
            "--region", "110000", "--public-key", str(files.jwk), "--kid", "k" * 129]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)  # noqa: S603
    assert (done.returncode, done.stderr.count("\n")) == (2, 1), done.stderr
    assert done.stderr.startswith("trustgw: MALFORMED: --kid: key id ")


@pytest.mark.parametrize(
    "argv",
    [pytest.param([], id="no-command"), pytest.param(["nope"], id="unknown-command"),
     pytest.param(["-v", "keys"], id="no-action"), pytest.param(["--nope"], id="unknown-option")],
)  # fmt: skip
def test_the_top_level_usage_errors_are_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    ran = trustgw(capsys, *argv)
    assert assert_one_line_refusal(ran, caplog) == "USAGE" and ran.status == 2
