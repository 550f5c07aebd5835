"""Failover as a client sees it (issue 10 point 5; docs/api.md "Several gateways").

Three real ``trustgw serve`` processes on one database and one SDK client over all three under
sustained load of idempotent calls (recognitions of show-mode codes, and conversions: each
convert-mode code is sent twice, by different calls, so mostly through different replicas; and
every 20th call the reads, GetGatewayKeys and GetTrustList).
Under that load one replica is killed with SIGKILL and later restarted on its port, and (on
PostgreSQL, a private cluster: tests/support/pgcluster.py) the database is restarted once.

What must hold: **0 failed calls at the client**, **0 lost conversions** (every home code a
client received is stored), **0 duplicate conversions** (one record per source code, and every
caller of one source code got the same home code), and **the killed replica serves again** (its
own metrics count the client's calls after the restart).

Over SQLite the three replicas share one file (one writer at a time; the database is not
restarted: it has no server); over PostgreSQL they share a database of a private cluster.
Nothing waits a fixed time: the phases wait for the client's progress, log lines and process
exits, each under one deadline.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import urllib.request
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support.aio import run
from support.clock import REAL_NOW
from support.pgcluster import PgCluster, free_port, private_cluster

from adapters.regions import REGION_SPECS
from gateway.sdk import AsyncGatewayClient, Decision, RetryPolicy
from keys.model import Mode

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NOW = REAL_NOW  # a serving gateway reads the real clock
REPO = Path(__file__).resolve().parent.parent
SHOW = next(s.code for s in REGION_SPECS if s.mode is Mode.SHOW)
CONVERT = next(s.code for s in REGION_SPECS if s.mode is Mode.CONVERT)
DEADLINE = 150.0  # the whole scenario; only a failing run waits this long
PHASE_CALLS = 60  # calls the client completes in each phase (at least)
PHASES = 5
SOURCES_PER_PHASE = 50  # convert-mode codes of one phase (a long phase sends them again)
# Every call may wait out a database restart or a replica's death: a deadline of its own,
# retries with short backoffs within it.
CALL_TIMEOUT = 30.0
PATIENT = RetryPolicy(attempts=10_000, initial_backoff=0.02, max_backoff=0.25)


def _env() -> dict[str, str]:
    """The environment of a replica: ours without any TRUSTGW_* setting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRUSTGW_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(REPO), env.get("PYTHONPATH"))))
    return env


@dataclass
class Replica:
    """One ``trustgw serve`` process: its port (kept across restarts) and metrics port."""

    name: str
    argv: list[str]
    log: Path
    port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    process: asyncio.subprocess.Process | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Start it and return once it prints its serving line (raises with its log if it
        exits first)."""
        argv = [
            *self.argv,
            "--listen", self.address,
            "--metrics-listen", f"127.0.0.1:{self.metrics_port}",
        ]  # fmt: skip
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                *argv,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                env=_env(),
                cwd=REPO,
                start_new_session=True,
            )
        assert self.process.stdout is not None
        while True:
            line = await self.process.stdout.readline()
            if not line:
                await self.process.wait()
                raise AssertionError(
                    f"replica {self.name} exited {self.process.returncode}: "
                    + self.log.read_text(errors="replace")[-3000:]
                )
            if line.startswith(b"trustgw serving on"):
                return

    async def kill(self) -> None:
        """SIGKILL: no drain, connections cut, whatever was in flight lost."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def stop(self) -> None:
        """SIGTERM and wait for it to drain and exit (SIGKILL if it does not)."""
        if self.process is None or self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), 30)
        except TimeoutError:
            await self.kill()

    def recognitions(self) -> float:
        """The decisions this process has made (its ``trustgw_recognitions_total``)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("trustgw_recognitions_total")
        )


@dataclass
class Load:
    """The client's sustained load: what it sent, what came back, what failed."""

    # One list of (code, is a conversion) per phase, each sent in turn and cycled within its
    # phase: every phase converts codes no earlier phase sent (its own new conversions).
    phases: list[list[tuple[str, bool]]]
    phase: int = 0
    done: int = 0
    reads: int = 0  # GetGatewayKeys + GetTrustList pairs answered
    converted_in: dict[int, set[str]] = field(default_factory=lambda: defaultdict(set))
    failures: list[str] = field(default_factory=list)
    home_codes: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    progressed: asyncio.Event = field(default_factory=asyncio.Event)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _next: int = 0

    def next_phase(self) -> None:
        self.phase += 1
        self._next = 0

    async def worker(self, client: AsyncGatewayClient) -> None:
        while not self.stopping.is_set():
            phase = self.phase
            codes = self.phases[phase]
            code, converts = codes[self._next % len(codes)]
            self._next += 1
            try:
                if self._next % 20 == 0:  # the reads are idempotent calls too
                    keys = await client.gateway_keys(timeout=CALL_TIMEOUT)
                    trust = await client.trust_list(timeout=CALL_TIMEOUT)
                    self.reads += 1
                    if not keys.keys or trust.version < 1:
                        self.failures.append(f"an empty read: {keys!r:.80} {trust!r:.80}")
                decision = await client.recognise(code, timeout=CALL_TIMEOUT)
            except Exception as exc:  # every failure is counted, none stops the load
                self.failures.append(f"{type(exc).__name__}: {exc}")
                continue
            self._record(code, converts, decision)
            if converts:
                self.converted_in[phase].add(code)
            self.done += 1
            self.progressed.set()

    def _record(self, code: str, converts: bool, decision: Decision) -> None:
        if not decision.recognised:
            self.failures.append(f"not recognised: {decision.reason} {decision.message}")
        elif converts:
            if decision.converted is None:
                self.failures.append("a convert-mode code came back without a home code")
            else:
                self.home_codes[code].add(decision.converted.code_id)

    async def until(self, calls: int) -> None:
        """Wait until ``calls`` more calls have been answered."""
        target = self.done + calls
        while self.done < target:
            self.progressed.clear()
            await self.progressed.wait()


