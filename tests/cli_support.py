"""Running ``trustgw`` in process and reading its one-line errors (fixtures: conftest.py)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import pytest

from gateway.cli import main

ONE_LINE = re.compile(r"trustgw: [A-Z][A-Z0-9_]*: \S.*")


@dataclass(frozen=True)
class Ran:
    """The outcome of one ``trustgw`` run."""

    status: int
    out: str
    err: str

    @property
    def reason(self) -> str | None:
        """The reason of a one-line error, or None when stderr is not exactly one such line."""
        lines = self.err.splitlines()
        if len(lines) != 1 or ONE_LINE.fullmatch(lines[0]) is None:
            return None
        return lines[0].split(": ", 2)[1]

    def json(self) -> Any:
        return json.loads(self.out)


def trustgw(capsys: pytest.CaptureFixture[str], *argv: str) -> Ran:
    """Run ``main(argv)`` in process; return its exit status, stdout and stderr."""
    capsys.readouterr()
    status = main(list(argv))
    out, err = capsys.readouterr()
    return Ran(status, out, err)


def one_line_error(ran: Ran) -> str:
    """Assert ``ran`` failed with exactly one ``trustgw: REASON: message`` line; return REASON."""
    assert ran.status != 0, f"exit 0: {ran.out[:300]!r}"
    assert "Traceback" not in ran.err, ran.err
    reason = ran.reason
    assert reason is not None, f"stderr is not one 'trustgw: REASON: message' line: {ran.err!r}"
    return reason
