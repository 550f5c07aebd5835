"""The ``trustgw pki`` and ``trustgw partner-tools`` commands the docs show run as written.

README.md ("Running a gateway", "Partners and the trust list") and docs/operations.md ("TLS
certificates", the ``sh tls`` block; "Testing recognition without the partner", the
``sh test-codes`` block). The one value replaced is the data directory ``/var/lib/trustgw``,
by a fresh ``trustgw init --dev`` directory; each command runs through ``main`` as the shell
would split it, in one working directory, and must exit 0. The onboarding walkthrough has its
own test (tests/test_onboarding_walkthrough.py).
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from cli_support import Ran, trustgw

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = "/var/lib/trustgw"


def block_lines(text: str, info: str) -> list[str]:
    """The command lines of the fenced blocks whose info string is ``info`` (comments cut)."""
    fence = re.compile(rf"^```{re.escape(info)}\n(.*?)^```\n", re.DOTALL | re.MULTILINE)
    lines = []
    for block in fence.findall(text):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def readme(prefix: str) -> list[str]:
    return [
        line
        for line in block_lines((ROOT / "README.md").read_text(), "sh")
        if line.startswith(prefix)
    ]


@pytest.fixture
def shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """Runs a documented line in ``tmp_path`` with ``/var/lib/trustgw`` a fresh data directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRUSTGW_PASSPHRASE_FILE", raising=False)
    monkeypatch.setenv("TRUSTGW_PASSPHRASE", "documented commands")
    data_dir = tmp_path / "gw"
    assert trustgw(capsys, "init", "--data-dir", str(data_dir), "--dev").status == 0

    def run(line: str) -> Ran:
        argv = shlex.split(line.replace(DATA_DIR, str(data_dir)))
        assert argv[0] == "trustgw", line
        ran = trustgw(capsys, *argv[1:])
        assert ran.status == 0, f"{line}\n{ran.out}{ran.err}"
        return ran

    run.data_dir = data_dir  # type: ignore[attr-defined]
    return run


def test_the_readme_pki_commands_run_as_written(shell) -> None:
    """README.md "Running a gateway": issue a server certificate with its names, list them."""
    lines = readme("trustgw pki ")
    assert any("--role server --host" in line for line in lines)
    listed = ""
    for line in lines:
        listed = shell(line).out
    assert "gw.internal,10.20.0.5" in listed and "verifier-checkpoint-1" in listed


def test_the_readme_partner_tools_commands_run_as_written(shell) -> None:
    """README.md "Partners and the trust list": keys, partner file, key set, check, test code."""
    lines = readme("trustgw partner-tools ")
    assert len(lines) >= 6
    for line in lines:
        shell(line)
    assert Path("green.txt").read_text().startswith("BJ1:")


def test_the_tls_certificates_section_runs_as_written(shell) -> None:
    """docs/operations.md "TLS certificates": the ``sh tls`` block, in order."""
    lines = block_lines((ROOT / "docs" / "operations.md").read_text(), "sh tls")
    assert {shlex.split(line)[2] for line in lines} == {
        "init", "issue", "renew", "list", "show", "revoke", "deny",
    }  # fmt: skip
    for line in lines:
        shell(line)
    denied = json.loads((shell.data_dir / "pki" / "denied.json").read_text())["denied"]
    assert [(e["name"], e["reason"]) for e in denied] == [
        ("verifier-checkpoint-2", "checkpoint lost"), (None, "leaked key"),
    ]  # fmt: skip


def test_testing_recognition_without_the_partner_runs_as_written(shell, capsys) -> None:
    """docs/operations.md "Testing recognition without the partner": ``sh test-codes``."""
    lines = block_lines((ROOT / "docs" / "operations.md").read_text(), "sh test-codes")
    outputs = [(line, shell(line).out) for line in lines]
    verdicts = [out for line, out in outputs if line.startswith("trustgw verify ")]
    assert [v.split(":")[0] for v in verdicts] == ["accept"] * 3
    assert "colour: red" in verdicts[1]
    late = trustgw(
        capsys, "verify", "--format", "120000", "--trust", "test-keys/test-tj-1.jwk", "tj-march.txt"
    )
    assert late.status == 1 and late.out.startswith("reject: CODE_EXPIRED")
