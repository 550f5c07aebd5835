"""The documentation as a contract: its sections, and the tests that name the section they pin.

The four contract pages (``docs/partners.md``, ``verifying.md``, ``trust-registry.md``,
``api.md``) are split into sections at their Markdown headings. A test names a section in one of
two ways, both read here from the test files' source (no import, no collection):

* a marker, ``@pytest.mark.doc('partners.md §1.3', 'api.md "Limits"')`` (also as a module's
  ``pytestmark``);
* its docstring, or its module's docstring, in the prose form the suite already uses:
  ``docs/partners.md §1.3``, ``docs/verifying.md, "When a signed output is valid"`` (several
  sections may follow one file name: ``docs/api.md, "Limits" and "Refused streams"``).

A reference is ``FILE §N`` (a numbered heading, ``§1.3`` is "### 1.3 …") or ``FILE "Heading"``
(the heading text without Markdown backticks starts with it, up to a word boundary). A quoted
label right after a ``§`` reference names a paragraph inside that section and is not a heading.

``python tests/doc_contract.py [--cases]`` prints the index: every section and the tests that pin
it (with ``--cases``, the ids of their parametrised cases: one rule each in the rule tables).
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
TESTS = ROOT / "tests"
CONTRACT = ("partners.md", "verifying.md", "trust-registry.md", "api.md")

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
_NUMBER = re.compile(r"^(\d{1,2}(?:\.\d{1,2})*)\.?\s")


@dataclass(frozen=True)
class Section:
    """One heading of a contract page and the text up to the next heading (its own body)."""

    page: str
    level: int
    title: str  # as written, Markdown included
    line: int
    body: str

    @property
    def plain(self) -> str:
        return self.title.replace("`", "")

    @property
    def number(self) -> str | None:
        match = _NUMBER.match(self.plain)
        return match.group(1) if match else None

    @property
    def label(self) -> str:
        """How a test names it: ``partners.md §1.3`` or ``api.md "Limits"``."""
        if self.number:
            return f"{self.page} §{self.number}"
        return f'{self.page} "{self.plain}"'

    @property
    def has_own_text(self) -> bool:
        return bool(self.body.strip())


def sections(page: str) -> list[Section]:
    """The sections of one contract page, in order (fenced code blocks are not headings)."""
    lines = (DOCS / page).read_text(encoding="utf-8").splitlines()
    found: list[tuple[int, str, int]] = []
    fenced = False
    for number, text in enumerate(lines, 1):
        if text.startswith("```"):
            fenced = not fenced
            continue
        match = None if fenced else _HEADING.match(text)
        if match:
            found.append((len(match.group(1)), match.group(2), number))
    result = []
    for index, (level, title, number) in enumerate(found):
        end = found[index + 1][2] - 1 if index + 1 < len(found) else len(lines)
        result.append(Section(page, level, title, number, "\n".join(lines[number:end])))
    return result


def all_sections() -> list[Section]:
    return [section for page in CONTRACT for section in sections(page)]


class UnknownSection(LookupError):
    """A reference that names no heading of the page."""


def resolve(reference: str, within: Iterable[Section] | None = None) -> Section:
    """The section a reference names (``partners.md §1.3``, ``api.md "Limits"``)."""
    match = re.fullmatch(r'\s*(?:docs/)?([\w-]+\.md),?\s+(§\s?\d+(?:\.\d+)*|".+")\s*', reference)
    if not match:
        raise UnknownSection(f"{reference!r}: not of the form 'PAGE §N' or 'PAGE \"Heading\"'")
    page, what = match.groups()
    if page not in CONTRACT:
        raise UnknownSection(f"{reference!r}: {page} is not a contract page {CONTRACT}")
    candidates = [s for s in (within or sections(page)) if s.page == page]
    if what.startswith("§"):
        number = what[1:].strip()
        hits = [s for s in candidates if s.number == number]
    else:
        wanted = what[1:-1].replace("`", "")
        hits = [
            s
            for s in candidates
            if s.plain.startswith(wanted)
            and (len(s.plain) == len(wanted) or not s.plain[len(wanted)].isalnum())
        ]
    if not hits:
        raise UnknownSection(f"{reference!r}: no such heading in docs/{page}")
    return hits[0]


# --- references in the tests' source --------------------------------------------------------

_PROSE = re.compile(
    r"(?:docs/)?(partners|verifying|trust-registry|api)\.md"
    r"((?:(?:\s*,\s*|\s+and\s+|\s*/\s*|\s+or\s+|\s+)(?:§\s?\d+(?:\.\d+)*|\"[^\"]{2,80}\"))+)"
)
_PART = re.compile(r"§\s?\d+(?:\.\d+)*|\"[^\"]{2,80}\"")


def prose_references(text: str) -> list[str]:
    """The section references in a docstring (white space normalised first)."""
    flat = " ".join(text.replace("\u201c", '"').replace("\u201d", '"').split())
    found = []
    for match in _PROSE.finditer(flat):
        page = match.group(1) + ".md"
        after_number = False
        for part in _PART.findall(match.group(2)):
            if part.startswith("§"):
                found.append(f"{page} §{part[1:].strip().rstrip('.')}")
                after_number = True
            elif not after_number:
                found.append(f"{page} {part}")
            # a quoted label right after a § names a paragraph of that section
    return found


@dataclass
class Pinning:
    """The references of one test function (its own and its module's)."""

    path: Path
    name: str
    line: int
    markers: list[str] = field(default_factory=list)
    prose: list[str] = field(default_factory=list)
    cases: list[str] = field(default_factory=list)  # the ids of its parametrised cases

    @property
    def node(self) -> str:
        return f"{self.path.relative_to(ROOT)}::{self.name}"

    @property
    def references(self) -> list[str]:
        return [*self.markers, *self.prose]


def _doc_marker_args(node: ast.expr) -> list[str] | None:
    """The string arguments of ``pytest.mark.doc(...)``, else None."""
    if not isinstance(node, ast.Call):
        return None
    func = node.func
    if not (isinstance(func, ast.Attribute) and func.attr == "doc"):
        return None
    if not (isinstance(func.value, ast.Attribute) and func.value.attr == "mark"):
        return None
    args = []
    for arg in node.args:
        if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
            raise ValueError(f"line {node.lineno}: pytest.mark.doc takes string literals only")
        args.append(arg.value)
    return args


def _module_markers(tree: ast.Module) -> list[str]:
    found: list[str] = []
    for statement in tree.body:
        if isinstance(statement, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "pytestmark" for t in statement.targets
        ):
            values = (
                statement.value.elts
                if isinstance(statement.value, ast.List | ast.Tuple)
                else [statement.value]
            )
            for value in values:
                found.extend(_doc_marker_args(value) or [])
    return found


def _case_ids(decorators: list[ast.expr]) -> list[str]:
    """The literal ``id=`` of every ``pytest.param`` in the function's parametrize decorators."""
    ids = []
    for decorator in decorators:
        if not (
            isinstance(decorator, ast.Call) and getattr(decorator.func, "attr", "") == "parametrize"
        ):
            continue
        for node in ast.walk(decorator):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "param":
                for keyword in node.keywords:
                    if keyword.arg == "id" and isinstance(keyword.value, ast.Constant):
                        ids.append(str(keyword.value.value))
    return ids


def contract_test_files() -> list[Path]:
    return sorted(p for p in TESTS.rglob("test_*.py") if ".venv" not in p.parts)


def collect(paths: Iterable[Path] | None = None) -> Iterator[Pinning]:
    """Every ``test_*`` function under tests/ with the sections it names."""
    for path in paths or contract_test_files():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        module_markers = _module_markers(tree)
        module_prose = prose_references(ast.get_docstring(tree) or "")
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            if not node.name.startswith("test"):
                continue
            markers = list(module_markers)
            for decorator in node.decorator_list:
                markers.extend(_doc_marker_args(decorator) or [])
            prose = module_prose + prose_references(ast.get_docstring(node) or "")
            cases = _case_ids(node.decorator_list)
            yield Pinning(path, node.name, node.lineno, markers, prose, cases)


def index() -> dict[str, list[Pinning]]:
    """Section label -> the tests that name it (sections no test names map to [])."""
    known = all_sections()
    table: dict[str, list[Pinning]] = {s.label: [] for s in known}
    for refs in collect():
        for reference in dict.fromkeys(refs.references):
            try:
                label = resolve(reference, known).label
            except UnknownSection:
                continue
            table[label].append(refs)
    return table


def main(argv: list[str] | None = None) -> int:
    """Print the index; ``--cases`` adds the ids of each test's parametrised cases."""
    verbose = "--cases" in (sys.argv[1:] if argv is None else argv)
    table = index()
    for section in all_sections():
        tests = table[section.label]
        print(f"{section.label}  ({len(tests)})")
        for refs in tests:
            print(f"    {refs.node}")
            if refs.cases and verbose:
                print(f"        cases: {', '.join(refs.cases)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
