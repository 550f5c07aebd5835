"""The contract pages and the tests that pin them: a machine-checked index (issue 8, "Also").

docs/partners.md, verifying.md, trust-registry.md and api.md are the contract: every section that
states a rule is named by at least one test (a ``pytest.mark.doc`` marker or the test's
docstring, see tests/doc_contract.py), and every name a test gives is a heading that exists, so
a renamed or renumbered section breaks the build instead of leaving a dangling reference.
``python tests/doc_contract.py`` prints the whole index.
"""

from __future__ import annotations

import ast
import tomllib

import pytest
from doc_contract import (
    CONTRACT,
    ROOT,
    UnknownSection,
    all_sections,
    collect,
    contract_test_files,
    index,
    prose_references,
    resolve,
    sections,
)

# Sections with text of their own that state no rule of their own, and why. Everything else
# with text under a heading must be pinned.
NO_RULE_OF_ITS_OWN: dict[str, str] = {}


def test_every_marker_names_an_existing_heading() -> None:
    known = all_sections()
    bad = []
    for refs in collect():
        for reference in refs.markers:
            try:
                resolve(reference, known)
            except UnknownSection as exc:
                bad.append(f"{refs.node}: {exc}")
    assert not bad, "\n".join(bad)


def test_every_section_a_docstring_names_exists() -> None:
    known = all_sections()
    bad = []
    for refs in collect():
        for reference in refs.prose:
            try:
                resolve(reference, known)
            except UnknownSection as exc:
                bad.append(f"{refs.node}: {exc}")
    assert not bad, "\n".join(bad)


def test_every_section_that_states_a_rule_is_pinned_by_a_test() -> None:
    table = index()
    unpinned = [
        f"docs/{s.page}:{s.line}  {s.label}"
        for s in all_sections()
        if s.has_own_text and s.label not in NO_RULE_OF_ITS_OWN and not table[s.label]
    ]
    assert not unpinned, "sections no test names:\n" + "\n".join(unpinned)


def test_the_exemptions_name_existing_sections_without_tests() -> None:
    labels = {s.label for s in all_sections()}
    table = index()
    for label, why in NO_RULE_OF_ITS_OWN.items():
        assert label in labels, label
        assert why
        assert not table[label], f"{label} is pinned by a test now: drop its exemption"


def test_the_doc_marker_is_registered() -> None:
    """``--strict-markers`` refuses an unregistered marker; the registration says the form."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    markers = config["tool"]["pytest"]["ini_options"]["markers"]
    assert any(m.startswith("doc(") for m in markers)


def test_markers_take_string_literals_only() -> None:
    """A computed reference could not be checked without running the test module."""
    for path in contract_test_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "doc"
                and isinstance(node.func.value, ast.Attribute)
                and node.func.value.attr == "mark"
            ):
                assert node.args, f"{path}:{node.lineno}: pytest.mark.doc() names no section"
                for arg in node.args:
                    assert isinstance(arg, ast.Constant) and isinstance(arg.value, str), (
                        f"{path}:{node.lineno}"
                    )


# --- the index's own reading of the pages and the references ---------------------------------


@pytest.mark.parametrize("page", CONTRACT)
def test_every_contract_page_has_sections_and_unique_labels(page: str) -> None:
    found = sections(page)
    assert len(found) >= 5
    labels = [s.label for s in found]
    assert len(labels) == len(set(labels)), "two headings of one page read the same"
    for section in found:
        assert resolve(section.label).line == section.line


@pytest.mark.parametrize(
    ("reference", "line_starts"),
    [
        pytest.param("partners.md §1.3", "### 1.3 Signing keys", id="numbered"),
        pytest.param("partners.md §7", "## 7. Known-answer vectors", id="numbered-top"),
        pytest.param('api.md "Limits"', "## Limits", id="quoted"),
        pytest.param('api.md "Recognise"', "### `Recognise(", id="quoted-word-boundary"),
        pytest.param('api.md "RecogniseStream"', "### `RecogniseStream(", id="quoted-longer"),
        pytest.param('partners.md "110000 Beijing"', "### 110000 Beijing", id="region"),
        pytest.param("docs/trust-registry.md, §9", "## 9. The trust list", id="prose-form"),
    ],
)
def test_a_reference_names_its_heading(reference: str, line_starts: str) -> None:
    section = resolve(reference)
    text = (ROOT / "docs" / section.page).read_text(encoding="utf-8").splitlines()
    assert text[section.line - 1].startswith(line_starts)


@pytest.mark.parametrize(
    "reference",
    [
        pytest.param("partners.md §1.9", id="no-such-number"),
        pytest.param('api.md "Limitless"', id="no-such-heading"),
        pytest.param('api.md "Recog"', id="not-at-a-word-boundary"),
        pytest.param("operations.md §1", id="not-a-contract-page"),
        pytest.param("partners.md", id="no-section"),
        pytest.param("partners.md 1.3", id="no-section-sign"),
    ],
)
def test_a_reference_to_no_heading_is_refused(reference: str) -> None:
    with pytest.raises(UnknownSection):
        resolve(reference)


def test_docstring_references_in_the_suites_prose_forms() -> None:
    text = """docs/api.md, "The order of checks on every call", "RPC errors",
    "Limits" and "Refused streams". Pins docs/partners.md §1.3 ("Each region signs ...") and
    docs/trust-registry.md §4 / §11; docs/trust-registry.md §13 "Times" is a paragraph."""
    assert prose_references(text) == [
        'api.md "The order of checks on every call"',
        'api.md "RPC errors"',
        'api.md "Limits"',
        'api.md "Refused streams"',
        "partners.md §1.3",
        "trust-registry.md §4",
        "trust-registry.md §11",
        "trust-registry.md §13",
    ]
