"""One setting chooses the store (issue 10 point 1): ``--database URL-or-path`` on ``init``,
``serve`` and every command that opens the store, ``TRUSTGW_DATABASE``, ``database`` in the TOML
file, else ``DATA_DIR/trustgw.db``; flags > environment > file > default. A password in a URL
is never shown; ``serve`` refuses a database that needs a migration and ``trustgw db migrate``
applies it; ``trustgw db status`` says where the schema stands.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from cli_support import Ran, one_line_error, trustgw
from support.aio import run

import keys.store.schema as schema_module
from gateway.runtime import dburl
from gateway.runtime.settings import Settings, load, load_database
from keys.errors import InvalidConfigError, SchemaOutdatedError
from keys.store import SCHEMA_VERSION, SQLiteStore
from keys.store.factory import open_store, schema_status

SECRET = "s3cr%40t-pw"  # percent-encoded "s3cr@t-pw"
URL = f"postgresql://trustgw:{SECRET}@db1.internal:5432,db2.internal:5433/trustgw?sslmode=require"
SHOWN = "postgresql://trustgw:***@db1.internal:5432,db2.internal:5433/trustgw?sslmode=require"


def _no_secret(text: str) -> None:
    for secret in (SECRET, "s3cr@t-pw", "s3cr"):
        assert secret not in text


# --- the URL: parsed, redacted ------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        pytest.param(URL, SHOWN, id="multi-host-userinfo"),
        pytest.param(
            "postgres://h/db?password=pw1&application_name=gw",
            "postgres://h/db?password=***&application_name=gw",
            id="password-parameter",
        ),
        pytest.param(
            "postgresql://u:p/a?b@h/db", "postgresql://u:***@h/db", id="unencoded-slash-in-password"
        ),
        pytest.param("postgresql://u@h/db", "postgresql://u@h/db", id="no-password"),
        pytest.param("postgresql://[::1]:5432/db", "postgresql://[::1]:5432/db", id="ipv6"),
        pytest.param("/var/lib/trustgw/trustgw.db", "/var/lib/trustgw/trustgw.db", id="a-path"),
        pytest.param("mysql://u:pw@h/db", "mysql://u:***@h/db", id="other-scheme-still-redacted"),
    ],
)
def test_a_database_target_is_shown_without_its_password(url: str, shown: str) -> None:
    assert dburl.redact(url) == shown


def test_a_multi_host_url_parses_into_its_hosts_in_order() -> None:
    parsed = dburl.parse(URL)
    assert parsed.hosts == (("db1.internal", 5432), ("db2.internal", 5433))
    assert (parsed.user, parsed.password, parsed.dbname) == ("trustgw", "s3cr@t-pw", "trustgw")
    assert parsed.params == (("sslmode", "require"),)


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("mysql://u:s3cr@h/db", id="scheme"),
        pytest.param("postgresql://u:s3cr@h:99999/db", id="port"),
        pytest.param("postgresql://u:s3cr@h:x/db", id="port-word"),
        pytest.param("postgresql://u:s3cr@h/a b", id="space"),
        pytest.param("postgresql://u:s3cr@h/db\x00", id="control"),
        pytest.param("postgresql://u:s3cr@bad host/db", id="host"),
    ],
)
def test_a_bad_url_is_refused_without_showing_its_password(url: str) -> None:
    with pytest.raises(ValueError) as caught:
        dburl.parse(url)
    _no_secret(str(caught.value))


def test_scrub_takes_the_password_out_of_a_drivers_message() -> None:
    message = f'connection to {URL} failed: password authentication failed ("s3cr@t-pw")'
    scrubbed = dburl.scrub(message, URL)
    _no_secret(scrubbed)
    assert SHOWN in scrubbed


# --- the setting: layers and precedence ---------------------------------------------------


def test_the_database_setting_follows_the_precedence_of_every_setting(tmp_path: Path) -> None:
    toml = tmp_path / "trustgw.toml"
    toml.write_text('data_dir = "gw"\ndatabase = "stores/file.db"\n')
    file_only = load(toml, environ={}, flags={})
    assert file_only.database == tmp_path / "stores" / "file.db"  # relative to the file
    assert file_only.sources["database"] == f"file {toml}"
    env = {"TRUSTGW_DATABASE": URL}
    from_env = load(toml, environ=env, flags={})
    assert from_env.database == URL and from_env.sources["database"] == "env TRUSTGW_DATABASE"
    flag = load(toml, environ=env, flags={"database": str(tmp_path / "flag.db")})
    assert flag.database == tmp_path / "flag.db" and flag.sources["database"] == "flag --database"
    default = load(None, environ={}, flags={"data_dir": str(tmp_path)})
    assert default.database is None
    assert default.database_target() == tmp_path / "trustgw.db"
    assert default.gateway_config(None).database == tmp_path / "trustgw.db"


def test_commands_that_do_not_serve_read_the_same_layers(tmp_path: Path) -> None:
    toml = tmp_path / "trustgw.toml"
    toml.write_text(f'database = "{URL}"\n')
    assert load_database(toml, {}, None) == URL
    assert load_database(toml, {"TRUSTGW_DATABASE": "x.db"}, None) == Path("x.db").resolve()
    assert load_database(toml, {"TRUSTGW_DATABASE": "x.db"}, "/y.db") == Path("/y.db")
    assert load_database(None, {"TRUSTGW_LISTEN": "not an address"}, None) is None


def test_a_bad_database_value_is_a_config_problem_without_the_password() -> None:
    with pytest.raises(InvalidConfigError) as caught:
        load(None, environ={"TRUSTGW_DATABASE": "mysql://u:s3cr@h/db"}, flags={})
    text = str(caught.value)
    assert "database:" in text and "env TRUSTGW_DATABASE" in text
    _no_secret(text)


def test_the_settings_and_the_config_do_not_print_the_password_in_their_repr() -> None:
    settings = Settings(data_dir=Path("/gw"), database=URL)
    _no_secret(repr(settings))
    _no_secret(repr(settings.gateway_config(None)))
    row = next(r for r in settings.effective() if r["key"] == "database")
    assert row["value"] == SHOWN


def test_config_show_prints_the_database_redacted_and_where_it_came_from(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRUSTGW_DATABASE", URL)
    ran = trustgw(capsys, "config", "show", "--data-dir", str(tmp_path), "--json")
    assert ran.status == 0
    row = next(r for r in ran.json()["settings"] if r["key"] == "database")
    assert row == {"key": "database", "value": SHOWN, "source": "env TRUSTGW_DATABASE"}
    _no_secret(ran.out + ran.err)
    monkeypatch.delenv("TRUSTGW_DATABASE")
    ran = trustgw(capsys, "config", "show", "--data-dir", str(tmp_path))
    line = next(line for line in ran.out.splitlines() if line.startswith("database "))
    assert str(tmp_path / "trustgw.db") in line and "[default (DATA_DIR/trustgw.db)]" in line


# --- every command opens the store the setting names --------------------------------------


def _store_regions(path: Path) -> int:
    async def count() -> int:
        store = await SQLiteStore.open(path)
        try:
            return len(await store.list_regions())
        finally:
            await store.close()

    return run(count())


def test_init_and_the_store_commands_use_the_database_given(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir, elsewhere = tmp_path / "gw", tmp_path / "elsewhere" / "store.db"
    elsewhere.parent.mkdir()
    ran = trustgw(
        capsys, "init", "--data-dir", str(data_dir), "--dev", "--database", str(elsewhere), "--json"
    )
    assert ran.status == 0, ran.err
    assert ran.json()["database"] == str(elsewhere)
    assert not (data_dir / "trustgw.db").exists()  # the data directory holds keys and pki only
    assert _store_regions(elsewhere) == 14
    # the data directory counts as initialised (its keys are there) ...
    ran = trustgw(capsys, "partner", "list", "--data-dir", str(data_dir), "--json")
    one_line_error(ran)
    assert "trustgw.db does not exist" in ran.err and "--database" in ran.err
    # ... and with the setting, by flag or environment, every store command finds its store.
    for argv, env in (
        (["--database", str(elsewhere)], None),
        ([], str(elsewhere)),
    ):
        if env is None:
            monkeypatch.delenv("TRUSTGW_DATABASE", raising=False)
        else:
            monkeypatch.setenv("TRUSTGW_DATABASE", env)
        ran = trustgw(capsys, "partner", "list", "--data-dir", str(data_dir), "--json", *argv)
        assert ran.status == 0, ran.err
        assert len(ran.json()) == 14
        ran = trustgw(capsys, "audit", "verify", "--data-dir", str(data_dir), *argv)
        assert ran.status == 0, ran.err
        ran = trustgw(capsys, "db", "status", "--data-dir", str(data_dir), "--json", *argv)
        assert ran.json()["database"] == str(elsewhere) and ran.json()["state"] == "up to date"


def _walk(parser: object) -> list[tuple[tuple[str, ...], object]]:
    import argparse

    assert isinstance(parser, argparse.ArgumentParser)
    found: list[tuple[tuple[str, ...], object]] = [((), parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found += [((name, *words), p) for words, p in _walk(child)]
    return found


def test_every_command_that_opens_the_store_takes_database() -> None:
    """The commands that open the store are the ones with --data-dir and a store function:
    every one of them (and init, serve, config show) takes --database."""
    from gateway.cli import build_parser

    store_free = {  # they read the key directory or the pki only
        ("keys", "export"),
        ("keys", "rotate"),
        ("pki", "init"),
        ("pki", "issue"),
        ("pki", "renew"),
        ("pki", "list"),
        ("pki", "show"),
        ("pki", "deny"),  # the deny list is a file in DATA_DIR/pki
        ("pki", "revoke"),
        # restore writes a new data directory (its SQLite file, or prints the pg_restore command
        # for a pg_dump); it opens no configured store
        ("restore",),
    }
    missing = []
    for words, parser in _walk(build_parser()):
        dests = {a.dest for a in parser._actions}  # type: ignore[attr-defined]
        if "data_dir" in dests and words not in store_free and "database" not in dests:
            missing.append(" ".join(words))
    assert missing == []


def test_the_cli_opens_the_store_only_through_the_setting() -> None:
    """No command opens a SQLite file of its own: the store is opened in gateway/cli/_store.py
    (and by init and db, through the same factory)."""
    root = Path(__file__).resolve().parent.parent / "gateway" / "cli"
    offenders = [
        path.name
        for path in sorted(root.glob("*.py"))
        if path.name != "_store.py"
        and ("SQLiteStore" in path.read_text() or "data_dir).database" in path.read_text())
    ]
    assert offenders == []


# --- the schema: serve refuses, db migrate migrates ---------------------------------------


def _schema3(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(schema_module, "MIGRATIONS", schema_module.MIGRATIONS[:3])
        patch.setattr(schema_module, "SCHEMA_VERSION", 3)
        run(_open_close(path))


async def _open_close(path: Path) -> None:
    store = await SQLiteStore.open(path)
    await store.close()


def test_open_store_without_migrate_refuses_an_old_schema_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "old.db"
    _schema3(path, monkeypatch)
    with pytest.raises(SchemaOutdatedError) as caught:
        run(open_store(path, migrate=False))
    assert (caught.value.current, caught.value.expected) == (3, SCHEMA_VERSION)
    assert "trustgw db migrate" in str(caught.value)
    status = run(schema_status(path))
    assert (status.backend, status.current, status.outdated) == ("sqlite", 3, True)


def test_serve_refuses_a_database_that_needs_migration_in_one_line(
    own_data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import gateway.cli.core

    old = tmp_path / "old.db"
    _schema3(old, monkeypatch)
    # The test process's logging stays as it is (serve would log to this test's stderr).
    monkeypatch.setattr(gateway.cli.core, "configure_logging", lambda *_: None)
    ran = trustgw(
        capsys,
        "serve",
        "--data-dir",
        str(own_data_dir),
        "--database",
        str(old),
        "--insecure",
        "--listen",
        "127.0.0.1:0",
    )
    assert one_line_error(ran) == "SCHEMA_OUTDATED"
    assert "schema version 3" in ran.err and "run trustgw db migrate" in ran.err
    assert "serving on" not in ran.out
    assert run(schema_status(old)).current == 3  # unchanged


def test_db_status_and_migrate_bring_an_old_database_up_to_date(
    own_data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    old = tmp_path / "old.db"
    _schema3(old, monkeypatch)
    where = ["--data-dir", str(own_data_dir), "--database", str(old)]
    ran = trustgw(capsys, "db", "status", *where, "--json")
    assert ran.status == 1
    assert ran.json() == {
        "backend": "sqlite",
        "database": str(old),
        "current": 3,
        "expected": SCHEMA_VERSION,
        "state": "needs migration",
    }
    ran = trustgw(capsys, "db", "migrate", *where)
    assert ran.status == 0, ran.err
    assert f"migrated from schema version 3 to {SCHEMA_VERSION}" in ran.out
    ran = trustgw(capsys, "db", "migrate", *where, "--json")
    assert json.loads(ran.out)["migrated"] is False
    ran: Ran = trustgw(capsys, "db", "status", *where)
    assert ran.status == 0 and "up to date" in ran.out


def test_db_status_of_a_newer_database_says_so(
    own_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import sqlite3

    newer = tmp_path / "newer.db"
    run(_open_close(newer))
    with sqlite3.connect(newer) as conn:
        conn.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?, 0)",
            (SCHEMA_VERSION + 1,),
        )
    ran = trustgw(capsys, "db", "status", "--data-dir", str(own_data_dir), "--database", str(newer))
    assert ran.status == 1 and "newer than this gateway" in ran.out


def test_a_store_command_with_a_bad_url_says_so_in_one_line_without_the_password(
    own_data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for url in ("mysql://u:s3cr@h/db", "postgresql://u:s3cr@h:99999/db"):
        ran = trustgw(capsys, "keys", "list", "--data-dir", str(own_data_dir), "--database", url)
        assert one_line_error(ran) == "CONFIG_INVALID"
        _no_secret(ran.err + ran.out)


def test_the_upgrading_commands_run_as_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/operations.md "Upgrading": the ``sh db`` block, on a fresh data directory."""
    import re
    import shlex

    text = (Path(__file__).resolve().parent.parent / "docs" / "operations.md").read_text()
    block = re.search(r"^```sh db\n(.*?)^```\n", text, re.DOTALL | re.MULTILINE)
    assert block is not None
    lines = [re.sub(r"\s+#.*$", "", line).strip() for line in block.group(1).splitlines()]
    monkeypatch.delenv("TRUSTGW_DATABASE", raising=False)
    data_dir = tmp_path / "gw"
    assert trustgw(capsys, "init", "--data-dir", str(data_dir), "--dev").status == 0
    outputs = []
    for line in filter(None, lines):
        argv = shlex.split(line.replace("/var/lib/trustgw", str(data_dir)))
        assert argv[0] == "trustgw"
        ran = trustgw(capsys, *argv[1:])
        assert ran.status == 0, f"{line}\n{ran.out}{ran.err}"
        outputs.append(ran.out)
    assert len(outputs) == 3
    assert json.loads(outputs[-1])["state"] == "up to date"


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(("init", "--dev"), id="init"),
        pytest.param(("db", "status"), id="db-status"),
        pytest.param(("db", "migrate"), id="db-migrate"),
        pytest.param(("partner", "list"), id="partner-list"),
    ],
)
def test_an_unreachable_postgresql_store_is_one_line_without_the_password(
    command: tuple[str, ...],
    own_data_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Nothing listens on port 1: the command fails in one line; neither that line nor any log
    line (what -v would show) holds the password."""
    caplog.set_level(logging.DEBUG)
    url = "postgresql://trustgw:s3cr3t-pw@127.0.0.1:1/trustgw?connect_timeout=5"
    data_dir = tmp_path / "new-gw" if command[0] == "init" else own_data_dir
    ran = trustgw(capsys, *command, "--data-dir", str(data_dir), "--database", url)
    one_line_error(ran)
    assert "s3cr3t-pw" not in ran.out + ran.err
    assert all("s3cr3t-pw" not in record.getMessage() for record in caplog.records)
    if command[0] == "init":  # nothing half-made: init can run again once the store is there
        assert not (data_dir / "keys").exists()


# --- the same on PostgreSQL ---------------------------------------------------------------


def _with_password(url: str, password: str) -> str:
    """``url`` with a password in its userinfo (the test server trusts, and ignores it)."""
    scheme, _, rest = url.partition("://")
    userinfo, at, hostpart = rest.rpartition("@")
    user = userinfo if at else "postgres"
    return f"{scheme}://{user}:{password}@{hostpart if at else rest}"


@pytest.mark.integration
def test_init_serve_and_db_on_postgresql_go_by_the_one_setting(
    pg_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An empty PostgreSQL database: serve refuses it (SCHEMA_OUTDATED), db status says so,
    init fills it and leaves only keys/ and pki/ in the data directory, the store commands
    find it by TRUSTGW_DATABASE; the password in the URL is never printed nor logged."""
    import gateway.cli.core

    monkeypatch.setattr(gateway.cli.core, "configure_logging", lambda *_: None)
    caplog.set_level(logging.DEBUG)
    url = _with_password(pg_url, "s3cr3t-pw")
    data_dir = tmp_path / "gw"
    printed = []

    def run_cli(*argv: str) -> Ran:
        ran = trustgw(capsys, *argv)
        printed.append(ran.out + ran.err)
        return ran

    ran = run_cli("db", "status", "--database", url, "--json")  # no data directory needed
    assert ran.status == 1
    status = ran.json()
    assert (status["backend"], status["current"], status["state"]) == (
        "postgresql",
        0,
        "needs migration",
    )
    assert status["database"] == dburl.redact(url) and ":***@" in status["database"]
    ran = run_cli("init", "--data-dir", str(data_dir), "--dev", "--database", url, "--json")
    assert ran.status == 0, ran.err
    # docs/operations.md: "A data directory of a gateway on PostgreSQL holds `pki/` only"
    assert sorted(p.name for p in data_dir.iterdir()) == ["pki"]
    monkeypatch.setenv("TRUSTGW_DATABASE", url)
    ran = run_cli("partner", "list", "--data-dir", str(data_dir), "--json")
    assert ran.status == 0, ran.err
    assert len(ran.json()) == 14
    ran = run_cli("db", "status", "--data-dir", str(data_dir))
    assert ran.status == 0 and "(postgresql)" in ran.out and "up to date" in ran.out
    ran = run_cli("config", "show", "--data-dir", str(data_dir), "--json")
    row = next(r for r in ran.json()["settings"] if r["key"] == "database")
    assert row["value"] == dburl.redact(url) and row["source"] == "env TRUSTGW_DATABASE"
    for text in printed:
        assert "s3cr3t-pw" not in text
    assert all("s3cr3t-pw" not in record.getMessage() for record in caplog.records)


@pytest.mark.integration
def test_serve_refuses_an_empty_postgresql_database_and_db_migrate_prepares_it(
    pg_url: str,
    own_data_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import gateway.cli.core

    monkeypatch.setattr(gateway.cli.core, "configure_logging", lambda *_: None)
    where = ["--data-dir", str(own_data_dir), "--database", pg_url]
    ran = trustgw(capsys, "serve", *where, "--insecure", "--listen", "127.0.0.1:0")
    assert one_line_error(ran) == "SCHEMA_OUTDATED"
    assert "run trustgw db migrate" in ran.err
    ran = trustgw(capsys, "db", "migrate", *where, "--json")
    assert ran.status == 0, ran.err
    assert ran.json()["backend"] == "postgresql" and ran.json()["migrated"] is True
    assert run(schema_status(pg_url)).outdated is False
