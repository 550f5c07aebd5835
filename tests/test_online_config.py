"""The online partners' file (docs/partners.md §9.8, docs/operations.md "Online partners"): the
documented example loads as written, every bad value is refused with its key, all at once."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.online.config import load_online
from gateway.runtime import settings
from keys.errors import InvalidConfigError

pytestmark = pytest.mark.doc("partners.md §9.8")

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _documented_example() -> str:
    text = (DOCS / "partners.md").read_text(encoding="utf-8")
    section = text[text.index("### 9.8") : text.index("## 10.")]
    match = re.search(r"```toml\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


def test_the_documented_example_loads_with_its_values(tmp_path: Path) -> None:
    path = tmp_path / "online.toml"
    path.write_text(_documented_example(), encoding="utf-8")
    online = load_online(path, tmp_path / "data")
    beijing = online.partners["110000"]
    assert beijing.endpoint == "https://status.bjhc.example:8443"
    assert beijing.ca == Path("/etc/trustgw/partners/bjhc-ca.pem")
    assert (beijing.deadline, beijing.concurrency, beijing.retry) == (0.8, 32, True)
    assert (beijing.breaker_failures, beijing.breaker_cooldown_s, beijing.cache_entries) == (
        5,
        10.0,
        10000,
    )
    assert online.client_cert == tmp_path / "data" / "pki" / "online-client.pem"
    assert online.client_key == tmp_path / "data" / "pki" / "online-client.key"


def test_client_files_and_ca_are_relative_to_the_file(tmp_path: Path) -> None:
    path = tmp_path / "online.toml"
    path.write_text(
        'client_cert = "c/gw.pem"\nclient_key = "c/gw.key"\n'
        '[region.500000]\nendpoint = "https://cq.example"\nca = "cq-ca.pem"\n',
        encoding="utf-8",
    )
    online = load_online(path, tmp_path)
    assert online.client_cert == tmp_path / "c" / "gw.pem"
    assert online.partners["500000"].ca == tmp_path / "cq-ca.pem"
    assert online.partners["500000"].deadline_ms == 800  # the default


@pytest.mark.parametrize(
    ("toml", "problem"),
    [
        pytest.param('[region.110000]\nendpoint = "http://x.example"', "https://", id="not-https"),
        pytest.param('[region.110000]\nendpoint = "https://x.example/"', "trailing", id="slash"),
        pytest.param('[region.110000]\nendpoint = "https://x.example?a=1"', "query", id="query"),
        pytest.param('[region.110000]\nendpoint = "https://u@x.example"', "user", id="user"),
        pytest.param("[region.110000]\nretry = true", "endpoint: required", id="no-endpoint"),
        pytest.param(
            '[region.120000]\nendpoint = "https://x.example"',
            "not an online region",
            id="offline-region",
        ),
        pytest.param(
            '[region.110000]\nendpoint = "https://x.example"\ndeadline_ms = 20',
            "50 to 10000",
            id="deadline-low",
        ),
        pytest.param(
            '[region.110000]\nendpoint = "https://x.example"\nconcurrency = 0',
            "1 to 1024",
            id="concurrency-0",
        ),
        pytest.param(
            '[region.110000]\nendpoint = "https://x.example"\nretry = "yes"',
            "boolean",
            id="retry-text",
        ),
        pytest.param(
            '[region.110000]\nendpoint = "https://x.example"\nbreaker_failures = true',
            "integer",
            id="bool-for-int",
        ),
        pytest.param(
            '[region.110000]\nendpoint = "https://x.example"\ndeadline = 1',
            "unknown key",
            id="unknown-key",
        ),
        pytest.param("endpoints = 1", "unknown key", id="unknown-top"),
        pytest.param("[region.110000", "not valid TOML", id="toml"),
    ],
)
def test_every_bad_value_is_refused_with_its_key(tmp_path: Path, toml: str, problem: str) -> None:
    path = tmp_path / "online.toml"
    path.write_text(toml, encoding="utf-8")
    with pytest.raises(InvalidConfigError) as caught:
        load_online(path, tmp_path)
    assert caught.value.reason == "CONFIG_INVALID"
    assert problem in str(caught.value)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "online.toml"
    path.write_text(
        '[region.110000]\nendpoint = "http://x"\nconcurrency = 0\n[region.500000]\nretry = 1\n',
        encoding="utf-8",
    )
    with pytest.raises(InvalidConfigError) as caught:
        load_online(path, tmp_path)
    assert len(caught.value.problems) == 4


def test_the_setting_names_the_file_and_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    loaded = settings.load(
        environ={
            "TRUSTGW_ONLINE_FILE": str(tmp_path / "none.toml"),
            "TRUSTGW_DATA_DIR": str(tmp_path),
        },
    )
    assert loaded.online_file == tmp_path / "none.toml"
    with pytest.raises(InvalidConfigError, match="cannot read"):
        loaded.gateway_config(None)
    assert (
        settings.load(environ={"TRUSTGW_DATA_DIR": str(tmp_path)})
        .gateway_config(None)
        .online.partners
        == {}
    )
