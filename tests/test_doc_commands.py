"""Every ``trustgw`` command in README.md and docs/*.md is one the CLI takes as written.

The ``sh``/``console`` blocks of the README and of every page under docs/ are read, and each
``trustgw`` line in them is parsed by the real command line (``gateway.cli.build_parser``), with
only the values the README's convention says to replace ("Running a gateway": ``D`` the data
directory, words in capitals such as ``FILE`` or ``KID`` values of one's own, ``[…]`` optional,
``a|b`` a choice) filled in: a command, an option or a choice that the CLI does not have fails
here, naming the page and the line. The commands that can run on a fresh data directory as they
stand run too: tests/test_documented_commands.py (README's pki and partner-tools lines, the TLS
and test-code blocks of docs/operations.md), tests/test_onboarding_walkthrough.py, and below, the
stock output and backup blocks.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from cli_support import trustgw

from gateway.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(
    r"^[ \t]*```(?:sh|console)\b[^\n]*\n(.*?)^[ \t]*```", re.DOTALL | re.MULTILINE
)  # also the blocks indented in a list item
_TRUSTGW = re.compile(r"(?:^|&&\s*|\$\s+)(?:\S*/)?(trustgw\s.*)$")

# What the README's convention says to replace, with the value a test gives it. The data
# directory (D, /var/lib/trustgw, …) is a fresh `trustgw init --dev` one (the fixture).
VALUES = {
    "FILE": "file.json",
    "INPUT": "input.txt",
    "CARD": "card.txt",
    "KID": "K1",
    "TIME": "2026-03-11T08:00:00Z",
    "N": "7",
    "JOB": "0123456789abcdef",
    "BACKUP": "backup.tar.gz",
    "DIR": "some-dir",
    "URL": "postgresql://postgres@127.0.0.1:5432/x",
    "COUNT:HASH": "3:" + "0" * 64,
    "SIGNER.pem": "signer.pem",
    "JWKS": "jwks.json",
    "CRL": "crl.json",
    "KEYFILE": "key.jwk",
    "REGION_CODE": "110000",
    "CODE": "code.txt",
    "CODE...": "code.txt",
    "DECLARATION_ID": "SD" + "0" * 30,
    "VENUE_ID": "PL0123456789abcdef",
}
# The data directory: D, DATA_DIR, the README's /var/lib/trustgw, the walkthrough's gw.
DATA_DIRS = ("/var/lib/trustgw", "D", "DATA_DIR", "gw")


def documented() -> list[pytest.ParameterSet]:
    """Every ``trustgw`` line of every page's shell blocks, as (page, line) cases."""
    cases = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for block in _FENCE.findall(text):
            for raw in block.replace("\\\n", " ").splitlines():
                line = re.sub(r"\s+#\s.*$", "", raw).strip()
                match = _TRUSTGW.search(line)
                if match:
                    name = f"{page.name}:{match.group(1)[:60]}"
                    cases.append(pytest.param(page.name, match.group(1), id=name))
    return cases


def fill(line: str, data_dir: str) -> list[str]:
    """The argv of a documented line, its placeholders replaced (see the module docstring)."""
    line = re.sub(r"\$\([^)]*\)", "20261203T020000Z", line)  # $(date …) in a file name
    line = re.sub(r"\[([^\]]*)\]", r"\1", line)  # optional parts: checked too
    argv = []
    for word in shlex.split(line)[1:]:
        if word in ("...", "…"):  # "and more of the same"
            continue
        if word in DATA_DIRS:
            argv.append(data_dir)
            continue
        if "|" in word and not word.startswith(("'", '"')) and " " not in word:
            word = word.split("|")[0]  # a choice: the first
        argv.append(VALUES.get(word, word))
    return argv


def test_the_pages_have_commands() -> None:
    cases = documented()
    pages = {case.values[0] for case in cases}
    assert {"README.md", "operations.md", "stock-conversion.md", "onboarding.md"} <= pages
    assert len(cases) > 60


@pytest.mark.parametrize(("page", "line"), documented())
def test_every_documented_command_is_one_the_cli_takes(
    page: str, line: str, dev_data_dir: Path
) -> None:
    argv = fill(line, str(dev_data_dir))
    parser = build_parser()
    try:
        opts = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version
        assert exc.code in (0, None), f"{page}: {line}"
        return
    except Exception as exc:
        pytest.fail(f"{page}: `{line}` is not a command trustgw takes: {exc}")
    assert callable(getattr(opts, "func", None)), f"{page}: {line}"


