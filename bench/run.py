"""Benchmark the gateway against an ideal server, unary and streaming, on this machine.

    python bench/run.py              # defaults: mutual TLS, about four minutes
    python bench/run.py --plaintext  # the same without TLS, for comparison
    python bench/run.py --quick      # a smoke run of about a minute

Starts ``trustgw serve`` (on a fresh development data directory with the 14 simulated partners)
and ``bench/ideal_server.py`` as separate processes pinned to one core, drives them from this
process pinned to another core, alternating gateway and ideal runs, and prints the figures; the
last line of output is one JSON object. See bench/README.md for how to read it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import math
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from a checkout that is not installed
    sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
from nacl.signing import SigningKey  # noqa: E402

from adapters.simulator import PartnerSimulator  # noqa: E402
from bench import ideal_server, registry  # noqa: E402
from bench.loadgen import RunResult, Target  # noqa: E402
from bench.workload import GatewayCodes, Request, interleave, requests_from  # noqa: E402
from gateway.demo import make_pki, prepare  # noqa: E402
from gateway.pki import DevCA, TlsFiles  # noqa: E402
from keys.model import Mode  # noqa: E402
from keys.statements import MAX_BATCH_ENTRIES  # noqa: E402
from keys.timeutil import utcnow  # noqa: E402

GOAL = 0.85  # the project's target: gateway throughput at least this share of the ideal's
FORMS = ("unary", "stream")
# The workloads, by the share of gateway requests carrying a code it has never seen; "mixed"
# takes its share from --fresh (today's default, 0.2) and keeps the JSON's unprefixed keys.
WORKLOADS = ("repeat", "mixed", "fresh")
READY = re.compile(r"serving on (\S+):(\d+)")


# --- child processes ---------------------------------------------------------------------------


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    address: str
    log: Path


def _pin_and_tie(core: int | None) -> None:
    """In the child before exec: pin to ``core`` and die with the parent (PR_SET_PDEATHSIG)."""
    if core is not None:
        os.sched_setaffinity(0, {core})
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def spawn(
    name: str, argv: Sequence[str], core: int | None, log_dir: Path, timeout: float = 60
) -> Child:
    """Start a server process and wait for its ``serving on HOST:PORT`` line."""
    log = log_dir / f"{name}.log"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT), env.get("PYTHONPATH"))))
    with open(log, "wb") as out:
        proc = subprocess.Popen(  # noqa: S603
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
            preexec_fn=lambda: _pin_and_tie(core),
            start_new_session=True,  # Ctrl-C reaches only us; we stop the children
        )
    child = Child(name, proc, "", log)
    limit = time.monotonic() + timeout
    while time.monotonic() < limit:
        match = READY.search(log.read_text(errors="replace"))
        if match:
            child.address = f"{match.group(1)}:{match.group(2)}"
            return child
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    stop(child)
    tail = log.read_text(errors="replace")[-3000:]
    raise RuntimeError(f"{name} did not start (exit {proc.returncode}); its output:\n{tail}")


def stop(child: Child) -> None:
    """SIGTERM, a few seconds to drain, then SIGKILL. Never leaves the process behind."""
    if child.proc.poll() is None:
        child.proc.terminate()
        try:
            child.proc.wait(10)
        except subprocess.TimeoutExpired:
            child.proc.kill()
            child.proc.wait(5)


# --- the plan -----------------------------------------------------------------------------------


@dataclass
class Options:
    duration: float
    rounds: int
    warmup: float
    prime_warmup: float
    concurrency: int
    channels: int
    streams: int
    window: int
    fresh: float
    pool: int
    server_core: int | None
    client_core: int | None
    verbose: bool
    serve_cmd: str
    tls: bool
    workloads: tuple[str, ...]
    forms: tuple[str, ...]
    sync_ideal: bool
    registry: str = "default"
    revocation_batch: int = 0
    large_keys: int = 50
    large_codes: int = 1_000_000
    large_holders: int = 1_000_000


def parse_args(argv: Sequence[str] | None) -> Options:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, help="measured seconds per run (default 4; quick 2)")
    p.add_argument(
        "--rounds", type=int, help="rounds of gateway/ideal runs per form (default 3; quick 1)"
    )
    p.add_argument(
        "--warmup", type=float, help="warm-up seconds before each run (default 1; quick 0.5)"
    )
    p.add_argument(
        "--concurrency", type=int, default=48, help="unary calls in flight (default %(default)s)"
    )
    p.add_argument(
        "--channels", type=int, default=1, help="client channels per server (default %(default)s)"
    )
    p.add_argument("--streams", type=int, default=4, help="bidi streams (default %(default)s)")
    p.add_argument(
        "--window", type=int, default=32, help="messages in flight per stream (default %(default)s)"
    )
    p.add_argument(
        "--fresh",
        type=float,
        default=0.2,
        help="share of gateway requests carrying a code it has not seen before in the "
        "'mixed' workload (default %(default)s)",
    )
    p.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help="comma-separated workloads to measure: repeat (every code from the pool), mixed "
        "(--fresh new), fresh (every code new) (default %(default)s)",
    )
    p.add_argument(
        "--forms",
        default=",".join(FORMS),
        help="comma-separated forms to measure (default %(default)s; for profiling one form)",
    )
    p.add_argument(
        "--no-sync-ideal",
        action="store_true",
        help="skip the ideal on gRPC's thread-pool server (ideal_sync_unary_rps)",
    )
    p.add_argument(
        "--pool", type=int, help="distinct codes seen again and again (default 2000; quick 700)"
    )
    p.add_argument(
        "--server-core", type=int, help="core for the servers (default: the first allowed)"
    )
    p.add_argument(
        "--client-core", type=int, help="core for the load generator (default: the second)"
    )
    p.add_argument(
        "--serve-cmd",
        default=f"{sys.executable} -m gateway.cli serve",
        help="command that starts the gateway; --data-dir and --listen are appended "
        "(default: this Python's 'python -m gateway.cli serve')",
    )
    p.add_argument(
        "--plaintext",
        action="store_true",
        help="both servers without TLS, the gateway with --insecure (default: mutual TLS with a "
        "development CA, as a province runs it)",
    )
    p.add_argument(
        "--registry",
        choices=("default", "large"),
        default="default",
        help="large: also load a second gateway's registry with 14 regions x 50 keys and a "
        "million revoked codes and holders each (through the real paths), and measure it "
        "against the default one, fresh codes, same run (bench/README.md; several minutes more)",
    )
    p.add_argument(
        "--revocation-batch",
        type=int,
        help="with --registry large: entries of the revocation batch a partner publishes "
        "(PublishRevocations) during a measured run of the large gateway; 0: none "
        "(default 10000)",
    )
    p.add_argument(
        "--large-revocations",
        type=int,
        default=1_000_000,
        help="with --registry large: revoked codes, and as many revoked holders "
        "(default %(default)s)",
    )
    p.add_argument("--tls", action="store_true", help=argparse.SUPPRESS)  # the default now
    p.add_argument("--quick", action="store_true", help="short smoke run (about a minute)")
    p.add_argument("-v", "--verbose", action="store_true", help="print every run as it finishes")
    a = p.parse_args(argv)
    quick = a.quick
    opts = Options(
        duration=a.duration or (2.0 if quick else 4.0),
        rounds=a.rounds or (1 if quick else 3),
        warmup=a.warmup if a.warmup is not None else (0.5 if quick else 1.0),
        prime_warmup=1.0 if quick else 2.0,
        concurrency=a.concurrency,
        channels=a.channels,
        streams=a.streams,
        window=a.window,
        fresh=a.fresh,
        pool=a.pool or (700 if quick else 2000),
        server_core=a.server_core,
        client_core=a.client_core,
        verbose=a.verbose,
        serve_cmd=a.serve_cmd,
        tls=not a.plaintext,
        workloads=tuple(w.strip() for w in a.workloads.split(",") if w.strip()),
        forms=tuple(f.strip() for f in a.forms.split(",") if f.strip()),
        sync_ideal=not a.no_sync_ideal,
        registry=a.registry,
        revocation_batch=(
            a.revocation_batch
            if a.revocation_batch is not None
            else (10_000 if a.registry == "large" else 0)
        ),
        large_codes=a.large_revocations,
        large_holders=a.large_revocations,
    )
    if set(opts.forms) - set(FORMS) or not opts.forms:
        p.error(f"--forms: choose from {', '.join(FORMS)}")
    if a.plaintext and a.tls:
        p.error("--plaintext and --tls exclude each other")
    unknown = set(opts.workloads) - set(WORKLOADS)
    if unknown or not opts.workloads:
        p.error(f"--workloads: choose from {', '.join(WORKLOADS)}")
    if opts.duration <= 0 or opts.rounds < 1 or opts.concurrency < 1 or opts.streams < 1:
        p.error("--duration, --rounds, --concurrency and --streams must be positive")
    if not 0 <= opts.fresh <= 1:
        p.error("--fresh is a share between 0 and 1")
    if opts.revocation_batch and opts.registry != "large":
        p.error("--revocation-batch needs --registry large")
    if not 0 <= opts.revocation_batch <= MAX_BATCH_ENTRIES or opts.large_codes < 0:
        p.error(f"--revocation-batch is 0 to {MAX_BATCH_ENTRIES}; --large-revocations >= 0")
    return opts


def choose_cores(opts: Options) -> tuple[int | None, int | None, str]:
    allowed = sorted(os.sched_getaffinity(0))
    if opts.server_core is not None or opts.client_core is not None:
        server = opts.server_core if opts.server_core is not None else allowed[0]
        client = opts.client_core if opts.client_core is not None else allowed[-1]
        return server, client, f"servers on core {server}, load generator on core {client}"
    if len(allowed) < 2:
        return (
            None,
            None,
            "WARNING: only one core available: nothing pinned, figures are not comparable",
        )
    return (
        allowed[0],
        allowed[1],
        f"servers on core {allowed[0]}, load generator on core {allowed[1]}",
    )


# --- running --------------------------------------------------------------------------------------


def say(*parts: object) -> None:
    print(*parts, flush=True)


class Bench:
    def __init__(
        self, opts: Options, codes: GatewayCodes, gw_pool: list[Request], ideal_pool: list[Request]
    ) -> None:
        self.opts = opts
        self.codes = codes
        self.gw_pool = gw_pool
        self.ideal_pool = ideal_pool
        self.estimates: dict[tuple[str, str], float] = {}
        # (server, workload, form) -> one result per round
        self.results: dict[tuple[str, str, str], list[RunResult]] = {}
        self.generate_seconds = 0.0
        self.side_failures = 0  # failures while priming and warming up (not in any figure)

    def share(self, workload: str) -> float:
        """Share of the workload's gateway requests that carry a never-seen code."""
        return {"repeat": 0.0, "mixed": self.opts.fresh, "fresh": 1.0}[workload]

    async def run(
        self, target: Target, form: str, requests: Sequence[Request], duration: float, **kw: object
    ) -> RunResult:
        o = self.opts
        return await target.run(
            form,
            requests,
            duration,
            concurrency=o.concurrency,
            streams=o.streams,
            window=o.window,
            **kw,
        )  # type: ignore[arg-type]

    async def prime(self, gateway: Target, ideals: Sequence[Target]) -> None:
        """Send every pool code once (the gateway converts and caches them), then warm each
        server in each form; the gateway's warm-up rates size the fresh codes of its runs."""
        t = time.perf_counter()
        first = await self.run(gateway, "stream", self.gw_pool, 120, limit=len(self.gw_pool))
        say(
            f"  primed the gateway with {len(self.gw_pool)} pool codes in "
            f"{time.perf_counter() - t:.1f}s ({first.failures} failures)"
        )
        self.check_failures(first, "priming")
        for form in FORMS:
            for target, pool in (
                (gateway, self.gw_pool),
                *((ideal, self.ideal_pool) for ideal in ideals),
            ):
                if target.name == "ideal-sync" and form != "unary":
                    continue
                warm = await self.run(target, form, pool, self.opts.prime_warmup)
                self.check_failures(warm, "warm-up")
                if target is gateway:
                    for workload in WORKLOADS:
                        self.estimates[(workload, form)] = warm.rps

    def check_failures(self, result: RunResult, what: str) -> None:
        if what != "measured":
            self.side_failures += result.failures
        if result.failures:
            say(
                f"  ! {what} {result.target} {result.form}: {result.failures} failures "
                f"{result.errors} {'; '.join(result.examples)}"
            )

    def gateway_requests(
        self, workload: str, form: str, duration: float | None = None
    ) -> list[Request]:
        share = self.share(workload)
        if share <= 0:
            return self.gw_pool
        every = max(1, round(1 / share))
        estimate = self.estimates.get((workload, form), 3000.0)
        # 2.5x the last rate: on a shared machine the rate swings between rounds
        seconds = duration if duration is not None else self.opts.duration
        count = math.ceil(estimate * seconds / every * 2.5) + 20
        t = time.perf_counter()
        fresh = self.codes.take(count, fresh=True)
        self.generate_seconds += time.perf_counter() - t
        return interleave(self.gw_pool, fresh, every)

    async def one(
        self, target: Target, workload: str, form: str, requests: Sequence[Request], r: int
    ) -> RunResult:
        o = self.opts
        pool = self.gw_pool if target.name.startswith("gateway") else self.ideal_pool
        if o.warmup > 0:
            warm = await self.run(target, form, pool, o.warmup)
            self.check_failures(warm, f"round {r + 1} warm-up")
        result = await self.run(target, form, requests, o.duration)
        self.check_failures(result, "measured")
        self.results.setdefault((target.name, workload, form), []).append(result)
        if o.verbose:
            say(
                f"  round {r + 1} {workload:6} {form:6} {target.name:10} {result.rps:8.0f}/s "
                f"p50 {result.p50_ms:6.1f}ms p99 {result.p99_ms:6.1f}ms "
                f"server cpu {result.server_cpu:4.0%} client cpu {result.client_cpu:4.0%}"
                + (
                    f" new conversions {result.new_conversions}"
                    if target.name.startswith("gateway")
                    else ""
                )
            )
        return result

    async def measure(self, gateway: Target, ideal: Target, sync: Target | None) -> None:
        o = self.opts
        for r in range(o.rounds):
            for workload in o.workloads:
                for form in o.forms:
                    order = (gateway, ideal) if r % 2 == 0 else (ideal, gateway)  # ABBA
                    for target in order:
                        if target is gateway:
                            requests = self.gateway_requests(workload, form)
                        else:
                            requests = self.ideal_pool
                        result = await self.one(target, workload, form, requests, r)
                        if target is gateway:
                            self.estimates[(workload, form)] = max(
                                self.estimates.get((workload, form), 0.0), result.rps
                            )
                    say(
                        f"  round {r + 1}/{o.rounds} {workload} {form}: gateway "
                        f"{self.results[('gateway', workload, form)][-1].rps:.0f}/s, ideal "
                        f"{self.results[('ideal', workload, form)][-1].rps:.0f}/s"
                    )
            if sync is not None:  # the ideal's work is the same in every workload
                result = await self.one(sync, "all", "unary", self.ideal_pool, r)
                say(
                    f"  round {r + 1}/{o.rounds} ideal on the thread-pool server: "
                    f"{result.rps:.0f}/s"
                )


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _summary(runs: Sequence[RunResult]) -> dict[str, float]:
    return {
        "rps": median([r.rps for r in runs]),
        "p50_ms": median([r.p50_ms for r in runs]),
        "p99_ms": median([r.p99_ms for r in runs]),
        "server_cpu": median([r.server_cpu for r in runs]),
        "client_cpu": median([r.client_cpu for r in runs]),
        # Server CPU per reply: what a call costs the server, robust to a machine shared with
        # other load (a server that gets half a core serves half the calls at the same cost).
        "cpu_us_per_call": median([r.server_cpu / r.rps * 1e6 for r in runs if r.rps > 0]),
    }


