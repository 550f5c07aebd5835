"""The gateway's memory over a long run of decisions, recognition log on and off (issue 8 item 14).

    python bench/soak.py                      # 100,000 decisions per gateway, a few minutes
    python bench/soak.py --decisions 20000    # shorter
    python bench/soak.py --serve-cmd "python -m gateway.cli serve"   # another checkout

Starts ``trustgw serve`` twice on fresh development data directories (mutual TLS): once with
``--no-retention-recognition-log`` and once with the log on (the default), alternating which
goes first over ``--rounds``. Each gateway gets the same ``--decisions`` requests over bidi
streams: yellow and red codes of all 14 regions (verified, decided ``NOT_GREEN``, so every log
entry carries a holder pseudonym and a code id; no conversion is stored), ``--distinct`` codes
cycled. The server's resident memory (``VmRSS``) is read after warm-up and after every
``--every`` decisions. Reported per gateway: RSS at the start, at the end and its growth; and
the ratio log-on / log-off of the end RSS and of the growth, from the same run. A recognition
log that holds memory per entry shows as a growth ratio well above 1. The last line is one JSON
object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import statistics
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
from bench.loadgen import STREAM_METHOD, channel_options  # noqa: E402
from bench.oversize import rss_mb  # noqa: E402
from bench.run import Child, children, spawn  # noqa: E402
from bench.workload import GatewayCodes, Mix, Request  # noqa: E402
from gateway.api.v1 import recognition_pb2 as pb  # noqa: E402
from gateway.demo import make_pki, prepare  # noqa: E402
from gateway.pki import TlsFiles  # noqa: E402
from keys.timeutil import utcnow  # noqa: E402

STREAMS = 4
WINDOW = 64


def _identity(data: bytes) -> bytes:
    return data


async def soak(
    child: Child, tls: TlsFiles, requests: Sequence[Request], total: int, every: int
) -> dict[str, object]:
    """Send ``total`` requests (``requests`` cycled) over a few streams; RSS every ``every``."""
    pid = child.proc.pid
    port = child.address.rsplit(":", 1)[1]
    cert, key, ca = tls.read()
    credentials = grpc.ssl_channel_credentials(ca, key, cert)
    samples: list[tuple[int, float]] = []
    reasons: dict[str, int] = {}
    sent = answered = 0
    next_sample = every

    async with grpc.aio.secure_channel(
        f"localhost:{port}", credentials, channel_options()
    ) as channel:
        method = channel.stream_stream(
            STREAM_METHOD, request_serializer=_identity, response_deserializer=_identity
        )

        async def stream(share: int, record: bool) -> None:
            nonlocal sent, answered, next_sample
            call = method(timeout=3600)
            slots = asyncio.Semaphore(WINDOW)

            async def writer() -> None:
                nonlocal sent
                for _ in range(share):
                    await slots.acquire()
                    request = requests[sent % len(requests)]
                    sent += 1
                    await call.write(request.data)
                await call.done_writing()

            task = asyncio.create_task(writer())
            while True:
                data = await call.read()
                if data is grpc.aio.EOF:
                    break
                slots.release()
                if not record:
                    continue
                reply = pb.RecogniseResponse.FromString(data)
                reasons[reply.reason] = reasons.get(reply.reason, 0) + 1
                answered += 1
                if answered >= next_sample:
                    samples.append((answered, rss_mb(pid)))
                    next_sample += every
            await task

        warm = min(2000, total)  # connections, handlers, caches and the first log batches
        await asyncio.gather(*(stream(warm // STREAMS, False) for _ in range(STREAMS)))
        await asyncio.sleep(1.0)
        start = rss_mb(pid)
        sent = 0
        started = time.monotonic()
        await asyncio.gather(*(stream(total // STREAMS, True) for _ in range(STREAMS)))
        seconds = time.monotonic() - started
        await asyncio.sleep(1.0)  # the last log batch is written
        end = rss_mb(pid)
    return {
        "decisions": answered,
        "seconds": round(seconds, 1),
        "rss_start_mb": round(start, 1),
        "rss_end_mb": round(end, 1),
        "growth_mb": round(end - start, 1),
        "samples": [[n, round(mb, 1)] for n, mb in samples],
        "reasons": reasons,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--decisions", type=int, default=100_000, help="per gateway (%(default)s)")
    p.add_argument("--distinct", type=int, default=20_000, help="distinct codes (%(default)s)")
    p.add_argument("--every", type=int, default=10_000, help="RSS sample interval (decisions)")
    p.add_argument("--rounds", type=int, default=1, help="pairs of runs, order alternating")
    p.add_argument(
        "--serve-cmd",
        default=f"{sys.executable} -m gateway.cli serve",
        help="command that starts the gateway; --data-dir, --listen and TLS are appended",
    )
    a = p.parse_args(argv)
    runs: dict[str, list[dict[str, object]]] = {"log_off": [], "log_on": []}
    with tempfile.TemporaryDirectory(prefix="trustgw-soak-") as tmp:
        tmpdir = Path(tmp)
        now = utcnow()
        server_tls, client_tls = make_pki(tmpdir / "pki", now)
        simulator = PartnerSimulator.generate()
        codes = GatewayCodes(simulator, now, mix=Mix(non_green=1.0))
        requests = codes.take(a.distinct, fresh=False)
        n = 0
        for round_ in range(a.rounds):
            order = ["log_off", "log_on"] if round_ % 2 == 0 else ["log_on", "log_off"]
            for mode in order:
                n += 1
                data_dir = tmpdir / f"data{n}"
                data_dir.mkdir()
                asyncio.run(prepare(data_dir, simulator, now))
                argv_serve = [
                    *shlex.split(a.serve_cmd),
                    "--data-dir", str(data_dir),
                    "--listen", "127.0.0.1:0",
                    "--tls-cert", str(server_tls.cert),
                    "--tls-key", str(server_tls.key),
                    "--tls-ca", str(server_tls.ca),
                    "--retention-recognition-log" if mode == "log_on"
                    else "--no-retention-recognition-log",
                ]  # fmt: skip
                with children() as procs:
                    procs.append(spawn(f"{mode}{n}", argv_serve, None, tmpdir))
                    result = asyncio.run(soak(procs[0], client_tls, requests, a.decisions, a.every))
                print(
                    f"{mode:8} {result['decisions']:>7} decisions in {result['seconds']:>6} s:"
                    f" RSS {result['rss_start_mb']:6.1f} -> {result['rss_end_mb']:6.1f} MB"
                    f" (+{result['growth_mb']} MB)  samples {result['samples']}",
                    flush=True,
                )
                runs[mode].append(result)

    def median(mode: str, name: str) -> float:
        return statistics.median(float(str(r[name])) for r in runs[mode])

    end_ratio = median("log_on", "rss_end_mb") / median("log_off", "rss_end_mb")
    growth_on, growth_off = median("log_on", "growth_mb"), median("log_off", "growth_mb")
    print(
        f"log on / log off: end RSS ratio {end_ratio:.3f}; growth {growth_on:+.1f} MB vs"
        f" {growth_off:+.1f} MB over {a.decisions} decisions"
        f" ({1000 * (growth_on - growth_off) / a.decisions:+.3f} kB per decision)",
        flush=True,
    )
    summary = {
        "decisions": a.decisions,
        "distinct_codes": a.distinct,
        "rounds": a.rounds,
        "end_rss_ratio": round(end_ratio, 3),
        "growth_on_mb": growth_on,
        "growth_off_mb": growth_off,
        "kb_per_decision": round(1000 * (growth_on - growth_off) / a.decisions, 4),
        "runs": runs,
    }
    print(json.dumps(summary, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