@dataclass
class Database:
    """Where the replicas' store is: ``setting`` for ``--database`` (None: DATA_DIR's SQLite)."""

    setting: str | None
    cluster: PgCluster | None


@asynccontextmanager
async def database(backend: str) -> AsyncIterator[Database]:
    if backend == "sqlite":
        yield Database(None, None)
        return
    with private_cluster() as cluster:
        cluster.psql("CREATE DATABASE failover")
        yield Database(cluster.url("failover"), cluster)


async def _prepare(data_dir: Path, simulator: Any, db: Database) -> None:
    from gateway.demo import prepare

    if db.setting is None:
        await prepare(data_dir, simulator, NOW)
    else:
        await prepare(data_dir, simulator, NOW, database=db.setting)


async def _stored_conversions(data_dir: Path, db: Database) -> list[Any]:
    if db.setting is None:
        from keys.store.sqlitestore import SQLiteStore

        store: Any = await SQLiteStore.open(data_dir / "trustgw.db")
    else:
        from keys.store.factory import open_store

        store = await open_store(db.setting)
    try:
        return list(await store.list_conversions(CONVERT, 100_000))
    finally:
        await store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_killed_replica_and_a_restarted_database_fail_no_idempotent_call(
    backend: str, tmp_path: Path, simulator, codes: Callable[[str, Any], Any]
) -> None:
    convert, show = codes(CONVERT, NOW), codes(SHOW, NOW)
    shows = [show() for _ in range(20)]
    phases: list[list[tuple[str, bool]]] = []
    for _ in range(PHASES):
        pool: list[tuple[str, bool]] = []
        for i in range(SOURCES_PER_PHASE):  # each source sent twice, mostly via two replicas
            source = convert()
            pool += [(source, True), (shows[i % len(shows)], False), (source, True)]
        phases.append(pool)
    data_dir = tmp_path / "gw"
    data_dir.mkdir()

    async def scenario() -> tuple[Load, list[Any], float]:
        async with database(backend) as db:
            await _prepare(data_dir, simulator, db)
            serve = [sys.executable, "-m", "gateway.cli", "serve", "--data-dir", str(data_dir)]
            serve += ["--insecure", "--log-format", "text", "--refresh-interval", "0.5"]
            if db.setting is not None:
                serve += ["--database", db.setting]
            replicas = [Replica(n, serve, tmp_path / f"{n}.log") for n in ("r1", "r2", "r3")]
            load = Load(phases)
            try:
                await asyncio.gather(*(r.start() for r in replicas))
                async with AsyncGatewayClient(
                    [r.address for r in replicas],
                    insecure=True,
                    retry=PATIENT,
                    timeout=CALL_TIMEOUT,
                ) as client:
                    workers = [asyncio.create_task(load.worker(client)) for _ in range(6)]
                    try:
                        async with asyncio.timeout(DEADLINE):
                            await load.until(PHASE_CALLS)
                            victim = replicas[0]
                            load.next_phase()  # 1: a replica killed
                            await victim.kill()
                            await load.until(PHASE_CALLS)  # two replicas carry the load
                            load.next_phase()  # 2: the replica restarting
                            await victim.start()
                            # The client sends to the restarted replica again (health-checked
                            # round robin): its own counter of decisions moves.
                            while not await asyncio.to_thread(victim.recognitions):
                                await load.until(1)
                            after_restart = await asyncio.to_thread(victim.recognitions)
                            load.next_phase()  # 3: the database restarted
                            if db.cluster is not None:
                                await asyncio.to_thread(db.cluster.restart, "fast")
                            await load.until(PHASE_CALLS)  # after the database is back
                            load.next_phase()  # 4: all up again
                            await load.until(PHASE_CALLS)
                    finally:
                        load.stopping.set()
                        await asyncio.gather(*workers)
            finally:
                await asyncio.gather(*(r.stop() for r in replicas))
            return load, await _stored_conversions(data_dir, db), after_restart

    load, stored, after_restart = run(scenario())
    assert load.failures == [], load.failures[:5]
    assert load.done >= 4 * PHASE_CALLS and load.reads > 0
    assert after_restart > 0
    # Every phase made new conversions (through the kill, the restarts, after them).
    assert all(load.converted_in[phase] for phase in range(PHASES)), load.converted_in.keys()
    # 0 duplicates: each source code has one record, and every caller got its home code.
    by_source: dict[str, list[str]] = defaultdict(list)
    for record in stored:
        by_source[record.source_key].append(record.converted_code_id)
    assert all(len(ids) == 1 for ids in by_source.values())
    assert all(len(ids) == 1 for ids in load.home_codes.values()), {
        code[:20]: ids for code, ids in load.home_codes.items() if len(ids) > 1
    }
    # 0 lost: every home code a client received is stored (and nothing else was converted).
    received = {next(iter(ids)) for ids in load.home_codes.values()}
    assert received == {record.converted_code_id for record in stored}
    assert len(stored) == len(load.home_codes)