SM2_REGION = "230000"  # Heilongjiang signs its codes with SM2 (docs/crypto.md)


def _region_costs(
    out: dict[str, object], workload: str, form: str, runs: Sequence[RunResult]
) -> None:
    """Per-region p50/p99 of the gateway's replies (medians over the rounds), and the SM2
    region's p50 against the median region's: what an SM2 partner's code costs in this load."""
    regions = sorted({r for run in runs for r in run.region_p50_ms})
    if SM2_REGION not in regions or len(regions) < 2:
        return
    p50 = {r: median([x.region_p50_ms[r] for x in runs if r in x.region_p50_ms]) for r in regions}
    p99 = {r: median([x.region_p99_ms[r] for x in runs if r in x.region_p99_ms]) for r in regions}
    others = median([v for r, v in p50.items() if r != SM2_REGION])
    ratio = p50[SM2_REGION] / others if others else float("nan")
    say(
        f"{workload:6} {form:6} per region p50 ms: SM2 region {SM2_REGION} "
        f"{p50[SM2_REGION]:.2f} vs the median other region {others:.2f} ({ratio:.2f}x); "
        + " ".join(f"{r}:{p50[r]:.2f}" for r in regions)
    )
    out[f"{workload}_{form}_region_p50_ms"] = {r: round(v, 3) for r, v in p50.items()}
    out[f"{workload}_{form}_region_p99_ms"] = {r: round(v, 3) for r, v in p99.items()}
    out[f"{workload}_{form}_sm2_region_p50_ratio"] = round(ratio, 3)


