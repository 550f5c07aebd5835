"""How the gateway scales on this machine: 1 against 2 workers, and 1 against 2 replicas over
PostgreSQL (issue 10 point 6; the goal is >= 1.7x for 2).

    python bench/scale.py                 # about a minute and a half; last line is one JSON object
    python bench/scale.py --quick         # smoke run
    python bench/scale.py --database postgresql://postgres@127.0.0.1:5432/test   # the server used
                                          # for the replica runs (a new database, dropped after)

The load generator is **h2load** (nghttp2's HTTP/2 benchmark, in C): it replays pre-serialised
gRPC ``Recognise`` requests over h2c, so it needs a small share of one core where a Python client
would need most of one (then the figure would be the client's, not the server's). Without it the
benchmark says so and how to install it (Debian/Ubuntu: ``apt-get install nghttp2-client``).

Configurations (each a fresh set of server processes on one prepared data directory):

* ``workers_1`` / ``workers_2``: ``trustgw serve --workers N`` on one port (SQLite);
* ``replicas_pg_1`` / ``replicas_pg_2``: one or two ``trustgw serve`` processes on two ports,
  one PostgreSQL database (``--database``).

Every configuration gets the same load: one h2load process per code (8 green codes of 8
regions, already converted where convert-mode), ``--clients`` connections x ``--streams``
streams each, split evenly over the configuration's ports, closed loop. h2load only sees HTTP
status 200, not gRPC's status: each run is therefore checked on the servers' own metrics (every
decision in the run was RECOGNISED, no RPC ended in error, and the servers made at least as
many decisions as h2load counted). The ratios are the median over ``--rounds`` of rounds that
alternate the order; CPU is read from ``/proc`` for the servers (every process of the
configuration) and from the rusage of the h2load processes (the load generator's own CPU).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from a checkout that is not installed
    sys.path.insert(0, str(ROOT))

from adapters.simulator import PartnerSimulator  # noqa: E402
from bench.run import Child, spawn, stop  # noqa: E402
from bench.workload import GatewayCodes, Mix  # noqa: E402
from gateway.demo import prepare  # noqa: E402
from keys.timeutil import utcnow  # noqa: E402

GOAL = 1.7
RECOGNISE = "/gateway.api.v1.RecognitionService/Recognise"
INSTALL = "apt-get install nghttp2-client (Debian/Ubuntu), or nghttp2 from your distribution"
CLK_TCK = os.sysconf("SC_CLK_TCK")
_FINISHED = re.compile(r"finished in [\d.]+\w*, ([\d.]+) req/s")
_REQUESTS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout"
)


def say(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


# --- options ----------------------------------------------------------------------------------


@dataclass
class Options:
    duration: float
    warmup: float
    rounds: int
    clients: int
    streams: int
    codes: int
    database: str | None
    serve_cmd: list[str]
    only: set[str]


def parse_args(argv: Sequence[str] | None) -> Options:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=8.0, help="seconds measured per run")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per run")
    p.add_argument("--rounds", type=int, default=3, help="rounds; figures are medians")
    p.add_argument("--clients", type=int, default=2, help="connections per code (h2load -c)")
    p.add_argument("--streams", type=int, default=4, help="streams per connection (h2load -m)")
    p.add_argument("--codes", type=int, default=8, help="distinct codes, one h2load each")
    p.add_argument(
        "--database",
        default=os.environ.get(
            "TRUSTGW_BENCH_DATABASE", "postgresql://postgres@127.0.0.1:5432/test"
        ),
        help="a PostgreSQL server for the replica runs (a new database is created on it and "
        "dropped after); 'none' skips them (default: %(default)s)",
    )
    p.add_argument(
        "--serve-cmd",
        default=f"{sys.executable} -m gateway.cli serve",
        help="the command that runs the gateway (default: %(default)s)",
    )
    p.add_argument(
        "--only",
        default="workers,replicas",
        help="comma-separated: workers, replicas (default: both)",
    )
    p.add_argument("--quick", action="store_true", help="1 round, 3 s runs (a smoke run)")
    a = p.parse_args(argv)
    if a.quick:
        a.duration, a.warmup, a.rounds = 3.0, 1.0, 1
    only = {part.strip() for part in a.only.split(",") if part.strip()}
    if not only <= {"workers", "replicas"}:
        p.error("--only takes workers and/or replicas")
    import shlex

    return Options(
        a.duration,
        a.warmup,
        a.rounds,
        a.clients,
        a.streams,
        a.codes,
        None if a.database == "none" else a.database,
        shlex.split(a.serve_cmd),
        only,
    )


# --- the servers ------------------------------------------------------------------------------


def _process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a supervisor's workers)."""
    tree, frontier = [pid], [pid]
    while frontier:
        parent = frontier.pop()
        try:
            tasks = Path(f"/proc/{parent}/task").iterdir()
            children = [int(c) for task in tasks for c in (task / "children").read_text().split()]
        except OSError:
            continue
        tree += children
        frontier += children
    return tree


