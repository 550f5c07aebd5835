"""Place codes read back from their printed QR images, as a scanner would, and the end-to-end
scenario of venues, checkpoints and a tracer over mutual TLS (tests/test_places_grpc.py, and
the privacy scan of tests/test_privacy.py).

PNG: the pixels (pypng) handed to zxing-cpp. SVG: segno draws the dark modules as one path of
horizontal runs (``M x y``, ``m dx dy``, ``h n`` in module units, ``scale(k)``); the path is
rasterised here, module by module, and the pixels handed to zxing-cpp too: the image is read,
not compared with what the same library would write.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import png
import zxingcpp
from support.codes import CodeFactory

from adapters.base import Colour
from adapters.simulator import PartnerSimulator
from gateway.api.v1 import recognition_pb2 as pb
from gateway.api.v1 import recognition_pb2_grpc as pb_grpc
from gateway.api.v1 import tracing_pb2 as tpb
from gateway.api.v1 import tracing_pb2_grpc as tpb_grpc
from gateway.cli import main
from gateway.pki import DevCA, TlsFiles
from gateway.sdk.channel import aio_channel

_PATH = re.compile(r"([Mmh])\s*(-?[0-9.]+)(?:\s+(-?[0-9.]+))?")
_SVG = "{http://www.w3.org/2000/svg}"


def decode_png(data: bytes) -> list[str]:
    """The texts of the QR codes in a PNG image."""
    width, height, pixels, info = png.Reader(bytes=data).asDirect()
    assert info["planes"] == 1 and not info["alpha"]  # greyscale, as segno writes it
    top = (1 << info["bitdepth"]) - 1
    grey = bytes(value * 255 // top for line in pixels for value in line)
    return [r.text for r in zxingcpp.read_barcodes(memoryview(grey).cast("B", (height, width)))]


def decode_svg(data: bytes, pixels_per_module: int = 4) -> list[str]:
    """The texts of the QR codes in a segno SVG image (its path rasterised)."""
    root = ET.fromstring(data)  # noqa: S314 - the test's own output, not untrusted
    path = root.find(f"{_SVG}path")
    assert path is not None, "no path in the SVG"
    scale = float(re.fullmatch(r"scale\(([0-9.]+)\)", path.get("transform", "scale(1)"))[1])  # type: ignore[index]
    size = int(float(root.get("width", "0")) / scale)
    dark = [[False] * size for _ in range(size)]
    x = y = 0.0
    for op, a, b in _PATH.findall(path.get("d", "")):
        if op == "M":
            x, y = float(a), float(b)
        elif op == "m":
            x, y = x + float(a), y + float(b)
        else:  # h: a run of dark modules on row y (drawn at its middle, y + 0.5)
            row = int(y)
            for col in range(int(x), int(x + float(a))):
                dark[row][col] = True
            x += float(a)
    k = pixels_per_module
    grey = bytearray()
    for row in dark:
        line = bytes(0 if d else 255 for d in row for _ in range(k))
        grey += line * k
    side = size * k
    return [r.text for r in zxingcpp.read_barcodes(memoryview(bytes(grey)).cast("B", (side, side)))]


# --- the end-to-end scenario: venues, checkpoints, a tracer, over mutual TLS -------------------


TRACER = "cdc-jinan"
PURPOSE = "case 2020-0311-17: confirmed, onset 2020-03-09"
VENUES = {  # key: (name, division, category)
    "mall": ("银座商城 泉城路店", "370102", "mall"),
    "pharmacy": ("漱玉平民大药房", "370103", "pharmacy"),
    "market": ("七里山农贸市场", "370103", "market"),
    "closed": ("已停业超市", "370104", "supermarket"),
}


def make_pki(directory: Path, now: datetime) -> dict[str, TlsFiles]:
    """A development CA with the server's and one certificate per client role."""
    ca = DevCA.create(directory, now)
    files = {"server": TlsFiles(*ca.issue("server", server=True, now=now), ca.cert_path)}
    for name, uri in [
        ("verifier", "trustgw://verifier/checkpoint-7"),
        ("operator", "trustgw://operator/ops"),
        ("partner", "trustgw://partner/110000"),
        ("tracer", f"trustgw://tracer/{TRACER}"),
    ]:
        files[name] = TlsFiles(*ca.issue(name, uri=uri, now=now), ca.cert_path)
    return files


def add_venues(data_dir: Path, out: Path) -> dict[str, dict[str, Any]]:
    """The venues added with ``trustgw place add``, each with the place code read back from its
    printed QR image (``trustgw place qr``); "closed" is disabled."""
    import contextlib
    import io

    venues = {}
    for key, (name, division, category) in VENUES.items():
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            assert (
                main(
                    [
                        "place",
                        "add",
                        "--data-dir",
                        str(data_dir),
                        "--name",
                        name,
                        "--division",
                        division,
                        "--category",
                        category,
                        "--json",
                    ]
                )
                == 0
            )
        venue = json.loads(buffer.getvalue())
        image = out / f"{key}.png"
        with contextlib.redirect_stdout(io.StringIO()):
            assert (
                main(["place", "qr", venue["id"], "--data-dir", str(data_dir), "--out", str(image)])
                == 0
            )
        (venue["scanned"],) = decode_png(image.read_bytes())
        venues[key] = venue
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["place", "disable", venues["closed"]["id"], "--data-dir", str(data_dir)]) == 0
    return venues