def report(
    bench: Bench, opts: Options, cores: str, started: float, code_lengths: tuple[float, float]
) -> dict[str, object]:
    out: dict[str, object] = {}
    say("")
    say(
        f"{'workload':9}{'form':7}{'server':11}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'srv cpu':>9}{'cli cpu':>9}{'µs/call':>9}{'errors':>8}   per round req/s"
    )
    errors = 0
    rows = [(w, f, n) for w in opts.workloads for f in opts.forms for n in ("gateway", "ideal")]
    if ("ideal-sync", "all", "unary") in bench.results:
        rows.append(("all", "unary", "ideal-sync"))
    for workload, form, name in rows:
        runs = bench.results[(name, workload, form)]
        sm = _summary(runs)
        failed = sum(r.failures for r in runs)
        errors += failed
        say(
            f"{workload:9}{form:7}{name:11}{sm['rps']:9.0f}{sm['p50_ms']:9.2f}{sm['p99_ms']:9.2f}"
            f"{sm['server_cpu']:9.0%}{sm['client_cpu']:9.0%}{sm['cpu_us_per_call']:9.0f}"
            f"{failed:8d}   " + " ".join(f"{r.rps:.0f}" for r in runs)
        )
        if name == "ideal-sync":
            prefixes = ["ideal_sync_unary_"]
        else:
            server = "" if name == "gateway" else "ideal_"
            prefixes = [f"{workload}_{server}{form}_"]
            if workload == "mixed":  # today's keys, kept for scripts
                prefixes.append(f"{server}{form}_")
        for prefix in prefixes:
            for key, value in sm.items():
                out[prefix + key] = round(value, 1 if key in ("rps", "cpu_us_per_call") else 3)
    say("")
    client_bound: list[str] = []
    goals_met = True
    for workload in opts.workloads:
        for form in opts.forms:
            gw = bench.results[("gateway", workload, form)]
            ideal = bench.results[("ideal", workload, form)]
            g, i = _summary(gw), _summary(ideal)
            ratio = g["rps"] / i["rps"]
            per_round = [a.rps / b.rps for a, b in zip(gw, ideal, strict=True)]
            p99_ratio = g["p99_ms"] / i["p99_ms"]
            cpu_ratio = i["cpu_us_per_call"] / g["cpu_us_per_call"]
            ok = ratio >= GOAL and p99_ratio <= 1.5
            goals_met = goals_met and ok
            say(
                f"{workload:6} {form:6} gateway/ideal {ratio:.2f} (per round "
                + " ".join(f"{x:.2f}" for x in per_round)
                + f"); p99 {g['p99_ms']:.1f} ms vs {i['p99_ms']:.1f} ms ({p99_ratio:.2f}x): "
                + ("meets" if ok else "BELOW")
                + f" the goals (>= {GOAL}, p99 <= 1.5x); server CPU per call: ideal/gateway "
                f"{cpu_ratio:.2f} ({i['cpu_us_per_call']:.0f} / {g['cpu_us_per_call']:.0f} µs)"
            )
            keys = [f"{workload}_{form}_"] + ([f"{form}_"] if workload == "mixed" else [])
            for k in keys:
                out[f"{k}ratio"] = round(ratio, 3)
                out[f"{k}ratio_per_round"] = [round(x, 3) for x in per_round]
                out[f"{k}p99_ratio"] = round(p99_ratio, 3)
                out[f"{k}cpu_ratio"] = round(cpu_ratio, 3)
            # The ideal server should keep its core busy; if it did not while the client's
            # core was, the load generator was the limit and the ideal figure (so the ratio)
            # is off.
            if i["server_cpu"] < 0.85 and i["client_cpu"] > 0.9:
                client_bound.append(f"{workload}-{form}")
    sync = bench.results.get(("ideal-sync", "all", "unary"))
    if sync and "unary" in opts.forms:
        s_rps = _summary(sync)["rps"]
        for workload in opts.workloads:
            g_rps = _summary(bench.results[("gateway", workload, "unary")])["rps"]
            a_rps = _summary(bench.results[("ideal", workload, "unary")])["rps"]
            out[f"{workload}_unary_ratio_to_sync_ideal"] = round(g_rps / s_rps, 3)
            say(
                f"{workload:6} unary gateway / ideal on the thread-pool server {g_rps / s_rps:.2f}"
                f" (the grpc.aio ideal / the thread-pool ideal {a_rps / s_rps:.2f})"
            )
    for workload in opts.workloads:
        for form in opts.forms:
            _region_costs(out, workload, form, bench.results[("gateway", workload, form)])
    gw_runs = [r for (n, _w, _f), runs in bench.results.items() if n == "gateway" for r in runs]
    news = [r.new_conversions for r in gw_runs]
    wrapped = any(
        r.fresh_wrapped
        for (n, w, _f), runs in bench.results.items()
        if n == "gateway" and w != "repeat"
        for r in runs
    )
    say(
        f"new conversions per gateway run: {min(news)} to {max(news)} "
        f"(mixed: {opts.fresh:.0%} of requests carry an unseen code, "
        f"the rest repeat a pool of {opts.pool})"
        + ("; some runs ran out of fresh codes and repeated them" if wrapped else "")
    )
    say(f"code length: gateway mean {code_lengths[0]:.0f} chars, ideal {code_lengths[1]:.0f} chars")
    say(cores + ("; mutual TLS" if opts.tls else "; plaintext"))
    if client_bound:
        say(
            f"WARNING: the load generator saturated its core before the ideal server did "
            f"({', '.join(client_bound)}): the ideal figures are a lower bound and the ratios "
            f"overstate the gateway"
        )
    if bench.side_failures:
        say(f"WARNING: {bench.side_failures} failed or unexpected replies while warming up")
        errors += bench.side_failures
    if errors:
        say(f"WARNING: {errors} failed or unexpected replies (see the lines marked '!')")
    total = time.perf_counter() - started
    say(f"errors: {errors}; total time {total:.0f}s")
    out.update(
        errors=errors,
        goal=GOAL,
        meets_goal=goals_met and errors == 0,
        client_bound=client_bound,
        new_conversions_per_run=[min(news), max(news)],
        fresh_share=opts.fresh,
        workloads=list(opts.workloads),
        pool_codes=opts.pool,
        duration_s=opts.duration,
        warmup_s=opts.warmup,
        rounds=opts.rounds,
        concurrency=opts.concurrency,
        channels=opts.channels,
        streams=opts.streams,
        window=opts.window,
        gateway_code_chars=round(code_lengths[0]),
        ideal_code_chars=round(code_lengths[1]),
        cpu_count=os.cpu_count(),
        pinned=cores.startswith("servers on"),
        tls=opts.tls,
        total_s=round(total, 1),
    )
    return out


