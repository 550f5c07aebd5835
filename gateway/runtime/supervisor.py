"""``trustgw serve --workers N``: N server processes on one port, and the supervisor of them.

The supervisor (the process the operator started) serves nothing itself. It reserves the port
(a socket bound with ``SO_REUSEPORT`` and never listening, which also resolves ``HOST:0``), starts
N workers as fresh interpreters (``multiprocessing``'s *spawn*: gRPC does not survive ``fork``),
each a whole gateway listening on that port with ``grpc.so_reuseport``, so that the kernel spreads
new connections over them. Then it:

- **restarts** a worker that exits while it should run, after a backoff that doubles from
  :data:`FIRST_BACKOFF` to :data:`MAX_BACKOFF` while the worker keeps dying young, with one log
  line naming it, its pid and how it ended (``exit status 1``, ``killed by SIGKILL``);
- **drains** on SIGTERM or SIGINT: every worker gets SIGTERM and drains as a single gateway does
  (NOT_SERVING, in-flight calls finish within the grace period); the supervisor exits 0 when all
  of them exited 0. A second signal kills the workers at once. SIGHUP is forwarded to every
  worker. Workers ignore SIGINT (a terminal's Ctrl-C reaches the whole process group: only the
  supervisor's SIGTERM may start their drain) and drain by themselves when the supervisor dies;
- **exposes the metrics of all workers together**, with prometheus_client's multiprocess mode:
  a fresh ``PROMETHEUS_MULTIPROC_DIR`` per run, the workers write their samples there and the
  supervisor serves the merged registry on ``metrics_listen``; a dead worker's live gauges are
  dropped (``mark_process_dead``), its counts stay in the sums.

Work that must run once is not run N times: only worker 0 runs the periodic retention purge
(:func:`worker_config`). The trust list is recorded by every worker but versioned by the store
(a new version only when the content's digest changed, against the expected latest version), so
that concurrent workers record one version per content.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, TextIO

from gateway.runtime.config import GatewayConfig
from keys.errors import ConfigurationError, GatewayError

log = logging.getLogger("trustgw.supervisor")

FIRST_BACKOFF = 0.1  # seconds before restarting a worker that died
MAX_BACKOFF = 30.0
STABLE_AFTER = 60.0  # a worker that ran this long starts the backoff afresh when it dies
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@dataclass(frozen=True)
class WorkerSlot:
    """What one worker is told: its index, how many there are, where to listen."""

    index: int
    count: int
    listen: str  # HOST:PORT with the supervisor's concrete port


def worker_config(config: GatewayConfig, slot: WorkerSlot) -> GatewayConfig:
    """The gateway configuration of one worker: the supervisor's port, no metrics endpoint of
    its own (the supervisor serves the merged metrics), and the periodic purge in worker 0
    only."""
    retention = config.retention
    if slot.index != 0:
        retention = replace(retention, interval_seconds=0.0)
    return replace(config, listen=slot.listen, metrics_listen=None, retention=retention)


class WorkerLink:
    """A worker's side: tells the supervisor it serves (or why it could not), and says when the
    supervisor is gone."""

    def __init__(self, slot: WorkerSlot, conn: Connection) -> None:
        self.slot = slot
        self._conn = conn

    def ready(self, port: int) -> None:
        """The worker accepts calls on ``port``."""
        self._send(("ready", os.getpid(), port))

    def failed(self, reason: str, message: str) -> None:
        """The worker could not start: the supervisor reports it (once) and stops."""
        self._send(("failed", reason, message))

    def _send(self, message: tuple[Any, ...]) -> None:
        try:
            self._conn.send(message)
        except OSError:  # the supervisor is gone: nothing to tell
            pass

    def parent_sentinel(self) -> int | None:
        """A file descriptor that becomes readable when the supervisor exits."""
        parent = multiprocessing.parent_process()
        return None if parent is None else parent.sentinel


# --- the supervisor ---------------------------------------------------------------------------

WorkerMain = Callable[[Any, WorkerSlot, Connection], None]


@dataclass
class _Worker:
    slot: WorkerSlot
    process: BaseProcess | None = None
    conn: Connection | None = None
    pid: int = 0
    ready: bool = False
    started_at: float = 0.0
    backoff: float = FIRST_BACKOFF
    restart: asyncio.TimerHandle | None = None
    exits: list[int] = field(default_factory=list)


def describe_exit(code: int | None) -> str:
    """``exit status 1`` or ``killed by SIGKILL`` (multiprocessing's negative exit codes)."""
    if code is None:
        return "an unknown status"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def reserve_port(listen: str) -> tuple[socket.socket, int]:
    """A socket bound to ``listen`` with ``SO_REUSEPORT`` (never listening): it holds the port
    for the workers, fails now when the port is taken, and resolves port 0.

    Raises :class:`ConfigurationError` (:class:`keys.errors.ListenError` for a port in use or
    an address not this machine's: ``serve`` exits 4).
    """
    from gateway.listen import listen_error

    host, _, port_text = listen.rpartition(":")
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(
            None if host in ("", "*") else host,
            int(port_text),
            type=socket.SOCK_STREAM,
            flags=socket.AI_PASSIVE,
        )
    except (OSError, UnicodeError) as exc:
        raise ConfigurationError(f"cannot listen on {listen}: {exc}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise listen_error("gRPC", listen, exc.errno) from None
    return sock, int(sock.getsockname()[1])


class Supervisor:
    """Runs and watches the workers of one ``serve --workers N`` (see the module docstring)."""

    def __init__(
        self,
        settings: Any,
        count: int,
        main: WorkerMain,
        *,
        out: TextIO | None = None,
    ) -> None:
        self._settings = settings
        self._count = count
        self._main = main
        self._out = out or sys.stdout
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[_Worker] = []
        self._stopping = False
        self._forced = False
        self._all_ready = asyncio.Event()
        self._all_exited = asyncio.Event()
        self._failure: GatewayError | None = None
        self._metrics_dir: str | None = None
        self._metrics_server: Any = None
        self.metrics_port: int | None = None
        self.port = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self, listen: str, metrics_listen: str | None, grace: float) -> int:
        """Start the workers, watch them until a signal, drain; the exit status."""
        sock, self.port = reserve_port(listen)
        host = listen.rpartition(":")[0]
        try:
            if metrics_listen:
                self._start_metrics(metrics_listen)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._on_stop_signal)
            loop.add_signal_handler(signal.SIGHUP, self._forward, signal.SIGHUP)
            self._workers = [
                _Worker(WorkerSlot(i, self._count, f"{host}:{self.port}"))
                for i in range(self._count)
            ]
            for worker in self._workers:
                self._start(worker)
            ready = asyncio.ensure_future(self._all_ready.wait())
            exited = asyncio.ensure_future(self._all_exited.wait())
            await asyncio.wait({ready, exited}, return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            if self._all_ready.is_set() and not self._stopping:
                mode = "plaintext (development)" if self._settings.insecure else "mutual TLS"
                print(
                    f"trustgw serving on {host}:{self.port} ({mode}, {self._count} workers)",
                    file=self._out,
                    flush=True,
                )
                if self.metrics_port is not None:
                    metrics_host = (metrics_listen or "").rpartition(":")[0]
                    print(
                        f"metrics on http://{metrics_host}:{self.metrics_port}/metrics "
                        "(all workers)",
                        file=self._out,
                        flush=True,
                    )
            await exited
            log.info("all workers stopped")
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                asyncio.get_running_loop().remove_signal_handler(sig)
            self._kill_all()
            sock.close()
            self._stop_metrics()
        if self._failure is not None:
            raise self._failure
        if self._forced:
            return 130
        codes = [code for worker in self._workers for code in worker.exits[-1:]]
        return 0 if all(code == 0 for code in codes) else 1

    def _start(self, worker: _Worker) -> None:
        worker.restart = None
        if self._stopping:
            return
        reader, writer = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=self._main,
            args=(self._settings, worker.slot, writer),
            name=f"trustgw-worker-{worker.slot.index}",
        )
        process.start()
        writer.close()  # the child holds its own end: EOF here when it dies
        worker.process, worker.conn, worker.pid, worker.ready = (
            process,
            reader,
            process.pid or 0,
            False,
        )
        worker.started_at = asyncio.get_running_loop().time()
        loop = asyncio.get_running_loop()
        loop.add_reader(process.sentinel, self._on_exit, worker)
        loop.add_reader(reader.fileno(), self._on_message, worker)
        log.info("worker %d started (pid %d)", worker.slot.index, worker.pid)

    def _on_message(self, worker: _Worker) -> None:
        """The worker's pipe is readable: a message, or EOF (it exited)."""
        conn = worker.conn
        if conn is None:
            return
        try:
            message = conn.recv()
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(conn.fileno())
            return
        self._handle(worker, message)

    def _handle(self, worker: _Worker, message: tuple[Any, ...]) -> None:
        if message[0] == "ready":
            worker.ready = True
            again = bool(worker.exits)
            log.info(
                "worker %d (pid %d) serving on port %d%s",
                worker.slot.index,
                worker.pid,
                message[2],
                " again" if again else "",
            )
            if all(w.ready for w in self._workers):
                self._all_ready.set()
        elif message[0] == "failed" and not self._all_ready.is_set():
            # A worker that cannot start on the first round: its reason is the command's.
            failure = ConfigurationError(message[2])
            failure.reason = message[1]  # type: ignore[misc]
            self._failure = self._failure or failure
            self._begin_stop()

    def _on_exit(self, worker: _Worker) -> None:
        process = worker.process
        if process is None:
            return
        loop = asyncio.get_running_loop()
        loop.remove_reader(process.sentinel)
        if worker.conn is not None:
            loop.remove_reader(worker.conn.fileno())
            try:
                while worker.conn.poll():  # a last message (its failure) before the exit
                    self._handle(worker, worker.conn.recv())
            except (EOFError, OSError):
                pass
            worker.conn.close()
        process.join()
        code = process.exitcode
        worker.exits.append(-1 if code is None else code)
        worker.process, worker.conn, was_ready = None, None, worker.ready
        worker.ready = False
        self._forget_metrics(worker.pid)
        if self._stopping or (not self._all_ready.is_set() and not was_ready):
            level = logging.INFO if code == 0 else logging.WARNING
            log.log(
                level,
                "worker %d (pid %d) exited: %s",
                worker.slot.index,
                worker.pid,
                describe_exit(code),
            )
            if not self._stopping:  # died before it ever served: the start failed
                self._failure = self._failure or ConfigurationError(
                    f"worker {worker.slot.index} could not start ({describe_exit(code)}); "
                    "see its log lines"
                )
                self._begin_stop()
            self._check_all_exited()
            return
        ran = loop.time() - worker.started_at
        worker.backoff = FIRST_BACKOFF if ran >= STABLE_AFTER else worker.backoff
        delay = worker.backoff
        worker.backoff = min(MAX_BACKOFF, worker.backoff * 2)
        log.warning(
            "worker %d (pid %d) exited: %s; restarting it in %.1f s",
            worker.slot.index,
            worker.pid,
            describe_exit(code),
            delay,
        )
        worker.restart = loop.call_later(delay, self._start, worker)

    # -- signals -----------------------------------------------------------------------------

    def _on_stop_signal(self) -> None:
        if self._stopping:
            log.warning("second signal: stopping every worker at once, without draining")
            self._forced = True
            self._kill_all()
            return
        log.info("shutting down: draining %d worker(s)", self._count)
        self._begin_stop()

    def _begin_stop(self) -> None:
        self._stopping = True
        for worker in self._workers:
            if worker.restart is not None:
                worker.restart.cancel()
                worker.restart = None
        self._forward(signal.SIGTERM)
        self._check_all_exited()

    def _forward(self, sig: int) -> None:
        for worker in self._workers:
            if worker.process is not None and worker.process.exitcode is None:
                try:
                    os.kill(worker.pid, sig)
                except ProcessLookupError:
                    pass

    def _check_all_exited(self) -> None:
        if self._stopping and all(w.process is None for w in self._workers):
            self._all_exited.set()

    def _kill_all(self) -> None:
        for worker in self._workers:
            if worker.process is not None and worker.process.exitcode is None:
                worker.process.kill()

    # -- metrics -----------------------------------------------------------------------------

    def _start_metrics(self, listen: str) -> None:
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector

        from gateway.observability import start_metrics_http

        self._metrics_dir = tempfile.mkdtemp(prefix="trustgw-metrics-")
        os.environ[MULTIPROC_ENV] = self._metrics_dir  # the workers inherit it at spawn
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self._metrics_dir)  # type: ignore[no-untyped-call]
        registry.register(_SupervisorCollector(self))
        # /metrics only, and a port that cannot be opened is the one ListenError (exit 4)
        self._metrics_server, self.metrics_port = start_metrics_http(listen, registry)

    def worker_states(self) -> list[tuple[int, bool, int]]:
        """``(index, serving, restarts)`` of every worker (for the supervisor's own metrics)."""
        return [(w.slot.index, w.ready, max(0, len(w.exits))) for w in self._workers]

    def _forget_metrics(self, pid: int) -> None:
        """A dead worker's gauges are no longer true; its counters stay in the sums."""
        if self._metrics_dir is None or not pid:
            return
        from prometheus_client.multiprocess import mark_process_dead

        mark_process_dead(pid, self._metrics_dir)  # type: ignore[no-untyped-call]
        for stale in Path(self._metrics_dir).glob(f"gauge_*_{pid}.db"):
            stale.unlink(missing_ok=True)

    def _stop_metrics(self) -> None:
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        if self._metrics_dir is not None:
            os.environ.pop(MULTIPROC_ENV, None)
            shutil.rmtree(self._metrics_dir, ignore_errors=True)


class _SupervisorCollector:
    """The supervisor's own samples beside the workers' merged ones: how many workers serve,
    and how often each was restarted (a counter an operator alerts on)."""

    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        states = self._supervisor.worker_states()
        workers = GaugeMetricFamily(
            "trustgw_workers", "Worker processes of serve --workers, by state.", labels=["state"]
        )
        workers.add_metric(["configured"], len(states))
        workers.add_metric(["serving"], sum(1 for _, serving, _ in states if serving))
        yield workers
        restarts = CounterMetricFamily(
            "trustgw_worker_restarts",
            "Times a worker exited while it should have run (each one was restarted).",
            labels=["worker"],
        )
        for index, _, exits in states:
            restarts.add_metric([str(index)], exits)
        yield restarts
