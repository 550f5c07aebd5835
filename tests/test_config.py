"""Configuration: TOML file, TRUSTGW_* environment and flags; ``trustgw config check|show``."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.runtime import settings as config
from gateway.runtime.settings import Settings, check_file, load
from keys.errors import InvalidConfigError

FULL = """
data_dir = "/var/lib/trustgw"
listen = "0.0.0.0:50051"
insecure = false
metrics_listen = "127.0.0.1:9464"
refresh_interval = 1.5
grace_period = 10

[tls]
cert = "/etc/trustgw/server.pem"
key = "/etc/trustgw/server.key"
ca = "/etc/trustgw/ca.pem"

[log]
level = "warning"
format = "text"

[retention]
recognitions_days = 14
conversions_days = 120
recognition_log = false
purge_interval_seconds = 600

[trustlist]
ttl_hours = 12
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "trustgw.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_every_setting_has_one_option_and_one_field() -> None:
    assert {f.name for f in fields(Settings)} == {*config.BY_ATTR, "sources", "config_file"}
    envs = [o.env for o in config.OPTIONS]
    assert len(set(envs)) == len(envs)
    assert "TRUSTGW_PASSPHRASE" not in envs  # never a setting


def test_a_full_file_is_valid_and_read_exactly(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    assert check_file(path) == []
    s = load(path, environ={})
    assert s.data_dir == Path("/var/lib/trustgw")
    assert (s.listen, s.insecure, s.metrics_listen) == ("0.0.0.0:50051", False, "127.0.0.1:9464")
    assert s.tls_cert == Path("/etc/trustgw/server.pem")
    assert (s.log_level, s.log_format) == ("warning", "text")
    assert (s.refresh_interval, s.grace_period) == (1.5, 10.0)
    assert (s.retention_recognitions_days, s.retention_conversions_days) == (14, 120)
    assert (s.retention_recognition_log, s.retention_purge_interval_seconds) == (False, 600.0)
    assert s.trustlist_ttl_hours == 12.0
    assert s.sources["listen"] == f"file {path}"


def test_defaults_need_nothing_but_a_data_dir() -> None:
    s = load(None, environ={}, flags={"data_dir": "/srv/gw"})
    assert s == Settings(data_dir=Path("/srv/gw"))
    assert s.sources["listen"] == "default"
    tls = s.tls_files()
    assert (tls.cert, tls.key, tls.ca) == (
        Path("/srv/gw/pki/server.pem"),
        Path("/srv/gw/pki/server.key"),
        Path("/srv/gw/pki/ca.pem"),
    )


def test_precedence_is_flags_then_environment_then_file_then_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path, 'data_dir = "/f"\nlisten = "f:1"\ngrace_period = 1\nrefresh_interval = 2\n'
    )
    env = {"TRUSTGW_LISTEN": "e:2", "TRUSTGW_GRACE_PERIOD": "3"}
    s = load(path, environ=env, flags={"listen": "flag:3", "grace_period": None})
    assert s.listen == "flag:3" and s.sources["listen"] == "flag --listen"
    assert s.grace_period == 3.0 and s.sources["grace_period"] == "env TRUSTGW_GRACE_PERIOD"
    assert s.refresh_interval == 2.0 and s.sources["refresh_interval"] == f"file {path}"
    assert s.log_level == "info" and s.sources["log_level"] == "default"