def _block(page: str, heading: str) -> list[str]:
    """The ``trustgw`` lines of the shell blocks of one section of a page."""
    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    found = re.search(rf"^{re.escape(heading)}\b.*$", text, re.MULTILINE)
    assert found is not None, f"{page} has no heading {heading!r}"
    start = found.start()
    end = text.find("\n## ", start + len(heading))
    section = text[start : end if end > 0 else None]
    lines = []
    for block in _FENCE.findall(section + "\n"):
        for raw in block.splitlines():
            line = re.sub(r"\s+#\s.*$", "", raw).strip()
            if line.startswith("trustgw "):
                lines.append(line)
    return lines


def test_the_stock_output_and_backup_blocks_run_as_written(
    own_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """docs/stock-conversion.md "The output" and docs/operations.md "Backups": convert a file
    with --out and QR images, list the jobs, export the job, back up, restore; the values
    replaced are D, JOB (the job listed) and the backup's name."""
    from support.clock import REAL_NOW  # the command converts as of now (no --at)

    from bench.stock import sample_rows, write_csv

    monkeypatch.chdir(tmp_path)
    write_csv(tmp_path / "certificates.csv", sample_rows(5, REAL_NOW))
    data = str(own_data_dir)
    job = ""
    lines = _block("stock-conversion.md", "## The output")
    assert [shlex.split(line)[1] for line in lines] == ["convert-batch", "stock", "stock"]
    for line in lines:
        line = re.sub(r"\[([^\]]*)\]", r"\1", line).replace("JOB", job)
        ran = trustgw(capsys, *fill(line, data))
        assert ran.status == 0, f"{line}\n{ran.err}"
        if "stock jobs" in line:
            job = ran.json()[0]["job"][:12]
    images = sorted(p.suffix for p in (tmp_path / "qr").iterdir())
    assert images == [".png"] * 5 + [".svg"] * 5  # convert-batch's PNGs, the export's SVGs
    assert Path("codes.jsonl").read_text(encoding="utf-8").count("SD1:") == 5
    backup, restore = _block("operations.md", "## Backups")[:2]
    backup = backup.replace("/backup/", str(tmp_path) + "/")
    ran = trustgw(capsys, *fill(backup, data))
    assert ran.status == 0, ran.err
    (written,) = tmp_path.glob("trustgw-*.tar.gz")
    restore = restore.replace("/backup/trustgw-20261203T020000Z.tar.gz", str(written))
    restore = restore.replace("/var/lib/trustgw-restored", str(tmp_path / "restored"))
    ran = trustgw(capsys, *shlex.split(restore)[1:])
    assert ran.status == 0, ran.err
    assert (tmp_path / "restored" / "trustgw.db").is_file()


def test_the_declarations_block_runs_as_written(
    own_data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/operations.md "Arrival declarations": issue a declarant-channel certificate, show a
    stored declaration (DECLARATION_ID replaced by its id), count them."""
    import asyncio
    from datetime import date, timedelta

    from support.clock import T0

    from keys.personal import DeclarationRecord
    from keys.store import SQLiteStore

    ident = "SD" + "1" * 30

    async def declare() -> None:
        store = await SQLiteStore.open(own_data_dir / "trustgw.db")
        try:
            for n, day in enumerate((date(2026, 3, 9), date(2026, 3, 10))):
                await store.declare(
                    DeclarationRecord(
                        ident if n == 0 else "SD" + "2" * 30, f"h1-{n}", "d", "110000",
                        "province", day, "green", (), None, True, "SD1:x", T0,
                        T0 + timedelta(days=7), T0,
                    ),
                    T0,
                )  # fmt: skip
        finally:
            await store.close()

    asyncio.run(declare())
    lines = _block("operations.md", "## Arrival declarations")
    assert [shlex.split(line)[1] for line in lines] == ["pki"] + ["declarations"] * 4
    outputs = []
    for line in lines:
        ran = trustgw(capsys, *fill(line.replace("DECLARATION_ID", ident), str(own_data_dir)))
        assert ran.status == 0, f"{line}\n{ran.err}"
        outputs.append(ran.out)
    assert ident in outputs[1] and '"status": "current"' in outputs[2]
    assert outputs[3].split() == [
        "origin", "day", "count", "110000", "2026-03-09", "1", "110000", "2026-03-10", "1",
    ]  # fmt: skip