@dataclass
class Outcome:
    """What the scenario saw: the answers of the checkpoints and of the tracer."""

    venues: dict[str, dict[str, Any]]
    scans: dict[str, pb.RecogniseResponse] = field(default_factory=dict)
    traced: dict[str, Any] = field(default_factory=dict)
    refused: dict[str, tuple[grpc.StatusCode, str]] = field(default_factory=dict)
    holders: dict[str, str] = field(default_factory=dict)  # person -> pseudonym (attestations)
    audit: list[Any] = field(default_factory=list)
    metrics: dict[str, float | None] = field(default_factory=dict)


def attested_holder(response: pb.RecogniseResponse) -> str:
    """The holder pseudonym a recognised code's attestation states."""
    return str(json.loads(response.attestation.payload)["holder"])


async def refusal(call: Any) -> tuple[grpc.StatusCode, str]:
    from registry_grpc_support import error_reason

    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return error_reason(exc)
    raise AssertionError("the call succeeded")


async def scenario(
    data_dir: Path,
    pki: dict[str, TlsFiles],
    simulator: PartnerSimulator,
    region: str,
    people: dict[str, tuple[str, str]],
    now: datetime,
    venues: dict[str, dict[str, Any]],
) -> Outcome:
    """Checkpoints scan the holders' codes with the venues' place codes; a tracer asks who was
    where; other roles are refused. ``people``: a, b, c, d, e -> (ID number, name); e's code is
    red."""
    from support.aio import serving

    codes = CodeFactory(simulator.issuer(region), now, random.Random(11))
    code = {who: codes(holder=person) for who, person in people.items() if who != "e"}
    code["e"] = codes(Colour.RED, holder=people["e"])
    forged = codes(forged=True, holder=people["d"])
    place = {key: v["scanned"] for key, v in venues.items()}
    outcome = Outcome(venues)
    async with serving(data_dir, pki["server"]) as (gateway, port):
        channels = {
            name: aio_channel(f"localhost:{port}", pki[name]) for name in pki if name != "server"
        }
        try:
            checkpoint = pb_grpc.RecognitionServiceStub(channels["verifier"])

            async def scan(label: str, who_code: str, where: str | None) -> None:
                request = pb.RecogniseRequest(request_id=label, code=who_code, place=where or "")
                outcome.scans[label] = await checkpoint.Recognise(request, timeout=10)

            await scan("a@mall", code["a"], place["mall"])
            await scan("b@mall", code["b"], place["mall"])
            await scan("e@mall", code["e"], place["mall"])
            await scan("a@pharmacy", code["a"], place["pharmacy"])
            await scan("d@market", code["d"], place["market"])
            await scan("forged@market", forged, place["market"])
            await scan("b@closed", code["b"], place["closed"])
            tampered = (
                place["market"][:-12]
                + ("A" if place["market"][-12] != "A" else "B")
                + place["market"][-11:]
            )
            await scan("c@tampered", code["c"], tampered)
            await scan("c@nowhere", code["c"], None)
            # A busy checkpoint streams: c at the pharmacy, in order with a bad request.
            stream = checkpoint.RecogniseStream(timeout=10)
            await stream.write(
                pb.RecogniseRequest(
                    request_id="c@pharmacy", code=code["c"], place=place["pharmacy"]
                )
            )
            await stream.write(pb.RecogniseRequest(request_id="x" * 200, code="?"))
            await stream.done_writing()
            answers = [answer async for answer in stream]
            outcome.scans["c@pharmacy"], outcome.scans["bad-in-stream"] = answers
            # A venue added while serving is known after the refresh the change feed wakes.
            buffer_venue = await asyncio.to_thread(_add_one, data_dir)
            await gateway.refresh()
            await scan("d@late", code["d"], buffer_venue["place_code"])
            outcome.venues["late"] = buffer_venue
            await gateway.visits.flush()  # the batched visit log, written now (no sleep)

            for who in ("a", "b", "c", "d"):
                outcome.holders[who] = attested_holder(
                    outcome.scans[
                        f"{who}@" + {"a": "mall", "b": "mall", "c": "pharmacy", "d": "market"}[who]
                    ]
                )
            outcome.holders["e"] = gateway.pseudonymiser(region, people["e"][0])

            tracer = tpb_grpc.TracingServiceStub(channels["tracer"])
            start, end = (
                int((now - timedelta(hours=1)).timestamp()),
                int((now + timedelta(hours=1)).timestamp()),
            )

            def subject(who: str, regions: tuple[str, ...] = ()) -> tpb.TraceSubject:
                return tpb.TraceSubject(id_number=people[who][0], regions=list(regions))

            for who in ("a", "d"):
                outcome.traced[f"venues:{who}"] = await tracer.VenuesVisited(
                    tpb.VenuesVisitedRequest(
                        subject=subject(who), start=start, end=end, purpose=PURPOSE
                    ),
                    timeout=10,
                )
                outcome.traced[f"contacts:{who}"] = await tracer.Contacts(
                    tpb.ContactsRequest(
                        subject=subject(who),
                        start=start,
                        end=end,
                        margin_seconds=3600,
                        purpose=PURPOSE,
                    ),
                    timeout=10,
                )
            outcome.traced["venues:a:other-region"] = await tracer.VenuesVisited(
                tpb.VenuesVisitedRequest(
                    subject=subject("a", ("310000",)), start=start, end=end, purpose=PURPOSE
                ),
                timeout=10,
            )

            # Refusals: out of bounds, no purpose, other roles, the quota.
            long_end = start + 15 * 86400
            outcome.refused["window"] = await refusal(
                tracer.VenuesVisited(
                    tpb.VenuesVisitedRequest(
                        subject=subject("a"), start=start, end=long_end, purpose=PURPOSE
                    ),
                    timeout=10,
                )
            )
            outcome.refused["margin"] = await refusal(
                tracer.Contacts(
                    tpb.ContactsRequest(
                        subject=subject("a"),
                        start=start,
                        end=end,
                        margin_seconds=5 * 3600,
                        purpose=PURPOSE,
                    ),
                    timeout=10,
                )
            )
            outcome.refused["purpose"] = await refusal(
                tracer.VenuesVisited(
                    tpb.VenuesVisitedRequest(subject=subject("a"), start=start, end=end), timeout=10
                )
            )
            outcome.refused["purpose-with-id"] = await refusal(
                tracer.VenuesVisited(
                    tpb.VenuesVisitedRequest(
                        subject=subject("a"),
                        start=start,
                        end=end,
                        purpose=f"trace {people['a'][0]}",
                    ),
                    timeout=10,
                )
            )
            for role in ("verifier", "operator", "partner"):
                stub = tpb_grpc.TracingServiceStub(channels[role])
                outcome.refused[f"{role}:venues"] = await refusal(
                    stub.VenuesVisited(
                        tpb.VenuesVisitedRequest(
                            subject=subject("a"), start=start, end=end, purpose=PURPOSE
                        ),
                        timeout=10,
                    )
                )
                outcome.refused[f"{role}:contacts"] = await refusal(
                    stub.Contacts(
                        tpb.ContactsRequest(
                            subject=subject("a"),
                            start=start,
                            end=end,
                            margin_seconds=60,
                            purpose=PURPOSE,
                        ),
                        timeout=10,
                    )
                )
            as_checkpoint = pb_grpc.RecognitionServiceStub(channels["tracer"])
            outcome.refused["tracer:recognise"] = await refusal(
                as_checkpoint.Recognise(pb.RecogniseRequest(code=code["a"]), timeout=10)
            )
            from gateway.places.tracing import TraceLimits

            used = gateway.tracing.used(TRACER, now)
            gateway.tracing.limits = TraceLimits(daily_quota=used)
            outcome.refused["quota"] = await refusal(
                tracer.VenuesVisited(
                    tpb.VenuesVisitedRequest(
                        subject=subject("a"), start=start, end=end, purpose=PURPOSE
                    ),
                    timeout=10,
                )
            )

            _, entries = await gateway.store.read_audit(0, 1000)
            outcome.audit = [e for e in entries if e.action.startswith("trace.")]
            registry = gateway.metrics.registry
            for query in ("venues", "contacts"):
                for result in ("OK", "TRACE_WINDOW_TOO_LONG", "RATE_LIMITED"):
                    outcome.metrics[f"{query}:{result}"] = registry.get_sample_value(
                        "trustgw_trace_queries_total",
                        {"tracer": TRACER, "query": query, "outcome": result},
                    )
            outcome.metrics["scans:VISIT_RECORDED"] = registry.get_sample_value(
                "trustgw_place_scans_total", {"reason": "VISIT_RECORDED"}
            )
        finally:
            for channel in channels.values():
                await channel.close()
    return outcome


def _add_one(data_dir: Path) -> dict[str, Any]:
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert (
            main(
                [
                    "place",
                    "add",
                    "--data-dir",
                    str(data_dir),
                    "--name",
                    "新开便利店",
                    "--division",
                    "370105",
                    "--category",
                    "supermarket",
                    "--json",
                ]
            )
            == 0
        )
    return json.loads(buffer.getvalue())  # type: ignore[no-any-return]