def test_relative_paths_in_a_file_are_relative_to_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'data_dir = "data"\n[tls]\ncert = "pki/s.pem"\n')
    s = load(path, environ={})
    assert s.data_dir == tmp_path / "data"
    assert s.tls_cert == tmp_path / "pki" / "s.pem"


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        pytest.param("listen = 50051", "listen", "got integer 50051", id="listen-not-string"),
        pytest.param('listen = "nohost"', "listen", "HOST:PORT", id="listen-no-port"),
        pytest.param('listen = "h:70000"', "listen", "65535", id="listen-port-range"),
        pytest.param("insecure = 1", "insecure", "boolean", id="insecure-not-bool"),
        pytest.param("grace_period = -1", "grace_period", "from 0 to 3600", id="grace-negative"),
        pytest.param('grace_period = "5"', "grace_period", "got string", id="grace-string"),
        pytest.param("refresh_interval = 0", "refresh_interval", "from 0.05", id="refresh-zero"),
        pytest.param(
            "[retention]\nrecognitions_days = -1",
            "retention.recognitions_days",
            "a number from 0 to 36500",
            id="retention-negative",
        ),
        pytest.param(
            '[retention]\nconversions_days = "1y"',
            "retention.conversions_days",
            "got string",
            id="retention-string",
        ),
        pytest.param(
            "[retention]\npurge_interval_seconds = 1e9",
            "retention.purge_interval_seconds",
            "from 0 to 604800",
            id="purge-interval",
        ),
        pytest.param(
            "[trustlist]\nttl_hours = 0", "trustlist.ttl_hours", "from 0.1", id="ttl-zero"
        ),
        pytest.param('[log]\nlevel = "loud"', "log.level", "one of 'debug'", id="log-level"),
        pytest.param('[log]\nformat = "xml"', "log.format", "'json', 'text'", id="log-format"),
        pytest.param('lsiten = "h:1"', "lsiten", "did you mean 'listen'", id="unknown-typo"),
        pytest.param(
            '[tls]\ncertificate = "x"', "tls.certificate", "unknown key", id="unknown-in-table"
        ),
        pytest.param("[server]\nport = 1", "server", "unknown key", id="unknown-table"),
        pytest.param('tls = "x"', "tls", "expected a table", id="table-as-value"),
        pytest.param("data_dir = [1]", "data_dir", "path", id="data-dir-array"),
        pytest.param("listen = ", "(file)", "not valid TOML", id="syntax"),
    ],
)
def test_check_names_the_key_and_what_was_expected(tmp_path, text, key, fragment) -> None:
    problems = check_file(write(tmp_path, text + "\n"))
    assert len(problems) == 1, problems
    assert problems[0].key == key
    assert fragment in problems[0].message


def test_check_reports_every_problem_at_once(tmp_path: Path) -> None:
    problems = check_file(write(tmp_path, "listen = 1\ngrace_period = -1\nfoo = 1\n"))
    assert [p.key for p in problems] == ["listen", "grace_period", "foo"]


@pytest.mark.parametrize(
    ("env", "key"),
    [
        pytest.param({"TRUSTGW_GRACE_PERIOD": "soon"}, "grace_period", id="not-a-number"),
        pytest.param({"TRUSTGW_INSECURE": "perhaps"}, "insecure", id="not-a-boolean"),
        pytest.param({"TRUSTGW_LOG_LEVEL": "loud"}, "log.level", id="not-a-choice"),
        pytest.param(
            {"TRUSTGW_RETENTION_CONVERSIONS_DAYS": "-1"},
            "retention.conversions_days",
            id="out-of-range",
        ),
    ],
)
def test_bad_environment_values_name_the_variable(env, key) -> None:
    with pytest.raises(InvalidConfigError) as info:
        load(None, environ=env)
    (problem,) = info.value.problems
    assert problem.key == key
    assert problem.source == f"env {next(iter(env))}"


def test_environment_booleans_and_empty_optional() -> None:
    s = load(None, environ={"TRUSTGW_INSECURE": "yes", "TRUSTGW_METRICS_LISTEN": ""})
    assert s.insecure is True and s.metrics_listen is None
    assert s.tls_files() is None


def test_unrelated_trustgw_variables_are_not_settings() -> None:
    load(None, environ={"TRUSTGW_PASSPHRASE": "x", "TRUSTGW_PROPERTY_EXAMPLES": "9"})


def test_settings_validate_in_the_constructor() -> None:
    with pytest.raises(InvalidConfigError) as info:
        Settings(listen="nowhere", retention_recognitions_days=True)  # type: ignore[arg-type]
    assert [p.key for p in info.value.problems] == ["listen", "retention.recognitions_days"]


def test_serve_without_a_data_dir_says_where_to_set_it(capsys) -> None:
    assert main(["serve", "--insecure"]) == 3  # configuration (docs/operations.md "Exit codes")
    err = capsys.readouterr().err
    assert "data_dir" in err and "TRUSTGW_DATA_DIR" in err and "--data-dir" in err


def test_serve_refuses_an_invalid_file_before_starting(tmp_path: Path, capsys) -> None:
    path = write(tmp_path, f'data_dir = "{tmp_path}"\ngrace_period = "long"\n')
    assert main(["serve", "--config", str(path)]) == 3
    assert "grace_period: expected a number" in capsys.readouterr().err


# --- the commands -----------------------------------------------------------------------------


def test_config_check_ok(tmp_path: Path, capsys) -> None:
    path = write(tmp_path, FULL)
    assert main(["config", "check", str(path)]) == 0
    assert capsys.readouterr().out.strip() == f"{path}: ok"