def _cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time of ``pids`` (all their threads), from /proc."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / CLK_TCK


@dataclass
class Config:
    """A set of server processes under test and the ports h2load spreads its load over."""

    name: str
    children: list[Child] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)  # one /metrics URL per endpoint

    @property
    def addresses(self) -> list[str]:
        return [c.address for c in self.children]

    def pids(self) -> list[int]:
        return [p for c in self.children for p in _process_tree(c.proc.pid)]


def _metrics_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_config(
    name: str, opts: Options, data_dir: Path, log_dir: Path, *, workers: int, replicas: int,
    database: str | None,
) -> Config:  # fmt: skip
    config = Config(name)
    for i in range(replicas):
        port = _metrics_port()
        argv = [*opts.serve_cmd, "--data-dir", str(data_dir), "--insecure"]
        argv += ["--listen", "127.0.0.1:0", "--metrics-listen", f"127.0.0.1:{port}"]
        argv += ["--log-level", "warning"]
        if workers > 1:
            argv += ["--workers", str(workers)]
        if database is not None:
            argv += ["--database", database]
        # Not pinned: the processes share both cores with each other and with h2load.
        config.children.append(spawn(f"{name}-{i}", argv, None, log_dir))
        config.metrics.append(f"http://127.0.0.1:{port}/metrics")
    return config


def stop_config(config: Config) -> None:
    for child in config.children:
        stop(child)


# --- metrics: the check that h2load's 200s were decisions ----------------------------------


@dataclass(frozen=True)
class Counts:
    recognised: float
    other_decisions: float
    rpc_errors: float

    def __sub__(self, other: Counts) -> Counts:
        return Counts(
            self.recognised - other.recognised,
            self.other_decisions - other.other_decisions,
            self.rpc_errors - other.rpc_errors,
        )


def read_counts(config: Config) -> Counts:
    from prometheus_client.parser import text_string_to_metric_families

    recognised = other = errors = 0.0
    for url in config.metrics:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback
            text = response.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "trustgw_recognitions_total":
                    if sample.labels.get("reason") == "RECOGNISED":
                        recognised += sample.value
                    else:
                        other += sample.value
                elif sample.name == "grpc_server_handled_total":  # the go-grpc-prometheus name
                    if sample.labels.get("grpc_code", "OK") != "OK":
                        errors += sample.value
    return Counts(recognised, other, errors)


# --- the load ---------------------------------------------------------------------------------


def grpc_frame(message: bytes) -> bytes:
    """One gRPC length-prefixed message (uncompressed), as h2load sends it as the body."""
    return struct.pack(">BI", 0, len(message)) + message


def h2load_argv(opts: Options, body: Path, address: str, clients: int) -> list[str]:
    return [
        "h2load",
        "-c", str(clients),
        "-m", str(opts.streams),
        "-t", "1",
        "--warm-up-time", f"{opts.warmup:g}s",
        "-D", f"{opts.duration:g}s",
        "-d", str(body),
        "-H", "content-type: application/grpc",
        "-H", "te: trailers",
        f"http://{address}{RECOGNISE}",
    ]  # fmt: skip


