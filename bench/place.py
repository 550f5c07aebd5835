"""What a place code costs a recognition, in process and in CPU time (no gRPC, no sockets).

    python bench/place.py                        # this checkout: without and with a place code
    PYTHONPATH=/path/to/other python bench/place.py --no-place   # another checkout's figure

A development gateway (the 14 simulated partners) decides a pool of repeated codes through the
recognition servicer's own request path (``RecognitionService._start``: decision, metrics,
recognition log entry, answer, and with a place code its check and the visit queued), in blocks
that alternate without and with a place code. For each block it reads the calling thread's CPU
time (the request path) and then the process's CPU time of writing what the block queued (the
recognition log and the visit log, flushed on the store's thread: the batched write). CPU time
rather than wall time: it survives a machine shared with other work. The last line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if "PYTHONPATH" not in os.environ:  # run as a script from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adapters.simulator import PartnerSimulator
from bench.workload import GatewayCodes
from gateway.api.v1 import recognition_pb2 as pb
from gateway.demo import prepare
from gateway.grpc.recognition import RecognitionService
from gateway.runtime.config import GatewayConfig
from gateway.runtime.gateway import Gateway
from keys.timeutil import utcnow

HAS_PLACE = "place" in pb.RecogniseRequest.DESCRIPTOR.fields_by_name


def _venue(data_dir: Path) -> str:
    from gateway.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["place", "add", "--data-dir", str(data_dir), "--name", "bench venue",
                     "--division", "370102", "--category", "mall", "--json"]) == 0  # fmt: skip
    return str(json.loads(out.getvalue())["place_code"])


async def _block(
    service: RecognitionService, gateway: Gateway, requests: list[Any]
) -> tuple[float, float]:
    """(request-path thread CPU, batched-write process CPU) of one block, in seconds."""
    start = time.thread_time()
    for request in requests:
        result: Any = service._start(request)
        if isinstance(result, tuple):  # waiting for a new conversion's commit
            request_id, pending, *place = result
            decision = pending.result() if pending.done else await pending
            service._respond(request_id, decision, *place)
        elif not isinstance(result, pb.RecogniseResponse):
            await result
    path = time.thread_time() - start
    start = time.process_time()
    if gateway.reclog is not None:
        await gateway.reclog.flush()
    visits = getattr(gateway, "visits", None)
    if visits is not None:
        await visits.flush()
    return path, time.process_time() - start


async def measure(opts: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="trustgw-place-") as tmp:
        data_dir = Path(tmp)
        now = utcnow()
        simulator = PartnerSimulator.generate()
        await prepare(data_dir, simulator, now)
        want = HAS_PLACE and not opts.no_place
        place = await asyncio.to_thread(_venue, data_dir) if want else ""  # its own loop
        codes = GatewayCodes(simulator, now).take(opts.pool, fresh=False)
        plain = [pb.RecogniseRequest.FromString(r.data) for r in codes]
        placed = []
        for request in plain:
            copy = pb.RecogniseRequest()
            copy.CopyFrom(request)
            if place:
                copy.place = place
            placed.append(copy)
        gateway = await Gateway.open(GatewayConfig(data_dir=data_dir, refresh_interval=3600))
        try:
            service = RecognitionService(gateway)
            await _block(service, gateway, plain)  # converts and caches the pool
            await _block(service, gateway, placed)
            kinds = {"none": plain} | ({"place": placed} if place else {})
            figures: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
            for _ in range(opts.rounds):
                for kind, requests in kinds.items():
                    figures[kind].append(await _block(service, gateway, requests))
        finally:
            await gateway.close()
        recorded = _visit_count(data_dir) if place else 0
    out: dict[str, Any] = {"pool": opts.pool, "rounds": opts.rounds, "has_place": bool(place)}
    for kind, blocks in figures.items():
        path_us = statistics.median(p for p, _ in blocks) / opts.pool * 1e6
        write_us = statistics.median(w for _, w in blocks) / opts.pool * 1e6
        out[f"{kind}_path_us"] = round(path_us, 2)
        out[f"{kind}_write_us"] = round(write_us, 2)
        out[f"{kind}_total_us"] = round(path_us + write_us, 2)
    if place:
        out["place_path_ratio"] = round(out["place_path_us"] / out["none_path_us"], 3)
        out["place_total_ratio"] = round(out["place_total_us"] / out["none_total_us"], 3)
        out["visits_recorded"] = recorded
    return out


def _visit_count(data_dir: Path) -> int:
    import sqlite3

    with contextlib.closing(sqlite3.connect(data_dir / "trustgw.db")) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM visits").fetchone()[0])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pool", type=int, default=2000, help="codes per block (default %(default)s)")
    p.add_argument("--rounds", type=int, default=7, help="blocks per kind (default %(default)s)")
    p.add_argument("--no-place", action="store_true", help="only the blocks without a place code")
    opts = p.parse_args(argv)
    result = asyncio.run(measure(opts))
    for kind in ("none", "place"):
        if f"{kind}_path_us" in result:
            print(
                f"{kind:6} request path {result[f'{kind}_path_us']:7.1f} µs/call, batched write "
                f"{result[f'{kind}_write_us']:6.1f} µs/call"
            )
    if "place_path_ratio" in result:
        print(
            f"with/without a place code: request path {result['place_path_ratio']:.3f}, "
            f"with the batched writes {result['place_total_ratio']:.3f}; "
            f"{result['visits_recorded']} visits recorded"
        )
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
