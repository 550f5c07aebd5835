"""The switch that makes the shared conformance vectors required (``TRUSTGW_REQUIRE_CONFORMANCE``).

Without the vectors a developer's run skips their tests and says why; CI (``.ci/run``) sets the
switch, and then every one of those skips is a failure instead, so a CI run that lost the vectors
cannot pass. Checked by running the real conformance tests in a child pytest against a directory
that does not exist. docs/conformance.md, "The public vectors".
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support.conformance import DIR_ENV, REQUIRE_ENV

pytestmark = pytest.mark.integration  # runs pytest in a subprocess (tests/support/tiers.py)

REPO = Path(__file__).resolve().parent.parent
FILES = ("tests/test_conformance.py", "tests/test_codecs_envelopes.py")


def run_conformance(vectors: Path, switch: str) -> tuple[int, dict[str, int], str]:
    """Exit status, outcome counts and output of ``pytest -m conformance`` over ``FILES``."""
    env = {**os.environ, DIR_ENV: str(vectors), REQUIRE_ENV: switch}
    done = subprocess.run(  # noqa: S603 - this interpreter, fixed arguments
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "conformance",
         *FILES],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    counts = {
        outcome.replace("errors", "error"): int(n)
        for n, outcome in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", summary)
    }
    return done.returncode, counts, done.stdout + done.stderr


Run = tuple[int, dict[str, int], str]


@pytest.fixture(scope="module")
def without_switch(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Run]:
    absent = tmp_path_factory.mktemp("vectors") / "absent"
    return absent, run_conformance(absent, "0")


def test_absent_vectors_are_skipped_without_the_switch(without_switch: tuple[Path, Run]) -> None:
    absent, (code, counts, out) = without_switch
    assert code == 0, out
    assert counts.get("skipped", 0) >= 8, out  # every case table and vector test of both files
    assert counts.get("passed", 0) == 0 and counts.get("error", 0) == 0, out
    assert f"{absent}/dcc is absent" in out and f"{absent}/shc is absent" in out


def test_absent_vectors_fail_with_the_switch(without_switch: tuple[Path, Run]) -> None:
    absent, (_, skipped, _) = without_switch
    code, counts, out = run_conformance(absent, "1")
    assert code == 1, out
    # exactly the tests that skipped without the switch now fail, none is left skipped
    assert counts.get("error", 0) + counts.get("failed", 0) == skipped["skipped"], out
    assert counts.get("skipped", 0) == 0, out
    assert f"{REQUIRE_ENV}=1 requires the vectors" in out


@pytest.mark.parametrize("value", ["yes", " 1"])
def test_a_misspelt_switch_is_a_usage_error_not_a_quiet_no(tmp_path: Path, value: str) -> None:
    code, _, out = run_conformance(tmp_path / "absent", value)
    assert code == pytest.ExitCode.USAGE_ERROR, out
    assert f"{REQUIRE_ENV} must be 0 or 1" in out
