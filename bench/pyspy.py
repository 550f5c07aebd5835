"""Profile the gateway natively over exactly one measured run (bench/PROFILE.md).

    pip install py-spy
    python bench/pyspy.py --workload fresh --form unary            # py-spy --native, 10 s
    python bench/pyspy.py --workload fresh --form stream --out DIR
    python bench/pyspy.py --serve-cmd "env TRUSTGW_LOG_ACCESS=false python -m gateway.cli serve"
    python bench/pyspy.py --no-py-spy --threads --duration 5      # CPU per thread per reply

Starts ``trustgw serve`` (mutual TLS, a fresh development data directory, pinned to the first
core as ``bench/run.py`` does), primes it with the pool, generates the workload's codes, then
attaches ``py-spy record --native`` to the gateway for the measured window only (no priming, no
code generation in the samples). Prints the server CPU per reply of that run, the shares of
``bench/profile_components.py`` and the same shares in µs per reply; the raw stacks stay in
``--out`` (``GATEWAY_WORKLOAD_FORM.txt``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402

from adapters.simulator import PartnerSimulator  # noqa: E402
from bench.loadgen import Target  # noqa: E402
from bench.profile_components import components  # noqa: E402
from bench.run import choose_cores, parse_args, spawn, stop  # noqa: E402
from bench.workload import GatewayCodes, interleave  # noqa: E402
from gateway.demo import make_pki, prepare  # noqa: E402
from keys.timeutil import utcnow  # noqa: E402

SHARES = {"repeat": 0.0, "mixed": 0.2, "fresh": 1.0}


def thread_ticks(pid: int) -> dict[int, tuple[str, int]]:
    """utime + stime (clock ticks) and name of each live thread of ``pid`` (/proc/PID/task)."""
    out: dict[int, tuple[str, int]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(task.name)] = (comm, int(fields[11]) + int(fields[12]))
    return out


def thread_report(
    pid: int,
    before: dict[int, tuple[str, int]],
    after: dict[int, tuple[str, int]],
    per_call: float,
) -> list[str]:
    """Lines of CPU per thread name (threads of one name summed; the main thread, ``pid``, on
    its own line, and each other Python thread too: the store's and the executor's threads):
    share of the server's CPU in the window and that share of ``per_call`` (µs per reply).
    Threads that ended in the window are missing (their ticks are lost); threads born in it
    count from zero."""
    by_name: dict[str, list[int]] = {}
    for tid, (comm, ticks) in after.items():
        spent = ticks - before.get(tid, (comm, 0))[1]
        name = "main thread" if tid == pid else comm
        if comm == "python" and tid != pid:
            name = f"python thread {tid}"
        by_name.setdefault(name, []).append(spent)
    total = sum(sum(v) for v in by_name.values())
    lines = [f"  threads: {len(after)} live, {total} ticks in the window"]
    for comm, spent in sorted(by_name.items(), key=lambda kv: -sum(kv[1])):
        share = sum(spent) / max(total, 1)
        lines.append(
            f"  {share * 100:5.1f}%  {share * per_call:6.0f} µs  {comm} (x{len(spent)})"
        )
    return lines


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workload", choices=sorted(SHARES), default="fresh")
    p.add_argument("--form", choices=("unary", "stream"), default="unary")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds (default 10)")
    p.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    p.add_argument("--rps", type=float, default=2500.0, help="rate to size the fresh codes for")
    p.add_argument("--pool", type=int, default=2000)
    p.add_argument("--serve-cmd", default=f"{sys.executable} -m gateway.cli serve")
    p.add_argument("--name", default="gateway", help="name of the raw stacks file")
    p.add_argument("--out", type=Path, default=Path("."), help="directory for the raw stacks")
    p.add_argument("--no-py-spy", action="store_true", help="only measure the CPU per reply")
    p.add_argument(
        "--threads",
        action="store_true",
        help="print the server's CPU per thread (by name) per reply over the measured window",
    )
    return p.parse_args(argv)


async def _drive(a: argparse.Namespace, target: Target, codes: GatewayCodes, pid: int) -> None:
    opts = parse_args([])
    pool = codes.take(a.pool, fresh=False)
    kw = {"concurrency": opts.concurrency, "streams": opts.streams, "window": opts.window}
    await target.ready()
    await target.run("stream", pool, 120, limit=len(pool), **kw)  # type: ignore[arg-type]
    await target.run(a.form, pool, 2.0, **kw)  # type: ignore[arg-type]
    share = SHARES[a.workload]
    requests = pool
    if share > 0:
        every = max(1, round(1 / share))
        fresh = codes.take(int(a.rps * a.duration / every * 1.5) + 20, fresh=True)
        requests = interleave(pool, fresh, every)
    spy = None
    raw = a.out / f"{a.name}_{a.workload}_{a.form}.txt"
    if not a.no_py_spy:
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        record = ["record", "--pid", str(pid), "--native", "--rate", str(a.rate)]
        spy = subprocess.Popen(  # noqa: S603
            [exe, *record, "--format", "raw", "-o", str(raw), "--duration", str(int(a.duration))],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await asyncio.sleep(0.5)  # py-spy attaches
    ticks = thread_ticks(pid) if a.threads else {}
    result = await target.run(a.form, requests, a.duration, **kw)  # type: ignore[arg-type]
    ticks_after = thread_ticks(pid) if a.threads else {}
    if spy is not None:
        spy.wait(30)
    per_call = result.server_cpu / max(result.rps, 1e-9) * 1e6
    print(
        f"{a.name} {a.workload} {a.form}: {result.rps:.0f}/s, server cpu {result.server_cpu:.0%} "
        f"(client {result.client_cpu:.0%}), "
        f"{per_call:.0f} µs per reply, p50 {result.p50_ms:.1f} ms p99 {result.p99_ms:.1f} ms, "
        f"{result.failures} failures, fresh wrapped {result.fresh_wrapped}"
    )
    if a.threads:
        print("\n".join(thread_report(pid, ticks, ticks_after, per_call)))
    if spy is not None and raw.exists():
        busy, counts = components(str(raw))
        print(f"  {busy} non-idle samples in {raw}")
        for name, n in counts.most_common():
            share_of = n / max(busy, 1)
            print(f"  {share_of * 100:5.1f}%  {share_of * per_call:6.0f} µs  {name}")


def main(argv: Sequence[str] | None = None) -> int:
    a = _args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    server_core, client_core, _ = choose_cores(parse_args([]))
    with tempfile.TemporaryDirectory(prefix="trustgw-profile-") as tmp:
        tmpdir = Path(tmp)
        data_dir = tmpdir / "data"
        data_dir.mkdir()
        now = utcnow()
        simulator = PartnerSimulator.generate()
        asyncio.run(prepare(data_dir, simulator, now))
        codes = GatewayCodes(simulator, now)
        server_tls, client_tls = make_pki(tmpdir / "pki", now)
        tls = ["--tls-cert", str(server_tls.cert), "--tls-key", str(server_tls.key)]
        argv_gw = [*shlex.split(a.serve_cmd), "--data-dir", str(data_dir)]
        argv_gw += ["--listen", "127.0.0.1:0", *tls, "--tls-ca", str(server_tls.ca)]
        child = spawn("gateway", argv_gw, server_core, tmpdir)
        try:
            if client_core is not None:
                os.sched_setaffinity(0, {client_core})
            cert, key, ca = client_tls.read()
            creds = grpc.ssl_channel_credentials(ca, key, cert)

            async def go() -> None:
                target = Target("gateway", child.address, child.proc.pid, 1, creds)
                try:
                    await _drive(a, target, codes, child.proc.pid)
                finally:
                    await target.close()

            t = time.perf_counter()
            asyncio.run(go())
            print(f"  total {time.perf_counter() - t:.0f}s")
        finally:
            stop(child)
    return 0


if __name__ == "__main__":
    sys.exit(main())
