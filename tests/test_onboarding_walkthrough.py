"""docs/onboarding.md "The walkthrough", run verbatim against a real gateway over mutual TLS.

Every command of the ``sh onboarding`` blocks runs in order in one directory, each in ``bash -c``
with the environment the walkthrough's ``export`` lines build, exactly as written, except the
two substitutions the page itself announces: the test starts ``trustgw serve`` itself, on port 0
instead of 50051, and puts the port it got in place of ``50051`` in the later commands. Each
command's exit status is asserted (0, or what its ``# -> exit N REASON`` comment says), and so
is each decision the page names (``# -> RECOGNISED`` ...); then the registry's final state.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway import tokens
from gateway.sdk import SubmissionReceipt

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "onboarding.md"
PORT = "50051"
BASH = shutil.which("bash") or "/bin/bash"
_FENCE = re.compile(r"^```sh onboarding\n(.*?)^```\n", re.DOTALL | re.MULTILINE)
_EXPECT = re.compile(r"\s+#\s*->\s*(?:exit (?P<status>\d+)\s*)?(?P<reason>[A-Z_]+)?\s*$")
_SERVING = re.compile(r"trustgw serving on \S+:(\d+) \(mutual TLS\)")


@dataclass(frozen=True)
class Step:
    """One command of the walkthrough and what the page says it answers."""

    command: str
    status: int
    reason: str | None


def walkthrough(text: str) -> list[Step]:
    """The commands of the page's ``sh onboarding`` blocks, continuation lines joined."""
    steps: list[Step] = []
    for block in _FENCE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            expect = _EXPECT.search(line)
            status, reason = 0, None
            if expect is not None:
                line = line[: expect.start()]
                status = int(expect["status"] or 0)
                reason = expect["reason"]
            steps.append(Step(" ".join(line.split()), status, reason))
    return steps


def test_the_page_has_the_walkthrough_this_test_expects() -> None:
    steps = walkthrough(PAGE.read_text())
    commands = [s.command for s in steps]
    assert sum(c.startswith("trustgw serve ") for c in commands) == 1
    assert any(PORT in c for c in commands if not c.startswith("trustgw serve "))
    for needed in ("keygen", "partner-file", "keyset", "revoke-key", "revocations",
                   "verify-statement", "publish", "code", "recognise"):  # fmt: skip
        assert any(c.startswith(f"trustgw partner-tools {needed} ") for c in commands), needed
    assert [s.reason for s in steps if s.reason] == [
        "RECOGNISED", "NOT_GREEN", "RECOGNISED", "RECOGNISED", "CODE_REVOKED", "KEY_REVOKED",
        "RECOGNISED", "KEY_UNKNOWN", "THRESHOLD_NOT_MET",
    ]  # fmt: skip


class Server:
    """``trustgw serve`` as the walkthrough's second terminal runs it (port 0)."""

    def __init__(self, command: str, env: dict[str, str], cwd: Path) -> None:
        argv = shlex.split(command.replace(f"127.0.0.1:{PORT}", "127.0.0.1:0"))
        self.process = subprocess.Popen(  # noqa: S603 - the page's own command
            argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True).start()
        threading.Thread(target=self._drain, args=(self.process.stderr,), daemon=True).start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.put(line)
        self.lines.put(None)

    def _drain(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.log.append(line)

    def port(self, deadline: float = 120) -> str:
        """The port from ``trustgw serving on HOST:PORT`` (waits for the line, not a time)."""
        while True:
            line = self.lines.get(timeout=deadline)
            if line is None:
                raise AssertionError(f"serve exited: {''.join(self.log)[-2000:]}")
            found = _SERVING.search(line)
            if found:
                return found.group(1)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=120)


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRUSTGW_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    yield tmp_path, env


@pytest.mark.integration
def test_the_onboarding_walkthrough_runs_as_written(
    workdir: tuple[Path, dict[str, str]],
) -> None:
    """docs/onboarding.md "The walkthrough": from nothing to recognised, rotated, revoked."""
    cwd, env = workdir
    server: Server | None = None
    port = PORT
    try:
        for step in walkthrough(PAGE.read_text()):
            if step.command.startswith("export "):
                name, _, value = step.command.removeprefix("export ").partition("=")
                env[name] = value
                continue
            if step.command.startswith("trustgw serve "):
                server = Server(step.command, dict(env), cwd)
                port = server.port()
                continue
            command = step.command.replace(PORT, port)
            done = subprocess.run(  # noqa: S603 - the page's own command
                [BASH, "-c", command], cwd=cwd, env=env, capture_output=True, text=True,
                timeout=300,
            )  # fmt: skip
            said = f"$ {command}\n{done.stdout}{done.stderr}"
            assert done.returncode == step.status, said
            if step.reason is not None:
                shown = done.stdout.splitlines()[:1] + done.stderr.splitlines()[:1]
                assert any(
                    line.startswith((f"{step.reason}:", f"trustgw: {step.reason}:"))
                    for line in shown
                ), said
            if step.status == 0:
                assert "Traceback" not in done.stderr, said
        assert server is not None, "the walkthrough starts no gateway"
        argv = ["partner", "show", "--data-dir", "gw", "110000", "--json"]
        shown = subprocess.run(  # noqa: S603
            [sys.executable, "-m", "gateway.cli", *argv],
            cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=True,
        ).stdout  # fmt: skip
    finally:
        status = server.stop() if server is not None else 0
    assert status == 0, "".join(server.log)[-2000:] if server else ""
    region = json.loads(shown)
    assert (region["keyset_version"], region["threshold"], region["anchors"]) == (3, 2, 3)
    assert region["anchors_generation"] == 2
    assert [k["kid"] for k in region["signing_keys"]] == ["bj-2027-06"]
    assert (region["revoked_codes"], region["revoked_holders"]) == (1, 0)
    # --receipt-out kept the gateway's signed receipt of key set 1, verifiable offline.
    receipt = cwd / "bj" / "receipt-keyset-1.json"
    if "attestation" in SubmissionReceipt.__dataclass_fields__:  # a gateway that signs receipts
        exported = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "keys", "export", "--data-dir", "gw",
             "--out", "trust.json"],
            cwd=cwd, env={**env, "TRUSTGW_PASSPHRASE_FILE": "gw-passphrase"},  # the operator's
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert exported.returncode == 0, exported.stderr
        trust = tokens.GatewayTrust.from_json((cwd / "trust.json").read_bytes())
        signed = tokens.Attestation.from_json(receipt.read_bytes())
        verify = tokens.verify_receipt  # type: ignore[attr-defined,unused-ignore]
        signed_at = datetime.fromtimestamp(json.loads(signed.payload)["iat"], UTC)
        claims = verify(signed, trust, signed_at)  # valid from the second it was signed
        assert (claims["kind"], claims["region"], claims["version"]) == ("keyset", "110000", 1)
        assert claims["keys_added"] == ["bj-2026-12"]
    else:  # nothing signed, nothing written
        assert not receipt.exists()
    # The private keys the walkthrough made are encrypted, 0600; the passphrases never leave.
    for key in (cwd / "bj").glob("*.key"):
        assert key.stat().st_mode & 0o077 == 0
        assert json.loads(key.read_text())["encrypted"] is True
