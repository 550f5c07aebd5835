"""Where the shared public conformance vectors are, and what their absence means.

The vectors (``shared/conformance``) are never copied into the repository: they are found at
``$TRUSTGW_CONFORMANCE_DIR``, else at ``../shared/conformance`` beside the clone. A developer
without them gets skips that say so; CI sets ``TRUSTGW_REQUIRE_CONFORMANCE=1`` (``.ci/run``),
which turns each of those skips into a failure, so that missing vectors cannot pass silently.

Tests mark what needs a vector set with :func:`needs` (a test) or :func:`absent` (the single
parameter standing for a set's cases); ``conftest.py`` then skips or fails them at setup.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

DIR_ENV = "TRUSTGW_CONFORMANCE_DIR"
REQUIRE_ENV = "TRUSTGW_REQUIRE_CONFORMANCE"
MARKER = "conformance_absent"


def conformance_dir() -> Path:
    """``$TRUSTGW_CONFORMANCE_DIR``, else ``shared/conformance`` beside the clone."""
    env = os.environ.get(DIR_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "conformance"


ROOT = conformance_dir()


def required() -> bool:
    """Whether absent vectors fail (``TRUSTGW_REQUIRE_CONFORMANCE=1``) instead of skipping.

    Raises ``pytest.UsageError`` for any value but unset, empty, ``0`` or ``1``: a misspelt
    switch must not quietly mean "not required".
    """
    value = os.environ.get(REQUIRE_ENV, "")
    if value not in ("", "0", "1"):
        raise pytest.UsageError(f"{REQUIRE_ENV} must be 0 or 1, not {value!r}")
    return value == "1"


def index(name: str) -> Path:
    """The ``cases.json`` of one vector set (``dcc``, ``shc``); it may not exist."""
    return ROOT / name / "cases.json"


def _reason(name: str) -> str:
    return f"{ROOT / name} is absent (shared/conformance not beside the clone, nor ${DIR_ENV})"


def needs(name: str) -> pytest.MarkDecorator:
    """A mark for a test that reads the vector set ``name``: nothing when it is there."""
    if index(name).is_file():
        return pytest.mark.conformance
    return getattr(pytest.mark, MARKER)(_reason(name))


def absent(name: str) -> list[Any]:
    """The one parameter that stands for the cases of an absent vector set ``name``."""
    return [pytest.param(None, id=f"{name}-absent", marks=needs(name))]


def check(item: pytest.Item) -> None:
    """At setup: skip, or with the switch fail, a test marked as needing absent vectors."""
    marker = item.get_closest_marker(MARKER)
    if marker is None:
        return
    reason = str(marker.args[0])
    if required():
        pytest.fail(f"{reason}; {REQUIRE_ENV}=1 requires the vectors", pytrace=False)
    pytest.skip(reason)
