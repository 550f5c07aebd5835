"""Print a pip constraints file that pins every dependency of pyproject.toml to its floor.

    python tools/lowest_constraints.py > lowest.txt
    pip install -c lowest.txt -e '.[test]'

Every requirement of ``[project] dependencies`` and of the ``test`` extra must state its lowest
allowed version (``>=X`` or ``==X``): one without is an error, so that CI (``.ci/run``) really
tests the oldest versions a user may install. The floors are read from pyproject.toml itself and
cannot drift from it.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*([^;]*)(;.*)?$")
_FLOOR = re.compile(r"^(>=|==)\s*([0-9][0-9A-Za-z.+!-]*)$")


def floor(requirement: str) -> tuple[str, str]:
    """``(name, lowest version)`` of one requirement; ``ValueError`` when it states no floor."""
    match = _REQUIREMENT.match(requirement)
    if match is None:
        raise ValueError(f"cannot read the requirement {requirement!r}")
    name, specifiers = match.group(1), match.group(3)
    floors = [
        found.group(2)
        for part in specifiers.split(",")
        if (found := _FLOOR.match(part.strip())) is not None
    ]
    if len(floors) != 1:
        raise ValueError(f"{requirement!r} states no single lowest version (>=X or ==X)")
    return name, floors[0]


def constraints(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """One ``name==floor`` line per requirement of the project and of its ``test`` extra."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    requirements = list(project["dependencies"]) + list(
        project.get("optional-dependencies", {}).get("test", [])
    )
    return [f"{name}=={version}" for name, version in map(floor, requirements)]


def main() -> int:
    try:
        print("\n".join(constraints()))
    except ValueError as exc:
        print(f"lowest_constraints: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
