"""The metrics are a contract (docs/operations.md "Metrics"): the shipped alert rules
(docs/alerts/trustgw.rules.yml) and dashboard (docs/dashboards/trustgw.json) parse as PromQL and
use only metric names, and label names, that a running gateway exports; the standard gRPC
server metrics, the process metrics, ``trustgw_build_info`` and the expiry timestamps are there;
``trustgw --version`` prints the version.
"""

from __future__ import annotations

import asyncio
import json
import random
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import promql_parser
import pytest
import yaml
from cli_support import trustgw
from prometheus_client.parser import text_string_to_metric_families
from support.aio import run
from support.clock import REAL_NOW
from support.codes import CodeFactory

from adapters.regions import REGION_SPECS
from adapters.simulator import PartnerSimulator
from gateway.api.v1 import recognition_pb2 as pb
from gateway.api.v1 import recognition_pb2_grpc as pb_grpc
from gateway.cli import main
from gateway.demo import prepare
from gateway.grpc.server import build_server
from gateway.observability import version
from gateway.pki import TlsFiles
from gateway.runtime.config import GatewayConfig
from gateway.runtime.gateway import Gateway
from keys.model import Mode

ROOT = Path(__file__).resolve().parent.parent
NOW = REAL_NOW  # a serving gateway reads the real clock
SHOW = next(s.code for s in REGION_SPECS if s.mode is Mode.SHOW)
CONVERT = next(s.code for s in REGION_SPECS if s.mode is Mode.CONVERT)
# Labels Prometheus adds to every scraped series, and the one every histogram bucket has.
ADDED_LABELS = {"job", "instance", "__name__"}


def _expressions() -> list[tuple[str, str]]:
    """(where, expression) of every alert rule and every dashboard query."""
    found = []
    rules = yaml.safe_load((ROOT / "docs/alerts/trustgw.rules.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            found.append((f"alert {rule['alert']}", rule["expr"]))
    dashboard = json.loads((ROOT / "docs/dashboards/trustgw.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            found.append((f"panel {panel['title']!r}", target["expr"]))
    return found


def _selectors(node: Any) -> Iterator[Any]:
    """Every vector selector in a parsed PromQL expression."""
    if isinstance(node, promql_parser.VectorSelector):
        yield node
        return
    if isinstance(node, promql_parser.MatrixSelector):
        yield node.vector_selector
        return
    for attr in ("lhs", "rhs", "expr", "param"):
        child = getattr(node, attr, None)
        if child is not None:
            yield from _selectors(child)
    for child in getattr(node, "args", None) or ():
        yield from _selectors(child)


def _matcher_labels(selector: Any) -> set[str]:
    matchers = selector.matchers
    labels = {m.name for m in matchers.matchers}
    for group in matchers.or_matchers:
        labels |= {m.name for m in group}
    return labels


@pytest.fixture(scope="module")
def exported(
    tmp_path_factory: pytest.TempPathFactory, simulator: PartnerSimulator
) -> dict[str, set[str]]:
    """Sample name -> its label names, scraped from a TLS gateway that has served a show and
    a convert decision, a refusal, a bad request and a stream."""
    data_dir = tmp_path_factory.mktemp("metrics") / "gw"
    data_dir.mkdir()
    run(prepare(data_dir, simulator, NOW))
    assert main(["pki", "init", "--data-dir", str(data_dir)]) == 0
    assert main(["pki", "issue", "--data-dir", str(data_dir), "--role", "verifier",
                 "--name", "cp-1"]) == 0  # fmt: skip
    pki = data_dir / "pki"
    server_tls = TlsFiles(pki / "server.pem", pki / "server.key", pki / "ca.pem")
    client = TlsFiles(pki / "verifier-cp-1.pem", pki / "verifier-cp-1.key", pki / "ca.pem")
    cert, key, ca = client.read()
    rng = random.Random(7)

    def code(region: str) -> str:
        return CodeFactory(simulator.issuer(region), NOW, rng)()

    async def scenario() -> str:
        gateway = await Gateway.open(GatewayConfig(data_dir=data_dir, tls=server_tls))
        running = await build_server(
            gateway, "127.0.0.1:0", server_tls, metrics_listen="127.0.0.1:0"
        )
        try:
            creds = grpc.ssl_channel_credentials(ca, key, cert)
            async with grpc.aio.secure_channel(f"127.0.0.1:{running.port}", creds) as channel:
                stub = pb_grpc.RecognitionServiceStub(channel)
                for region in (SHOW, CONVERT):
                    await stub.Recognise(pb.RecogniseRequest(code=code(region)))
                await stub.Recognise(pb.RecogniseRequest(code="junk"))
                with pytest.raises(grpc.aio.AioRpcError):
                    await stub.Recognise(pb.RecogniseRequest(request_id="x" * 200, code="x"))
                stream = stub.RecogniseStream()
                await stream.write(pb.RecogniseRequest(code=code(SHOW)))
                await stream.done_writing()
                assert len([r async for r in stream]) == 1
            url = f"http://127.0.0.1:{running.metrics_port}/metrics"
            body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())
            return str(body.decode())
        finally:
            await running.stop(0.5)
            await gateway.close()

    text = run(scenario())
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


@pytest.mark.integration
@pytest.mark.parametrize(("where", "expr"), _expressions(), ids=[w for w, _ in _expressions()])
def test_every_alert_and_panel_uses_only_what_the_gateway_exports(
    where: str, expr: str, exported: dict[str, set[str]]
) -> None:
    parsed = promql_parser.parse(expr)  # raises on anything that is not PromQL
    selectors = list(_selectors(parsed))
    assert selectors, f"{where}: no metric in {expr!r}"
    for selector in selectors:
        assert selector.name in exported, f"{where}: {selector.name} is not exported"
        unknown = _matcher_labels(selector) - exported[selector.name] - ADDED_LABELS
        assert not unknown, f"{where}: {selector.name} has no label {sorted(unknown)}"


@pytest.mark.integration
def test_the_gateway_exports_the_standard_and_process_metrics(
    exported: dict[str, set[str]],
) -> None:
    standard = {
        "grpc_server_started_total", "grpc_server_handled_total",
        "grpc_server_msg_received_total", "grpc_server_msg_sent_total",
        "grpc_server_handling_seconds_bucket", "trustgw_stream_duration_seconds_bucket",
    }  # fmt: skip
    for name in standard:
        assert {"grpc_type", "grpc_service", "grpc_method"} <= exported[name], name
    assert "grpc_code" in exported["grpc_server_handled_total"]
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes"} <= set(exported)
    assert {"version", "python", "grpc"} <= exported["trustgw_build_info"]
    assert exported["trustgw_tls_certificate_expiry_timestamp_seconds"] == {"certificate"}
    assert {"owner", "role", "kid"} <= exported["trustgw_key_expiry_timestamp_seconds"]
    gone = {"trustgw_rpc_latency_seconds_bucket", "trustgw_rpc_errors_total",
            "trustgw_key_expiry_days"}  # fmt: skip
    assert not gone & set(exported)


def test_trustgw_version_prints_the_version(capsys: pytest.CaptureFixture[str]) -> None:
    ran = trustgw(capsys, "--version")
    assert ran.status == 0 and ran.out.strip() == f"trustgw {version()}"