def test_config_check_lists_problems_and_exits_1(tmp_path: Path, capsys) -> None:
    path = write(tmp_path, "[retention]\nrecognitions_days = -3\n")
    assert main(["config", "check", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"{path}: retention.recognitions_days: expected a number from 0 to 36500, got -3" in out


def test_config_check_json(tmp_path: Path, capsys) -> None:
    path = write(tmp_path, "bogus = 1\n")
    assert main(["config", "check", "--json", str(path)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] is False
    assert report["problems"] == [
        {"key": "bogus", "message": "unknown key", "source": f"file {path}"}
    ]


def test_config_check_a_missing_file(tmp_path: Path, capsys) -> None:
    assert main(["config", "check", str(tmp_path / "none.toml")]) == 1
    assert "cannot read" in capsys.readouterr().out


def test_config_show_says_where_each_value_came_from(tmp_path, capsys, monkeypatch) -> None:
    path = write(tmp_path, 'data_dir = "/d"\nlisten = "f:1"\n[log]\nlevel = "error"\n')
    monkeypatch.setenv("TRUSTGW_LOG_LEVEL", "debug")
    assert main(["config", "show", "--json", "--config", str(path), "--grace-period", "9"]) == 0
    rows = {r["key"]: r for r in json.loads(capsys.readouterr().out)["settings"]}
    assert set(rows) == set(config.BY_KEY)
    assert rows["listen"] == {"key": "listen", "value": "f:1", "source": f"file {path}"}
    assert rows["log.level"]["value"] == "debug"
    assert rows["log.level"]["source"] == "env TRUSTGW_LOG_LEVEL"
    assert rows["grace_period"] == {
        "key": "grace_period",
        "value": 9.0,
        "source": "flag --grace-period",
    }
    assert rows["tls.cert"]["value"] == "/d/pki/server.pem"
    assert rows["retention.conversions_days"]["source"] == "default"

    assert main(["config", "show", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "log.level" in out and "[env TRUSTGW_LOG_LEVEL]" in out


def test_config_show_refuses_an_invalid_configuration(tmp_path: Path, capsys) -> None:
    path = write(tmp_path, "grace_period = -1\n")
    assert main(["config", "show", "--config", str(path)]) == 1
    assert "CONFIG_INVALID" in capsys.readouterr().err


def test_the_gateway_config_carries_every_setting(tmp_path: Path) -> None:
    from datetime import timedelta

    env = {
        "TRUSTGW_DATA_DIR": str(tmp_path),
        "TRUSTGW_GRACE_PERIOD": "12",
        "TRUSTGW_RETENTION_RECOGNITIONS_DAYS": "7",
        "TRUSTGW_RETENTION_CONVERSIONS_DAYS": "60",
        "TRUSTGW_RETENTION_RECOGNITION_LOG": "false",
        "TRUSTGW_RETENTION_PURGE_INTERVAL_SECONDS": "0",
        "TRUSTGW_TRUSTLIST_TTL_HOURS": "2",
        "TRUSTGW_METRICS_LISTEN": "127.0.0.1:0",
    }
    gc = load(None, environ=env).gateway_config(passphrase=b"pw")
    assert gc.data_dir == tmp_path.resolve() and gc.passphrase == b"pw"
    assert (gc.grace, gc.refresh_interval, gc.metrics_listen) == (12.0, 0.5, "127.0.0.1:0")
    assert gc.tls.cert == tmp_path.resolve() / "pki" / "server.pem"
    assert gc.retention.recognitions_days == 7 and gc.retention.conversions_days == 60
    assert gc.retention.recognition_log is False and gc.retention.interval_seconds == 0
    assert gc.trustlist_ttl == timedelta(hours=2)


@pytest.mark.integration
def test_the_trust_list_lifetime_reaches_the_server(prepared_dir) -> None:
    from datetime import timedelta

    from support.aio import run
    from support.clock import REAL_NOW

    from gateway.grpc.server import build_server
    from gateway.runtime.gateway import Gateway
    from gateway.sdk import AsyncGatewayClient

    data_dir = prepared_dir(REAL_NOW)  # a serving gateway reads the real clock
    settings = load(None, environ={}, flags={"data_dir": str(data_dir), "insecure": True,
                                             "trustlist_ttl_hours": "2"})  # fmt: skip

    async def scenario() -> timedelta:
        gateway = await Gateway.open(settings.gateway_config(None))
        running = await build_server(gateway, "127.0.0.1:0")
        try:
            async with AsyncGatewayClient(f"127.0.0.1:{running.port}", insecure=True) as c:
                signed = await c.trust_list()
            return signed.expires - signed.issued_at
        finally:
            await running.stop(0.5)
            await gateway.close()

    assert run(scenario()) == timedelta(hours=2)


@pytest.mark.parametrize(
    "words",
    [
        pytest.param(w, id=" ".join(w))
        for w in (["config"], ["config", "check"], ["config", "show"])
    ],
)
def test_config_commands_have_help(words, capsys) -> None:
    assert main([*words, "--help"]) == 0
    assert "usage: trustgw config" in capsys.readouterr().out