@contextlib.contextmanager
def children() -> Iterator[list[Child]]:
    procs: list[Child] = []
    try:
        yield procs
    finally:
        for child in procs:
            stop(child)


async def drive(
    bench: Bench,
    gw: Child,
    ideal: Child,
    sync: Child | None,
    channels: int,
    client_tls: TlsFiles | None,
    large: LargeSetup | None = None,
) -> dict[str, object]:
    credentials = None
    if client_tls is not None:
        cert, key, ca = client_tls.read()
        credentials = grpc.ssl_channel_credentials(
            root_certificates=ca, private_key=key, certificate_chain=cert
        )
    gateway = Target("gateway", gw.address, gw.proc.pid, channels, credentials)
    ideal_target = Target("ideal", ideal.address, ideal.proc.pid, channels, credentials)
    sync_target = (
        Target("ideal-sync", sync.address, sync.proc.pid, channels, credentials) if sync else None
    )
    large_target = (
        Target("gateway-large", large.child.address, large.child.proc.pid, channels, credentials)
        if large is not None
        else None
    )
    targets = [t for t in (gateway, ideal_target, sync_target, large_target) if t is not None]
    extra: dict[str, object] = {}
    try:
        for t in targets:
            t0 = time.perf_counter()
            await t.ready()
            if large is not None:  # start-up: serve started -> "serving on" -> channel ready
                large.startup[t.name] = large.startup.get(t.name, 0.0) + time.perf_counter() - t0
        await bench.prime(gateway, [t for t in targets[1:] if t is not large_target])
        if large is not None and large_target is not None:
            phase = registry.LargePhase(bench, gateway, large_target)
            await phase.prime()
        await bench.measure(gateway, ideal_target, sync_target)
        if large is not None and large_target is not None:
            await phase.measure()
            if bench.opts.revocation_batch:
                await phase.revocation_batch(
                    large.publisher(large.child.address), bench.opts.revocation_batch
                )
            extra = phase.report(large.startup, large.loaded)
    finally:
        for t in targets:
            await t.close()
    return extra


