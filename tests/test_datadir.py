"""The data directory's layout is named in one place, gateway.runtime.datadir.DataDir, and every
command and the server use it (docs/operations.md, "What lives where")."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main
from gateway.runtime.config import GatewayConfig
from gateway.runtime.datadir import DataDir
from gateway.runtime.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_the_layout_names_the_store_the_keys_and_the_pki(tmp_path: Path) -> None:
    paths = DataDir(tmp_path)
    assert paths.database == tmp_path / "trustgw.db"
    assert paths.keys == tmp_path / "keys"
    assert paths.pki == tmp_path / "pki"
    tls = paths.server_tls()
    assert (tls.cert, tls.key, tls.ca) == (
        tmp_path / "pki" / "server.pem",
        tmp_path / "pki" / "server.key",
        tmp_path / "pki" / "ca.pem",
    )
    assert not paths.is_initialised()


def test_init_creates_what_the_layout_names_and_serve_reads_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "gw"
    assert main(["init", "--data-dir", str(data_dir), "--dev"]) == 0
    capsys.readouterr()
    paths = DataDir(data_dir)
    assert paths.is_initialised()
    assert paths.database.is_file()
    # The gateway's keys are in the database's keyring; keys/ is only read to import it once.
    assert not paths.keys.exists()
    tls = paths.server_tls()
    assert tls.cert.is_file() and tls.key.is_file() and tls.ca.is_file()
    tls.read()  # a usable certificate, key and CA
    # serve: the settings' default TLS files and the gateway's files are the layout's.
    settings = Settings(data_dir=data_dir)
    assert settings.tls_files() == tls
    config = settings.gateway_config(None)
    assert isinstance(config, GatewayConfig)
    assert (config.database, config.key_dir) == (paths.database, paths.keys)
    assert config.tls == tls


def test_a_command_on_a_directory_without_the_store_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "list", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trustgw: USAGE: ") and "no trustgw.db" in err
    assert len(err.strip().splitlines()) == 1


def test_the_operations_guide_lists_every_entry_of_the_layout() -> None:
    """docs/operations.md, "What lives where": one row per entry, by the name DataDir uses."""
    text = (ROOT / "docs" / "operations.md").read_text()
    section = text.split("## What lives where", 1)[1].split("\n## ", 1)[0]
    for name in (DataDir.DATABASE, DataDir.KEYS + "/", DataDir.PKI + "/"):
        assert f"`DATA_DIR/{name}`" in section, name
