"""tools/lowest_constraints.py: the lowest-versions CI step pins every dependency to its floor."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "lowest_constraints", ROOT / "tools" / "lowest_constraints.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("lowest_constraints", module)
    spec.loader.exec_module(module)
    return module


TOOL = _tool()


def test_every_dependency_of_the_project_is_pinned_to_its_floor() -> None:
    lines = TOOL.constraints()
    assert "cbor2==6.1.5" in lines
    assert "grpcio-tools==1.85.1" in lines  # an exact pin is its own floor
    assert "grpcio==1.85.1" in lines  # ">=1.85.1,<2": the ceiling is not a floor
    assert len(lines) == len({line.split("==")[0] for line in lines})


@pytest.mark.parametrize(
    ("requirement", "floor"),
    [
        pytest.param("cbor2>=6.1.5", ("cbor2", "6.1.5"), id="floor"),
        pytest.param("grpcio>=1.85.1,<2", ("grpcio", "1.85.1"), id="floor-and-ceiling"),
        pytest.param("pkg[extra] == 2.0", ("pkg", "2.0"), id="extra-and-pin"),
        pytest.param("pkg>=1; python_version<'4'", ("pkg", "1"), id="marker"),
    ],
)
def test_a_floor_is_read_from_each_requirement(requirement: str, floor: tuple[str, str]) -> None:
    assert TOOL.floor(requirement) == floor


@pytest.mark.parametrize("requirement", ["pkg", "pkg<2", "pkg>=1,>=2", "pkg~=1.2", "pkg>1"])
def test_a_requirement_without_one_floor_is_an_error(requirement: str) -> None:
    with pytest.raises(ValueError, match="no single lowest version"):
        TOOL.floor(requirement)
