"""TLS certificates through their life with ``trustgw pki``: issue, re-issue, renew, list, show.

Pins docs/operations.md "TLS certificates": the validity defaults (CA 1825 days, server 397,
clients 365, never past the CA), server certificates naming exactly the hosts and addresses
given, re-issue replacing the files atomically and keeping the old pair in ``pki/retired/``
under its serial, ``pki init --host`` on an existing CA re-issuing the server certificate,
``renew`` keeping names and role, and ``list``/``show`` printing serial, fingerprint and days left.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from cli_support import one_line_error, trustgw
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID
from support.aio import run, serving
from support.clock import REAL_NOW

from gateway.api.v1 import recognition_pb2 as pb
from gateway.api.v1 import recognition_pb2_grpc as pb_grpc
from gateway.pki import CA_DAYS, CLIENT_DAYS, SERVER_DAYS, TlsFiles


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _san(cert: x509.Certificate) -> tuple[list[str], list[str], list[str]]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return (
        san.get_values_for_type(x509.DNSName),
        [str(ip) for ip in san.get_values_for_type(x509.IPAddress)],
        san.get_values_for_type(x509.UniformResourceIdentifier),
    )


def _days(cert: x509.Certificate) -> float:
    """Days a certificate is valid from when it was made (its not_before is set 5 minutes
    earlier, for clocks a little behind): no reading of the clock."""
    made = cert.not_valid_before_utc + timedelta(minutes=5)
    return (cert.not_valid_after_utc - made) / timedelta(days=1)


@pytest.fixture
def pki_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    data_dir = tmp_path / "gw"
    assert trustgw(capsys, "pki", "init", "--data-dir", str(data_dir)).status == 0
    return data_dir


def test_the_defaults_are_a_five_year_ca_and_a_397_day_server_certificate(pki_dir: Path) -> None:
    ca, server = _cert(pki_dir / "pki" / "ca.pem"), _cert(pki_dir / "pki" / "server.pem")
    assert CA_DAYS - 1 < _days(ca) <= CA_DAYS and SERVER_DAYS - 1 < _days(server) <= SERVER_DAYS
    assert _san(server) == (["localhost"], ["127.0.0.1"], [])


def test_a_client_certificate_is_valid_a_year_and_never_past_the_ca(
    pki_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["pki", "issue", "--data-dir", str(pki_dir), "--role", "verifier", "--name", "cp-1"]
    assert trustgw(capsys, *argv).status == 0
    client = _cert(pki_dir / "pki" / "verifier-cp-1.pem")
    assert CLIENT_DAYS - 1 < _days(client) <= CLIENT_DAYS
    ran = trustgw(capsys, *argv, "--days", "3650", "--json")
    assert ran.status == 0 and ran.json()["clamped_to_ca"] is True
    ca = _cert(pki_dir / "pki" / "ca.pem")
    assert _cert(pki_dir / "pki" / "verifier-cp-1.pem").not_valid_after_utc == (
        ca.not_valid_after_utc
    )


def test_a_server_certificate_names_exactly_the_hosts_and_addresses_given(
    pki_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ran = trustgw(capsys, "pki", "issue", "--data-dir", str(pki_dir), "--role", "server",
                  "--host", "gw.internal", "--host", "*.gw.internal", "--ip", "10.1.2.3",
                  "--ip", "fd00::5", "--days", "30", "--json")  # fmt: skip
    assert ran.status == 0, ran.err
    cert = _cert(pki_dir / "pki" / "server.pem")
    assert _san(cert) == (["gw.internal", "*.gw.internal"], ["10.1.2.3", "fd00::5"], [])
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert 29 < _days(cert) <= 30
    result = ran.json()
    # Printed at issue time, in the forms openssl prints (serial) and sha256sum of the DER.
    assert int(result["serial"], 16) == cert.serial_number and len(result["serial"]) % 2 == 0
    assert result["serial"] == result["serial"].upper()
    assert result["fingerprint_sha256"] == cert.fingerprint(hashes.SHA256()).hex()


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        pytest.param(["--role", "server"], "--host", id="server-without-names"),
        pytest.param(["--role", "verifier", "--name", "a", "--host", "x.y"], "role URI",
                     id="client-with-a-host"),
        pytest.param(["--role", "verifier"], "--name", id="client-without-a-name"),
        pytest.param(["--role", "server", "--host", "a..b"], "DNS name", id="empty-label"),
        pytest.param(["--role", "server", "--host", "a" * 64 + ".cn"], "DNS name", id="long-label"),
        pytest.param(["--role", "server", "--host=-a.b"], "DNS name", id="leading-hyphen"),
        pytest.param(["--role", "server", "--ip", "gw.internal"], "IP address", id="ip-not-ip"),
    ],
)  # fmt: skip
def test_unusable_certificate_requests_are_one_usage_line(
    pki_dir: Path, capsys: pytest.CaptureFixture[str], extra: list[str], needle: str
) -> None:
    ran = trustgw(capsys, "pki", "issue", "--data-dir", str(pki_dir), *extra)
    assert one_line_error(ran) == "USAGE" and ran.status == 2 and needle in ran.err


def test_reissuing_replaces_atomically_and_keeps_the_old_pair_under_its_serial(
    pki_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pki = pki_dir / "pki"
    old_cert, old_key = (pki / "server.pem").read_bytes(), (pki / "server.key").read_bytes()
    old_serial = format(_cert(pki / "server.pem").serial_number, "X")
    ran = trustgw(capsys, "pki", "issue", "--data-dir", str(pki_dir), "--role", "server",
                  "--host", "gw.internal", "--json")  # fmt: skip
    assert ran.status == 0, ran.err
    replaced = ran.json()["replaced"]
    assert int(replaced["serial"], 16) == int(old_serial, 16)
    kept = Path(replaced["kept_as"])
    assert kept.parent == pki / "retired" and kept.read_bytes() == old_cert
    assert kept.with_suffix(".key").read_bytes() == old_key
    assert kept.with_suffix(".key").stat().st_mode & 0o077 == 0
    assert (pki / "server.key").stat().st_mode & 0o077 == 0
    assert (pki / "server.pem").read_bytes() != old_cert
    assert not [p for p in pki.iterdir() if p.name.startswith(".")]  # no temporary file left
    new = _cert(pki / "server.pem")
    assert _san(new)[0] == ["gw.internal"]


def test_pki_init_on_an_existing_ca_says_what_to_run_or_reissues_with_hosts(
    pki_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca_before = (pki_dir / "pki" / "ca.pem").read_bytes()
    ran = trustgw(capsys, "pki", "init", "--data-dir", str(pki_dir))
    assert one_line_error(ran) == "ALREADY_EXISTS" and ran.status == 1
    assert f"trustgw pki issue --data-dir {pki_dir} --role server --host NAME" in ran.err
    ran = trustgw(capsys, "pki", "init", "--data-dir", str(pki_dir), "--host", "gw.internal",
                  "--ip", "10.0.0.7")  # fmt: skip
    assert ran.status == 0, ran.err
    assert "re-issued the server certificate" in ran.out
    assert (pki_dir / "pki" / "ca.pem").read_bytes() == ca_before
    assert _san(_cert(pki_dir / "pki" / "server.pem")) == (["gw.internal"], ["10.0.0.7"], [])


def test_renew_keeps_names_and_role_and_a_renewed_ca_still_verifies_what_it_issued(
    pki_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pki = pki_dir / "pki"
    d = str(pki_dir)
    assert (
        trustgw(
            capsys,
            "pki",
            "issue",
            "--data-dir",
            d,
            "--role",
            "server",
            "--host",
            "gw.internal",
            "--ip",
            "10.0.0.7",
            "--days",
            "10",
        ).status
        == 0
    )
    assert trustgw(capsys, "pki", "issue", "--data-dir", d, "--role", "partner",
                   "--name", "110000").status == 0  # fmt: skip
    before = {n: _cert(pki / f"{n}.pem") for n in ("server", "partner-110000", "ca")}
    for name in ("server", "partner-110000", "ca"):
        ran = trustgw(capsys, "pki", "renew", "--data-dir", d, name)
        assert ran.status == 0, ran.err
    after = {n: _cert(pki / f"{n}.pem") for n in before}
    for name, cert in after.items():
        assert cert.serial_number != before[name].serial_number
        assert cert.subject == before[name].subject
    assert _san(after["server"]) == (["gw.internal"], ["10.0.0.7"], [])
    assert SERVER_DAYS - 1 < _days(after["server"]) <= SERVER_DAYS
    assert _san(after["partner-110000"])[2] == ["trustgw://partner/110000"]
    assert after["ca"].public_key() == before["ca"].public_key()
    for name in ("server", "partner-110000"):  # old and new certificates verify under the new CA
        before[name].verify_directly_issued_by(after["ca"])
        after[name].verify_directly_issued_by(after["ca"])
    ran = trustgw(capsys, "pki", "renew", "--data-dir", d, "nothing-here")
    assert one_line_error(ran) == "CONFIGURATION" and "pki list" in ran.err


def test_list_and_show_print_role_names_serial_and_days_left(
    pki_dir: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    d = str(pki_dir)
    trustgw(capsys, "pki", "issue", "--data-dir", d, "--role", "verifier", "--name", "cp-1")
    trustgw(capsys, "pki", "issue", "--data-dir", d, "--role", "verifier", "--name", "cp-1")
    listed = trustgw(capsys, "pki", "list", "--data-dir", d, "--json").json()
    assert [(c["name"], c["role"]) for c in listed] == [
        ("ca", "ca"), ("server", "server"), ("verifier-cp-1", "verifier"),
    ]  # fmt: skip
    server = listed[1]
    cert = _cert(pki_dir / "pki" / "server.pem")
    assert int(server["serial"], 16) == cert.serial_number
    assert server["fingerprint_sha256"] == cert.fingerprint(hashes.SHA256()).hex()
    assert server["dns_names"] == ["localhost"] and server["ip_addresses"] == ["127.0.0.1"]
    assert server["days_left"] in (SERVER_DAYS - 1, SERVER_DAYS) and server["expired"] is False
    assert listed[2]["uri"] == "trustgw://verifier/cp-1"
    every = trustgw(capsys, "pki", "list", "--data-dir", d, "--retired", "--json").json()
    retired = [c for c in every if c["retired"]]
    assert [c["name"] for c in retired] == ["verifier-cp-1"]
    table = trustgw(capsys, "pki", "list", "--data-dir", d).out
    assert server["serial"] in table and "trustgw://verifier/cp-1" in table
    assert server["fingerprint_sha256"] in table
    shown = trustgw(capsys, "pki", "show", "--data-dir", d, "server", "--json").json()
    assert shown == {**server, "path": shown["path"]}
    copy = tmp_path / "elsewhere.pem"
    copy.write_bytes((pki_dir / "pki" / "server.pem").read_bytes())
    text = trustgw(capsys, "pki", "show", str(copy)).out
    assert server["serial"] in text and "days left" in text
    not_a_cert = tmp_path / "x.pem"
    not_a_cert.write_text("hello")
    assert one_line_error(trustgw(capsys, "pki", "show", str(not_a_cert))) == "CONFIGURATION"


def test_commands_without_a_ca_say_how_to_make_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ran = trustgw(capsys, "pki", "list", "--data-dir", str(tmp_path / "none"))
    assert one_line_error(ran) == "CONFIGURATION" and "trustgw pki init" in ran.err


@pytest.mark.integration
def test_a_gateway_serves_a_reissued_certificate_under_the_names_given(
    prepared_dir, capsys: pytest.CaptureFixture[str]
) -> None:
    """A client that expects gw.internal completes the handshake; one expecting localhost not."""
    data_dir = prepared_dir(REAL_NOW)  # a serving gateway reads the real clock
    d = str(data_dir)
    assert trustgw(capsys, "pki", "init", "--data-dir", d, "--host", "gw.internal").status == 0
    assert trustgw(capsys, "pki", "issue", "--data-dir", d, "--role", "verifier",
                   "--name", "cp-1").status == 0  # fmt: skip
    pki = data_dir / "pki"
    server = TlsFiles(pki / "server.pem", pki / "server.key", pki / "ca.pem")
    client = TlsFiles(pki / "verifier-cp-1.pem", pki / "verifier-cp-1.key", pki / "ca.pem")
    cert, key, ca = client.read()

    async def call(port: int, name: str) -> object:
        credentials = grpc.ssl_channel_credentials(ca, key, cert)
        options = [("grpc.ssl_target_name_override", name)]
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials, options) as ch:
            try:
                return await pb_grpc.RecognitionServiceStub(ch).Recognise(
                    pb.RecogniseRequest(code="x"), timeout=5
                )
            except grpc.aio.AioRpcError as exc:
                return exc.code()

    async def scenario() -> tuple[object, object]:
        async with serving(data_dir, server) as (_, port):
            return await call(port, "gw.internal"), await call(port, "localhost")

    good, bad = run(scenario())
    assert isinstance(good, pb.RecogniseResponse)
    assert bad is grpc.StatusCode.UNAVAILABLE