@dataclass(frozen=True)
class Run:
    config: str
    rps: float
    server_cpu: float  # cores (1.0 = one core busy for the whole window)
    loadgen_cpu: float  # cores
    errors: int
    check: str  # "ok" or what the metrics said


def measure(config: Config, opts: Options, bodies: Sequence[Path]) -> Run:
    """One closed-loop run of every h2load process at once against ``config``."""
    addresses = config.addresses
    per_port = max(1, opts.clients // len(addresses))
    argvs = [h2load_argv(opts, b, a, per_port) for b in bodies for a in addresses]
    before_counts = read_counts(config)
    pids = config.pids()
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    procs = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # noqa: S603
        for argv in argvs
    ]
    # The measured window starts after the warm-up: sample the servers' CPU across it.
    time.sleep(opts.warmup)
    cpu_start, wall_start = _cpu_seconds(pids), time.monotonic()
    time.sleep(opts.duration)
    cpu_end, wall_end = _cpu_seconds(pids), time.monotonic()
    outputs = [p.communicate(timeout=opts.duration + opts.warmup + 60)[0] for p in procs]
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    after_counts = read_counts(config)
    rps, errors, done = 0.0, 0, 0
    for argv, out in zip(argvs, outputs, strict=True):
        finished, requests = _FINISHED.search(out), _REQUESTS.search(out)
        if finished is None or requests is None:
            raise RuntimeError(f"h2load gave no figures ({' '.join(argv)}):\n{out[-1500:]}")
        rps += float(finished.group(1))
        done += int(requests.group(4))
        errors += sum(int(requests.group(i)) for i in (5, 6, 7))
    loadgen = (
        children_after.ru_utime + children_after.ru_stime
        - children_before.ru_utime - children_before.ru_stime
    )  # fmt: skip
    delta = after_counts - before_counts
    problems = []
    if delta.other_decisions:
        problems.append(f"{delta.other_decisions:.0f} decisions were not RECOGNISED")
    if delta.rpc_errors:
        problems.append(f"{delta.rpc_errors:.0f} RPCs ended in error")
    if delta.recognised < done:
        problems.append(f"the servers made {delta.recognised:.0f} decisions, h2load counted {done}")
    return Run(
        config.name,
        rps,
        (cpu_end - cpu_start) / (wall_end - wall_start),
        loadgen / (opts.duration + opts.warmup),
        errors,
        "; ".join(problems) or "ok",
    )


# --- PostgreSQL -------------------------------------------------------------------------------


def _psql() -> str | None:
    found = shutil.which("psql")
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin/psql"), reverse=True):
        return str(candidate)
    return None