@dataclass
class LargeSetup:
    """The second gateway, on the large registry (--registry large)."""

    child: Child
    loaded: registry.Loaded
    startup: dict[str, float]
    publisher: Callable[[str], Callable[[], Awaitable[object]]]


def _publisher(
    loaded: registry.Loaded,
    entries: int,
    now: datetime,
    partner_tls: Callable[[str], TlsFiles] | None,
) -> Callable[[str], Callable[[], Awaitable[object]]]:
    """What publishes one revocation batch of ``entries`` to a gateway at an address: a
    partner's PublishRevocations call, with its own certificate under mutual TLS."""
    from gateway.api.v1 import registry_pb2, registry_pb2_grpc

    # A convert-mode region: its batch also looks up (and revokes) the conversions it reaches.
    region = min(r for r, p in loaded.partners.items() if p.region.mode is Mode.CONVERT)
    partner = loaded.partners[region]
    codes = entries // 2
    envelope = registry.batch_envelope(
        partner, "bench-live", now - timedelta(minutes=1), codes=codes, holders=entries - codes
    )

    def at(address: str) -> Callable[[], Awaitable[object]]:
        async def publish() -> object:
            if partner_tls is None:
                channel = grpc.aio.insecure_channel(address)
            else:
                cert, key, ca = partner_tls(region).read()
                creds = grpc.ssl_channel_credentials(
                    root_certificates=ca, private_key=key, certificate_chain=cert
                )
                channel = grpc.aio.secure_channel(address, creds)
            try:
                stub = registry_pb2_grpc.PartnerServiceStub(channel)
                request = registry_pb2.SubmissionRequest(submission=envelope)
                return await stub.PublishRevocations(request, timeout=300)
            finally:
                await channel.close()

        return publish

    return at


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    started = time.perf_counter()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks
    server_core, client_core, cores = choose_cores(opts)
    say(
        f"trustgw bench: {opts.rounds} rounds x {opts.duration:g}s per form and server "
        f"(+{opts.warmup:g}s warm-up each); unary {opts.concurrency} in flight on "
        f"{opts.channels} channel(s); {opts.streams} streams x {opts.window} in flight; "
        f"{os.cpu_count()} cpus; {cores}; "
        + ("mutual TLS" if opts.tls else "plaintext")
        + f"; workloads {', '.join(opts.workloads)}"
    )
    with tempfile.TemporaryDirectory(prefix="trustgw-bench-") as tmp, children() as procs:
        tmpdir = Path(tmp)
        data_dir = tmpdir / "data"
        data_dir.mkdir()
        now = utcnow()
        simulator = PartnerSimulator.generate()
        asyncio.run(prepare(data_dir, simulator, now))
        codes = GatewayCodes(simulator, now)
        gw_pool = codes.take(opts.pool, fresh=False)
        regions = {r.region for r in gw_pool}
        gw_len = statistics.mean(len(_code_of(r)) for r in gw_pool)
        issuer_key, reply_seed = SigningKey.generate(), os.urandom(32)
        ideal_codes = ideal_server.make_codes(
            issuer_key,
            opts.pool,
            round(gw_len),
            int(now.timestamp()),
            non_green=codes.mix.non_green,
        )
        ideal_pool = requests_from(ideal_codes, "i")
        ideal_len = statistics.mean(len(c) for c, _ in ideal_codes)
        say(
            f"  {len(gw_pool)} pool codes from {len(regions)} regions "
            f"(mean {gw_len:.0f} chars); ideal codes {ideal_len:.0f} chars"
        )

        if opts.tls:
            server_tls, client_tls = make_pki(tmpdir / "pki", now)
            tls_args = [
                "--tls-cert",
                str(server_tls.cert),
                "--tls-key",
                str(server_tls.key),
                "--tls-ca",
                str(server_tls.ca),
            ]
        else:
            client_tls, tls_args = None, []

        def gateway_argv(directory: Path) -> list[str]:
            return [
                *shlex.split(opts.serve_cmd),
                "--data-dir",
                str(directory),
                "--listen",
                "127.0.0.1:0",
                *(tls_args or ["--insecure"]),
            ]

        t0 = time.perf_counter()
        procs.append(spawn("gateway", gateway_argv(data_dir), server_core, tmpdir))
        spawned = time.perf_counter() - t0
        ideal_argv = [
            sys.executable,
            str(ROOT / "bench" / "ideal_server.py"),
            "--listen",
            "127.0.0.1:0",
            "--verify-key",
            issuer_key.verify_key.encode().hex(),
            "--signing-seed",
            reply_seed.hex(),
            *tls_args,
        ]
        large: LargeSetup | None = None
        startup = {"gateway": spawned}
        if opts.registry == "large":
            large_dir = tmpdir / "data-large"
            large_dir.mkdir()
            asyncio.run(prepare(large_dir, simulator, now))
            say(
                f"  loading the large registry: 14 regions x {opts.large_keys} keys, "
                f"{opts.large_codes:,} revoked codes and {opts.large_holders:,} revoked holders"
            )
            loaded = asyncio.run(
                registry.load_large(
                    large_dir,
                    simulator,
                    now,
                    keys=opts.large_keys,
                    codes=opts.large_codes,
                    holders=opts.large_holders,
                    say=say,
                )
            )
            t0 = time.perf_counter()
            child = spawn("gateway-large", gateway_argv(large_dir), server_core, tmpdir, 900)
            startup["gateway-large"] = time.perf_counter() - t0
            procs.append(child)
            partner_tls = None
            if opts.tls:
                ca = DevCA(tmpdir / "pki")

                def partner_tls(region: str) -> TlsFiles:
                    cert, key = ca.issue(
                        f"partner-{region}", uri=f"trustgw://partner/{region}", now=utcnow()
                    )
                    return TlsFiles(cert, key, ca.cert_path)

            large = LargeSetup(
                child,
                loaded,
                startup,
                _publisher(loaded, opts.revocation_batch, now, partner_tls),
            )
        procs.append(spawn("ideal", ideal_argv, server_core, tmpdir))
        if opts.sync_ideal:
            procs.append(spawn("ideal-sync", [*ideal_argv, "--sync"], server_core, tmpdir))
        say("  " + "; ".join(f"{c.name} pid {c.proc.pid} on {c.address}" for c in procs))
        if client_core is not None:
            os.sched_setaffinity(0, {client_core})  # before any client thread exists
        bench = Bench(opts, codes, gw_pool, ideal_pool)
        named = {c.name: c for c in procs}
        try:
            extra = asyncio.run(
                drive(
                    bench,
                    named["gateway"],
                    named["ideal"],
                    named.get("ideal-sync"),
                    opts.channels,
                    client_tls,
                    large,
                )
            )
        except KeyboardInterrupt:
            say("interrupted: stopping the servers")
            return 130
        for child in procs:
            if child.proc.poll() is not None:
                say(
                    f"WARNING: {child.name} exited early with {child.proc.returncode}; "
                    f"its output:\n{child.log.read_text(errors='replace')[-2000:]}"
                )
        say(f"  generated fresh codes in {bench.generate_seconds:.1f}s between runs")
        summary = report(bench, opts, cores, started, (gw_len, ideal_len))
        summary.update(extra)
        summary["registry"] = opts.registry
        if extra:
            summary["total_s"] = round(time.perf_counter() - started, 1)
            say(f"total time with the large registry {summary['total_s']:.0f}s")
    print(json.dumps(summary, sort_keys=True), flush=True)
    return 0


def _code_of(request: Request) -> str:
    from gateway.api.v1 import recognition_pb2 as pb

    return pb.RecogniseRequest.FromString(request.data).code


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
