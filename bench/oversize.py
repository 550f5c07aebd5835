"""The gateway's memory under a burst of near-limit requests (issue 8 item 13).

    python bench/oversize.py                      # the default sizes, about a minute
    python bench/oversize.py --size 4190000       # one size (bytes of the code field)
    python bench/oversize.py --serve-cmd "python -m gateway.cli serve"   # another checkout

Starts ``trustgw serve`` (mutual TLS, a fresh development data directory), then for each size
sends ``--concurrency`` (200) ``Recognise`` calls at once from one verifier certificate, each
carrying a code of that many bytes, and reads the server's resident memory (``VmRSS`` of
``/proc/PID/status``) before the burst, every 20 ms during it (the peak), and after it once the
process has settled (``--settle`` seconds after the last reply). Every reply's status is
counted. Between sizes the server is restarted, so that one size's leftovers do not hide the
next one's. The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from a checkout that is not installed
    sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402

from adapters.simulator import PartnerSimulator  # noqa: E402
from bench.run import Child, children, spawn  # noqa: E402
from gateway.api.v1 import recognition_pb2 as pb  # noqa: E402
from gateway.demo import make_pki, prepare  # noqa: E402
from gateway.pki import TlsFiles  # noqa: E402
from keys.timeutil import utcnow  # noqa: E402

MIB = 1024 * 1024
# Just below the recognition limit (32 KiB), just below the server-wide limit (2 MiB + a few
# bytes), and just below the 4 MiB that the server accepted everywhere before.
DEFAULT_SIZES = (32 * 1024 - 64, 2 * MIB - 64, 4 * MIB - 64)
METHOD = "/gateway.api.v1.RecognitionService/Recognise"


def rss_mb(pid: int) -> float:
    """The process's resident set size in MB (10**6 bytes), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError(f"no VmRSS for {pid}")


async def burst(child: Child, tls: TlsFiles, size: int, concurrency: int, settle: float) -> dict:
    """``concurrency`` Recognise calls with a ``size``-byte code at once; RSS before/peak/after."""
    pid = child.proc.pid
    request = pb.RecogniseRequest(request_id="big", code="A" * size).SerializeToString()
    port = child.address.rsplit(":", 1)[1]
    cert, key, ca = tls.read()
    credentials = grpc.ssl_channel_credentials(ca, key, cert)
    options = [("grpc.max_send_message_length", 8 * MIB)]
    async with grpc.aio.secure_channel(f"localhost:{port}", credentials, options) as channel:
        call = channel.unary_unary(METHOD)  # raw bytes: serialised once, sent as they are
        small = pb.RecogniseRequest(request_id="warm", code="x").SerializeToString()
        for _ in range(20):  # warm: the connection and the handler are set up
            await call(small, timeout=10)
        await asyncio.sleep(settle)
        before = rss_mb(pid)
        peak = before
        statuses: collections.Counter[str] = collections.Counter()

        async def one() -> None:
            try:
                await call(request, timeout=120)
                statuses["OK"] += 1
            except grpc.aio.AioRpcError as exc:
                statuses[exc.code().name] += 1

        started = time.monotonic()
        calls = asyncio.gather(*(one() for _ in range(concurrency)))
        while not calls.done():
            peak = max(peak, rss_mb(pid))
            await asyncio.wait([calls], timeout=0.02)
        await calls
        seconds = time.monotonic() - started
        peak = max(peak, rss_mb(pid))
        await asyncio.sleep(settle)
        for _ in range(20):  # the server is still answering, and small calls are cheap again
            await call(small, timeout=10)
        after = rss_mb(pid)
    return {
        "size": size,
        "concurrency": concurrency,
        "rss_before_mb": round(before, 1),
        "rss_peak_mb": round(peak, 1),
        "rss_after_mb": round(after, 1),
        "seconds": round(seconds, 2),
        "statuses": dict(statuses),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, action="append", help="code bytes (repeatable)")
    p.add_argument("--concurrency", type=int, default=200, help="calls at once (%(default)s)")
    p.add_argument("--settle", type=float, default=2.0, help="seconds before 'after' (2)")
    p.add_argument(
        "--serve-cmd",
        default=f"{sys.executable} -m gateway.cli serve",
        help="command that starts the gateway; --data-dir, --listen and TLS are appended",
    )
    a = p.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="trustgw-oversize-") as tmp:
        tmpdir = Path(tmp)
        now = utcnow()
        server_tls, client_tls = make_pki(tmpdir / "pki", now)
        simulator = PartnerSimulator.generate()
        for n, size in enumerate(a.size or DEFAULT_SIZES):
            data_dir = tmpdir / f"data{n}"
            data_dir.mkdir()
            asyncio.run(prepare(data_dir, simulator, now))
            argv_serve = [
                *shlex.split(a.serve_cmd),
                "--data-dir",
                str(data_dir),
                "--listen",
                "127.0.0.1:0",
                "--tls-cert",
                str(server_tls.cert),
                "--tls-key",
                str(server_tls.key),
                "--tls-ca",
                str(server_tls.ca),
            ]
            with children() as procs:
                procs.append(spawn(f"gateway{n}", argv_serve, None, tmpdir))
                result = asyncio.run(burst(procs[0], client_tls, size, a.concurrency, a.settle))
            print(
                f"size {size:>9} B x {a.concurrency}: RSS before {result['rss_before_mb']:6.1f} MB"
                f"  peak {result['rss_peak_mb']:6.1f} MB  after {result['rss_after_mb']:6.1f} MB"
                f"  ({result['seconds']} s) statuses {result['statuses']}",
                flush=True,
            )
            results.append(result)
    print(json.dumps({"runs": results}, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
