"""Mutual TLS: who may call what, as proven by the client certificate."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from support.aio import run, serving
from support.clock import REAL_NOW

from adapters.regions import REGION_SPECS
from gateway.api.v1 import recognition_pb2 as pb
from gateway.api.v1 import recognition_pb2_grpc as pb_grpc
from gateway.cli import main
from gateway.pki import DevCA, Peer, Role, TlsFiles
from gateway.sdk.channel import aio_channel
from keys.errors import PermissionDeniedError

NOW = REAL_NOW  # a serving gateway reads the real clock
REGION = REGION_SPECS[0].code


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, TlsFiles]:
    ca = DevCA.create(tmp_path / "pki", NOW)
    other = DevCA.create(tmp_path / "other-pki", NOW)
    files = {"server": TlsFiles(*ca.issue("server", server=True, now=NOW), ca.cert_path)}
    for name, uri in [
        ("verifier", "trustgw://verifier/checkpoint-7"),
        ("partner", f"trustgw://partner/{REGION}"),
        ("no-role", None),
    ]:
        files[name] = TlsFiles(*ca.issue(name, uri=uri, now=NOW), ca.cert_path)
    files["foreign"] = TlsFiles(
        *other.issue("foreign", uri="trustgw://verifier/x", now=NOW), ca.cert_path
    )
    return files


def _call(data_dir: Path, pki: dict[str, TlsFiles], client: str | None, code: str):
    async def scenario():
        async with serving(data_dir, pki["server"]) as (_, port):
            tls = pki[client] if client else None
            if tls is None:  # a TLS client with no certificate of its own
                creds = grpc.ssl_channel_credentials(
                    root_certificates=pki["server"].ca.read_bytes()
                )
                channel = grpc.aio.secure_channel(f"localhost:{port}", creds)
            else:
                channel = aio_channel(f"localhost:{port}", tls)
            async with channel:
                stub = pb_grpc.RecognitionServiceStub(channel)
                try:
                    return await stub.Recognise(pb.RecogniseRequest(code=code), timeout=5)
                except grpc.aio.AioRpcError as exc:
                    return exc

    return run(scenario())


@pytest.mark.integration
def test_a_verifier_certificate_may_recognise(codes, prepared_dir, pki) -> None:
    result = _call(prepared_dir(NOW), pki, "verifier", codes(REGION, NOW)())
    assert isinstance(result, pb.RecogniseResponse)
    assert result.reason == "RECOGNISED"


@pytest.mark.integration
def test_a_partner_certificate_may_not_recognise(codes, prepared_dir, pki) -> None:
    result = _call(prepared_dir(NOW), pki, "partner", codes(REGION, NOW)())
    assert isinstance(result, grpc.aio.AioRpcError)
    assert result.code() is grpc.StatusCode.PERMISSION_DENIED
    status = rpc_status.from_call(result)
    info = error_details_pb2.ErrorInfo()
    assert status is not None and status.details[0].Unpack(info)
    assert info.reason == "PERMISSION_DENIED"


@pytest.mark.integration
def test_a_certificate_without_a_role_is_unauthenticated(codes, prepared_dir, pki) -> None:
    result = _call(prepared_dir(NOW), pki, "no-role", codes(REGION, NOW)())
    assert isinstance(result, grpc.aio.AioRpcError)
    assert result.code() is grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.integration
@pytest.mark.parametrize(
    "client",
    [pytest.param(None, id="no-client-certificate"), pytest.param("foreign", id="other-ca")],
)
def test_the_handshake_fails_without_a_certificate_from_our_ca(client, prepared_dir, pki) -> None:
    result = _call(prepared_dir(NOW), pki, client, "x")
    assert isinstance(result, grpc.aio.AioRpcError)
    assert result.code() is grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        pytest.param("trustgw://partner/110000", Peer(Role.PARTNER, "110000"), id="partner"),
        pytest.param("trustgw://verifier/gate-3", Peer(Role.VERIFIER, "gate-3"), id="verifier"),
        pytest.param("trustgw://partner/beijing", None, id="partner-not-a-region-code"),
        pytest.param("trustgw://admin/root", None, id="unknown-role"),
        pytest.param("https://partner/110000", None, id="other-scheme"),
        pytest.param("trustgw://verifier/", None, id="empty-name"),
        pytest.param("trustgw://verifier/a/b", None, id="slash-in-name"),
    ],
)
def test_certificate_uris_map_to_roles(uri, expected) -> None:
    assert Peer.from_uri(uri) == expected


def test_a_partner_may_write_only_its_own_region() -> None:
    peer = Peer(Role.PARTNER, "110000")
    peer.require_region("110000")
    with pytest.raises(PermissionDeniedError):
        peer.require_region("120000")
    with pytest.raises(PermissionDeniedError):
        Peer(Role.VERIFIER, "x").require_region("110000")


def test_pki_cli_issues_certificates(tmp_path, capsys) -> None:
    data_dir = tmp_path / "gw"
    assert main(["pki", "init", "--data-dir", str(data_dir)]) == 0
    assert (
        main(["pki", "issue", "--data-dir", str(data_dir), "--role", "partner", "--name", "110000"])
        == 0
    )
    assert (data_dir / "pki" / "partner-110000.pem").exists()
    assert (data_dir / "pki" / "partner-110000.key").stat().st_mode & 0o077 == 0
    capsys.readouterr()
    assert (
        main(
            ["pki", "issue", "--data-dir", str(data_dir), "--role", "partner", "--name", "beijing"]
        )
        == 2
    )
    assert "6-digit" in capsys.readouterr().err


def test_serve_refuses_to_start_without_tls_files(tmp_path, capsys) -> None:
    data_dir = tmp_path / "gw"
    assert main(["init", "--data-dir", str(data_dir), "--dev"]) == 0
    (data_dir / "pki" / "server.pem").unlink()
    capsys.readouterr()
    assert main(["serve", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0"]) == 3
    assert "server.pem" in capsys.readouterr().err
