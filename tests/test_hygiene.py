"""Tests that a loaded machine cannot make flaky (issue 9 item 7): the suite's own rules, read
from its source.

- No fixed sleep: a test awaits the hook that says its condition holds (an event, a flush, a
  pushed version) or polls it with ``support.wait`` (a deadline only a failing test reaches).
  ``sleep(0)``, a bare yield to the event loop, is allowed.
- No reading of the real clock where a ``now`` can be passed: fixed times (``support.clock.T0``),
  or ``support.clock.REAL_NOW`` (read once) for a gateway that reads the clock itself.
- No test imports ``conftest`` (pytest owns it): fixtures, or the ``tests/support`` package.

Every exception is listed below with its reason.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

# (file relative to tests/, what) -> why it may
ALLOWED: dict[tuple[str, str], str] = {
    ("support/wait.py", "sleep"): "the one poll interval between two looks at a condition",
    ("support/wait.py", "time.monotonic"): "the deadline of a blocking wait",
    ("support/wait.py", "loop.time"): "the deadline of an async wait",
    ("support/clock.py", "datetime.now"): "REAL_NOW: the suite's one reading of the real clock",
    ("independent/doc_issuer.py", "datetime.now"): (
        "written from the docs alone (it shares no code with the suite), for a real `trustgw serve`"
    ),
    ("test_gateway_key_withdrawal.py", "utcnow"): (
        "`keys revoke` reads the command's own clock (--compromised-at is the compromise time): "
        "the test signs after it with the replacement key"
    ),
    ("test_key_activation.py", "utcnow"): (
        "`keys rotate` takes no --at: the test brackets the command's own reading of the clock"
    ),
    ("test_online_recognition.py", "utcnow"): (
        "the simulated partners answer a serving gateway, which reads the real clock: their "
        "checked_at must be its now (60 s skew), and what it signed is checked at that now"
    ),
}

SLEEPS = {"time.sleep", "asyncio.sleep", "sleep"}
CLOCKS = {
    "time.time",
    "time.time_ns",
    "time.monotonic",
    "time.monotonic_ns",
    "time.perf_counter",
    "time.perf_counter_ns",
    "datetime.now",
    "datetime.utcnow",
    "datetime.today",
    "date.today",
    "utcnow",
    "timeutil.utcnow",
    "loop.time",
}


def _name(node: ast.expr) -> str:
    """``a.b.c`` for a call's function; a loop's ``time()`` as ``loop.time``."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        value = node.value
        if node.attr == "time" and (
            (isinstance(value, ast.Name) and value.id == "loop")
            or (isinstance(value, ast.Call) and _name(value.func).endswith("_loop"))
        ):
            return "loop.time"
        return f"{_name(value)}.{node.attr}"
    if isinstance(node, ast.Call):
        return _name(node.func) + "()"
    return "?"


def violations(source: str) -> Iterator[tuple[int, str, str]]:
    """(line, what, rule) for every fixed sleep, real-clock read and conftest import."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            name = _name(node.func)
            if name in SLEEPS:
                arg = node.args[0] if node.args else None
                if not (isinstance(arg, ast.Constant) and arg.value == 0):
                    yield node.lineno, "sleep", f"{name}() other than sleep(0)"
            elif name in CLOCKS:
                yield node.lineno, name, f"{name}() reads the real clock"
        elif isinstance(node, ast.ImportFrom) and node.module == "conftest":
            yield node.lineno, "conftest", "imports conftest"
        elif isinstance(node, ast.Import) and any(a.name == "conftest" for a in node.names):
            yield node.lineno, "conftest", "imports conftest"


def _files() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if "vectors" not in p.parts)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        pytest.param("import time\ntime.sleep(0.2)\n", ["sleep"], id="time-sleep"),
        pytest.param("async def f():\n    await asyncio.sleep(0.05)\n", ["sleep"], id="aio"),
        pytest.param("from time import sleep\nsleep(DELAY)\n", ["sleep"], id="variable"),
        pytest.param("async def f():\n    await asyncio.sleep(0)\n", [], id="a-yield-is-fine"),
        pytest.param("NOW = datetime.now(UTC)\n", ["datetime.now"], id="datetime-now"),
        pytest.param("x = time.monotonic()\n", ["time.monotonic"], id="monotonic"),
        pytest.param("x = utcnow()\n", ["utcnow"], id="utcnow"),
        pytest.param("x = asyncio.get_running_loop().time()\n", ["loop.time"], id="loop-time"),
        pytest.param("from conftest import run\n", ["conftest"], id="conftest"),
        pytest.param("T0 = datetime(2026, 3, 11, tzinfo=UTC)\n", [], id="a-fixed-time"),
    ],
)
def test_the_scanner_finds_what_it_forbids(source: str, expected: list[str]) -> None:
    assert [what for _, what, _ in violations(source)] == expected


def test_no_test_sleeps_reads_the_real_clock_or_imports_conftest() -> None:
    found = []
    used = set()
    for path in _files():
        rel = path.relative_to(TESTS).as_posix()
        for line, what, rule in violations(path.read_text(encoding="utf-8")):
            if (rel, what) in ALLOWED:
                used.add((rel, what))
            else:
                found.append(f"tests/{rel}:{line}: {rule}")
    assert found == [], "\n".join(found)
    assert used == set(ALLOWED), f"stale exceptions: {set(ALLOWED) - used}"


# --- the tiers (tests/support/tiers.py) ---------------------------------------------------------


def test_the_unit_tier_guard_refuses_sockets_grpc_and_processes_but_not_asyncio() -> None:
    """What the guard around every unit-tier test refuses, and that it records each refusal
    (so that code which swallows the error still fails its test)."""
    import asyncio
    import socket
    import subprocess
    import sys

    import grpc.aio
    from support import tiers

    before = (socket.socket, subprocess.Popen, grpc.aio.insecure_channel, grpc.aio.server)
    with tiers.guard() as hits:
        with pytest.raises(tiers.UnitTierError):
            socket.socket()
        with pytest.raises(tiers.UnitTierError):
            socket.create_connection(("127.0.0.1", 9))
        with pytest.raises(tiers.UnitTierError):
            grpc.aio.insecure_channel("127.0.0.1:9")
        with pytest.raises(tiers.UnitTierError):
            grpc.aio.server()
        with pytest.raises(tiers.UnitTierError):
            subprocess.run([sys.executable, "-c", "pass"], check=False)
        a, b = socket.socketpair()  # AF_UNIX: what asyncio's event loop needs
        a.close()
        b.close()
        assert asyncio.run(asyncio.sleep(0, "ran")) == "ran"
    assert len(hits) == 5
    # restored on the way out (this test itself runs under the guard of its tier)
    assert (socket.socket, subprocess.Popen, grpc.aio.insecure_channel, grpc.aio.server) == before


@pytest.mark.integration
def test_an_integration_test_may_open_a_socket() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        assert s.getsockname()[1] > 0