@contextmanager
def scratch_database(server_url: str) -> Iterator[str]:
    """A new database on the server of ``server_url``, dropped afterwards: its URL."""
    psql = _psql()
    if psql is None:
        raise RuntimeError("no psql to create the benchmark's database")
    name = f"trustgw_bench_{uuid.uuid4().hex[:10]}"
    parts = urllib.parse.urlsplit(server_url)

    def admin(sql: str) -> None:
        subprocess.run(  # noqa: S603
            [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", server_url, "-c", sql],
            check=True,
            capture_output=True,
            timeout=60,
        )

    admin(f'CREATE DATABASE "{name}"')
    try:
        yield urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postgres_unsupported(opts: Options) -> str | None:
    """Why the replica runs cannot happen here, or None."""
    if opts.database is None:
        return "--database none"
    psql = _psql()
    if psql is None:
        return "no psql client to create the benchmark's database"
    reached = subprocess.run(  # noqa: S603
        [psql, "-X", "-q", "-d", opts.database, "-c", "SELECT 1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if reached.returncode != 0:
        why = " ".join(reached.stderr.split())[:200]
        return f"cannot reach the PostgreSQL server of --database: {why}"
    return None


def workers_unsupported(opts: Options) -> str | None:
    out = subprocess.run(  # noqa: S603
        [*opts.serve_cmd, "--help"], capture_output=True, text=True, timeout=60, cwd=ROOT
    ).stdout
    return None if "--workers" in out else "this gateway's serve has no --workers"


# --- main -------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    started = time.perf_counter()
    if shutil.which("h2load") is None:
        print(f"trustgw: LOADGEN_MISSING: bench/scale.py needs h2load: {INSTALL}", file=sys.stderr)
        return 2
    skipped: dict[str, str] = {}
    plans: list[tuple[str, int, int, bool]] = []  # name, workers, replicas, on PostgreSQL
    if "workers" in opts.only:
        why = workers_unsupported(opts)
        if why:
            skipped["workers"] = why
        else:
            plans += [("workers_1", 1, 1, False), ("workers_2", 2, 1, False)]
    if "replicas" in opts.only:
        why = postgres_unsupported(opts)
        if why:
            skipped["replicas"] = why
        else:
            plans += [("replicas_pg_1", 1, 1, True), ("replicas_pg_2", 1, 2, True)]
    for what, why in skipped.items():
        say(f"skipped the {what} runs: {why}")
    if not plans:
        print(json.dumps({"skipped": skipped}, sort_keys=True))
        return 1
    say(
        f"trustgw scale bench: {opts.rounds} rounds x {opts.duration:g}s (+{opts.warmup:g}s "
        f"warm-up) per configuration; h2load: {opts.codes} codes x {opts.clients} connections "
        f"x {opts.streams} streams; {os.cpu_count()} cpus, nothing pinned"
    )
    runs: dict[str, list[Run]] = {name: [] for name, *_ in plans}
    with (
        tempfile.TemporaryDirectory(prefix="trustgw-scale-") as tmp,
        _maybe_database(opts, any(pg for *_, pg in plans)) as pg_url,
    ):
        tmpdir = Path(tmp)
        now = utcnow()
        simulator = PartnerSimulator.generate()
        codes = GatewayCodes(simulator, now, mix=Mix(non_green=0.0)).take(opts.codes, fresh=False)
        bodies = []
        for i, request in enumerate(codes):
            body = tmpdir / f"code-{i}.grpc"
            body.write_bytes(grpc_frame(request.data))
            bodies.append(body)
        data_dirs: dict[bool, Path] = {}
        for on_pg in sorted({pg for *_, pg in plans}):
            data_dir = tmpdir / ("pg" if on_pg else "sqlite")
            data_dir.mkdir()
            if on_pg:
                asyncio.run(prepare(data_dir, simulator, now, database=pg_url))
            else:
                asyncio.run(prepare(data_dir, simulator, now))
            data_dirs[on_pg] = data_dir
        for round_no in range(opts.rounds):
            order = plans if round_no % 2 == 0 else list(reversed(plans))
            for name, workers, replicas, on_pg in order:
                config = start_config(
                    name, opts, data_dirs[on_pg], tmpdir,
                    workers=workers, replicas=replicas, database=pg_url if on_pg else None,
                )  # fmt: skip
                try:
                    _prime(config, opts, bodies)
                    run = measure(config, opts, bodies)
                finally:
                    stop_config(config)
                runs[name].append(run)
                say(
                    f"  round {round_no + 1} {name:14} {run.rps:8.0f} req/s  server cpu "
                    f"{run.server_cpu:4.2f} cores  h2load cpu {run.loadgen_cpu:4.2f} cores  "
                    f"errors {run.errors}  check {run.check}"
                )
    summary = report(runs, skipped, opts, time.perf_counter() - started)
    print(json.dumps(summary, sort_keys=True), flush=True)
    return 0


@contextmanager
def _maybe_database(opts: Options, needed: bool) -> Iterator[str | None]:
    if not needed or opts.database is None:
        yield None
        return
    with scratch_database(opts.database) as url:
        yield url


def _prime(config: Config, opts: Options, bodies: Sequence[Path]) -> None:
    """Send every code once through every port and check it is RECOGNISED (convert-mode codes
    are converted then, so the measured runs repeat them)."""
    argvs = [
        ["h2load", "-n", "1", "-c", "1", "-d", str(b), "-H", "content-type: application/grpc",
         "-H", "te: trailers", f"http://{a}{RECOGNISE}"]
        for b in bodies for a in config.addresses
    ]  # fmt: skip
    before = read_counts(config)
    for argv in argvs:
        subprocess.run(argv, check=True, capture_output=True, timeout=60)  # noqa: S603
    delta = read_counts(config) - before
    if delta.recognised != len(argvs) or delta.other_decisions or delta.rpc_errors:
        raise RuntimeError(f"{config.name}: priming did not recognise every code: {delta}")


def report(
    runs: dict[str, list[Run]], skipped: dict[str, str], opts: Options, total: float
) -> dict[str, object]:
    out: dict[str, object] = {"skipped": skipped, "rounds": opts.rounds}
    out.update(duration_s=opts.duration, warmup_s=opts.warmup, cpu_count=os.cpu_count())
    out["loadavg_end"] = round(os.getloadavg()[0], 2)
    print(f"{'configuration':16}{'req/s':>9}{'server cpu':>12}{'h2load cpu':>12}  per round")
    for name, items in runs.items():
        rps = statistics.median(r.rps for r in items)
        out[f"{name}_rps"] = round(rps, 1)
        out[f"{name}_server_cpu"] = round(statistics.median(r.server_cpu for r in items), 3)
        out[f"{name}_loadgen_cpu"] = round(statistics.median(r.loadgen_cpu for r in items), 3)
        out[f"{name}_errors"] = sum(r.errors for r in items)
        out[f"{name}_checks"] = sorted({r.check for r in items})
        print(
            f"{name:16}{rps:9.0f}{out[f'{name}_server_cpu']:12.2f}"
            f"{out[f'{name}_loadgen_cpu']:12.2f}  " + " ".join(f"{r.rps:.0f}" for r in items)
        )
    for ratio, (two, one) in {
        "workers_2_over_1": ("workers_2", "workers_1"),
        "replicas_pg_2_over_1": ("replicas_pg_2", "replicas_pg_1"),
    }.items():
        if two in runs and one in runs:
            per_round = [b.rps / a.rps for a, b in zip(runs[one], runs[two], strict=True)]
            value = statistics.median(per_round)
            out[ratio] = round(value, 3)
            out[f"{ratio}_per_round"] = [round(v, 3) for v in per_round]
            verdict = "meets" if value >= GOAL else "BELOW"
            print(f"{ratio}: {value:.2f} ({verdict} the {GOAL} goal; per round "
                  + " ".join(f"{v:.2f}" for v in per_round) + ")")  # fmt: skip
            # Requests per core-second of server CPU, 2 against 1: 1.0 is linear scaling of
            # the work itself, whatever share of the machine the servers were given.
            efficiency = statistics.median(
                (b.rps / b.server_cpu) / (a.rps / a.server_cpu)
                for a, b in zip(runs[one], runs[two], strict=True)
                if a.server_cpu > 0 and b.server_cpu > 0
            )
            out[f"{ratio}_per_core"] = round(efficiency, 3)
            got = statistics.median(r.server_cpu for r in runs[two])
            out[f"{two}_contended"] = got < 1.7
            print(f"  per core of server CPU: {efficiency:.2f} of linear")
            if got < 1.7:
                print(
                    f"  WARNING: the 2-process servers got {got:.2f} cores of "
                    f"{os.cpu_count()}: other processes took the rest (load average "
                    f"{os.getloadavg()[0]:.1f}); the ratio is the machine's, not the gateway's"
                )
    every = [r for items in runs.values() for r in items]
    out["errors"] = sum(r.errors for r in every)
    out["all_checks_ok"] = all(r.check == "ok" for r in every)
    out["total_s"] = round(total, 1)
    return out


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
