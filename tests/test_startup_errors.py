"""``trustgw serve`` that cannot start says why in one line and exits with its own code
(docs/operations.md "Exit codes"): every bind (gRPC, metrics, probe port busy or not this
machine's), permission, configuration and store failure; never a traceback, never an
"Exception ignored" at exit. Each case runs the real command in a process of its own.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import ONE_LINE

import gateway.cli.core

pytestmark = pytest.mark.integration  # starts processes and opens sockets

ROOT = Path(__file__).resolve().parent.parent
NOT_HERE = "192.0.2.1:0"  # TEST-NET-1 (RFC 5737): never one of this machine's addresses


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port another process (this one) is listening on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def serve(data_dir: Path, *flags: str, user: int | None = None) -> tuple[int, str, list[str]]:
    """Run ``trustgw serve`` to its exit: (status, the one error line, the other lines)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRUSTGW_")}
    env["PYTHONPATH"] = str(ROOT)
    argv = [sys.executable, "-m", "gateway.cli", "serve", "--data-dir", str(data_dir), *flags]
    done = subprocess.run(  # noqa: S603
        argv, capture_output=True, text=True, env=env, timeout=120, user=user, cwd="/"
    )
    assert done.stdout == "", done.stdout  # it never said it was serving
    lines = done.stderr.splitlines()
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr
    assert lines and ONE_LINE.fullmatch(lines[-1]), done.stderr
    for line in lines[:-1]:  # anything before the error is the JSON log
        json.loads(line)
    return done.returncode, lines[-1], lines[:-1]


def reason(line: str) -> str:
    return line.split(": ", 2)[1]


def test_a_busy_grpc_port_is_address_in_use_exit_4(own_data_dir: Path, busy_port: int) -> None:
    status, line, _ = serve(own_data_dir, "--listen", f"127.0.0.1:{busy_port}")
    assert (status, reason(line)) == (4, "ADDRESS_IN_USE")
    assert f"gRPC port 127.0.0.1:{busy_port}: in use" in line


def test_a_busy_metrics_port_is_address_in_use_exit_4(own_data_dir: Path, busy_port: int) -> None:
    status, line, _ = serve(
        own_data_dir, "--listen", "127.0.0.1:0", "--metrics-listen", f"127.0.0.1:{busy_port}"
    )
    assert (status, reason(line)) == (4, "ADDRESS_IN_USE")
    assert f"metrics port 127.0.0.1:{busy_port}" in line


def test_an_address_not_of_this_machine_is_address_unavailable_exit_4(
    own_data_dir: Path,
) -> None:
    status, line, _ = serve(own_data_dir, "--listen", NOT_HERE)
    assert (status, reason(line)) == (4, "ADDRESS_UNAVAILABLE")


def test_an_invalid_setting_is_config_invalid_exit_3(own_data_dir: Path) -> None:
    status, line, _ = serve(own_data_dir, "--listen", "127.0.0.1:0", "--grace-period", "-1")
    assert (status, reason(line)) == (3, "CONFIG_INVALID")
    assert "grace_period" in line


def test_a_missing_tls_file_is_configuration_exit_3(own_data_dir: Path) -> None:
    (own_data_dir / "pki" / "server.key").unlink()
    status, line, _ = serve(own_data_dir, "--listen", "127.0.0.1:0")
    assert (status, reason(line)) == (3, "CONFIGURATION")
    assert "server.key" in line


def test_a_database_that_cannot_be_opened_is_store_unavailable_exit_6(
    own_data_dir: Path,
) -> None:
    for path in own_data_dir.glob("trustgw.db*"):
        path.unlink()
    (own_data_dir / "trustgw.db").write_bytes(b"this is not a database" * 100)
    status, line, _ = serve(own_data_dir, "--listen", "127.0.0.1:0")
    assert (status, reason(line)) == (6, "STORE_UNAVAILABLE")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file (see the next test)")
def test_files_the_user_may_not_read_are_a_permission_error_exit_5(own_data_dir: Path) -> None:
    (own_data_dir / "pki" / "server.key").chmod(0)
    status, line, _ = serve(own_data_dir, "--listen", "127.0.0.1:0")
    assert (status, reason(line)) == (5, "FILE_PERMISSION")


def test_a_permission_error_is_file_permission_exit_5_even_as_root(
    own_data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same refusal as the kernel gives a user that may not read the key (EACCES), in
    process: root may read any file, so the refusal is made where the file is read."""
    from cli_support import trustgw

    key = own_data_dir / "pki" / "server.key"
    read_bytes = Path.read_bytes

    def refuse(path: Path) -> bytes:
        if path == key:
            raise PermissionError(13, "Permission denied", str(path))
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", refuse)
    monkeypatch.setattr(gateway.cli.core, "configure_logging", lambda *_: None)
    ran = trustgw(capsys, "serve", "--data-dir", str(own_data_dir), "--listen", "127.0.0.1:0")
    assert (ran.status, ran.reason) == (5, "FILE_PERMISSION"), ran.err
    assert str(key) in ran.err


def test_a_busy_probe_port_is_address_in_use_exit_4(own_data_dir: Path, busy_port: int) -> None:
    status, line, _ = serve(
        own_data_dir, "--listen", "127.0.0.1:0", "--probe-listen", f"127.0.0.1:{busy_port}"
    )
    assert (status, reason(line)) == (4, "ADDRESS_IN_USE")
    assert f"probe port 127.0.0.1:{busy_port}" in line


def test_a_workers_failure_exits_as_the_single_process_would() -> None:
    """With --workers N a worker's error reaches the supervisor as its reason and message (a
    ConfigurationError carrying that reason): the exit code follows the reason."""
    from gateway.cli.core import serve_exit_status
    from keys.errors import ConfigurationError

    cases = {"ADDRESS_IN_USE": 4, "FILE_PERMISSION": 5, "STORE_UNAVAILABLE": 6, "PASSPHRASE": 3}
    for reason, expected in cases.items():
        relayed = ConfigurationError("from worker 0")
        relayed.reason = reason  # type: ignore[misc]  # as the supervisor relays it
        assert serve_exit_status(relayed, 1) == expected, reason
    assert serve_exit_status(ValueError("a bug"), 1) == 1


@pytest.mark.doc("partners.md §9.8")
@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(None, "CONFIG_INVALID", id="online-file-missing"),
        pytest.param(
            '[region.120000]\nendpoint = "https://x.example"\n',
            "CONFIG_INVALID",
            id="not-an-online-region",
        ),
        pytest.param(
            '[region.110000]\nendpoint = "https://127.0.0.1:9"\n',
            "CONFIGURATION",
            id="client-certificate-missing",
        ),
    ],
)
def test_a_bad_online_partners_file_stops_serve_in_one_line_exit_3(
    own_data_dir: Path, tmp_path: Path, content: str | None, expected: str
) -> None:
    online = tmp_path / "online.toml"
    if content is not None:
        online.write_text(content, encoding="utf-8")
    status, line, _ = serve(
        own_data_dir, "--insecure", "--listen", "127.0.0.1:0", "--online-file", str(online)
    )
    assert (status, reason(line)) == (3, expected)
