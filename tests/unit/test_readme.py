"""The README stays a user's document that agrees with the code:

* its "Spec reference" lists exactly the fields of the spec model (``include/mlops/domain/spec.py``,
  walked recursively), each with a type, its real default and a meaning;
* it holds no measurement trail: no commit hash, no calendar date of a run, no machine name (those
  belong in benchmarks/README.md, beside the measurement they identify);
* every relative link of the README and of the documents it links to (docs/, benchmarks/) points
  to a file that exists and, for a ``#fragment``, to a heading of that file.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import pytest
import yaml
from pydantic import BaseModel, TypeAdapter

from include.mlops.domain.spec import Spec

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md"]

#: The year of the demo data: its dates (2013-06-30) are examples, not the dates of a run.
DATA_YEAR = 2013


# -- the spec reference ---------------------------------------------------------------------------
class Field(typing.NamedTuple):
    annotation: Any
    required: bool
    default: Any


def _strip_optional(annotation: Any) -> Any:
    """``X | None`` -> ``X`` (a field that may be empty documents ``null`` as its default)."""
    if typing.get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _model_in(annotation: Any) -> tuple[str, type[BaseModel]] | None:
    """The model a field holds, and how its path goes on: ``.`` (a section), ``[].`` (a list of
    them) or ``.<key>.`` (a map of them)."""
    annotation = _strip_optional(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return ".", annotation
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is list and args and isinstance(args[0], type) and issubclass(args[0], BaseModel):
        return "[].", args[0]
    if origin is dict and len(args) == 2 and isinstance(args[1], type) and issubclass(args[1], BaseModel):
        return ".<key>.", args[1]
    return None


def spec_fields(model: type[BaseModel] = Spec, prefix: str = "") -> dict[str, Field]:
    """Every field of the spec model by its dotted path (``features[].name``,
    ``monitoring.drift_overrides.<key>.method``), sections included."""
    found: dict[str, Field] = {}
    for name, info in model.model_fields.items():
        path = prefix + name
        required = info.is_required()
        found[path] = Field(info.annotation, required, None if required else info.get_default(call_default_factory=True))
        inner = _model_in(info.annotation)
        if inner:
            joint, sub = inner
            found.update(spec_fields(sub, path + joint))
    return found


def _section(text: str, title: str) -> str:
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def _cells(row: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", row.strip().strip("|"))]


def documented_fields(text: str) -> dict[str, list[str]]:
    """Rows of the README's spec reference: path -> [type, default, meaning]; a ``<placeholder>``
    segment of a path is read as ``<key>``."""
    rows: dict[str, list[str]] = {}
    for line in _section(text, "Spec reference").splitlines():
        if not line.startswith("| `"):
            continue
        cells = _cells(line)
        path = re.sub(r"<[^>]+>", "<key>", cells[0].strip("`"))
        assert path not in rows, f"{path} is documented twice"
        assert len(cells) == 4, f"{path}: expected 4 cells (field, type, default, meaning), got {cells}"
        rows[path] = cells[1:]
    return rows


def _literals(annotation: Any) -> list[Any]:
    annotation = _strip_optional(annotation)
    if typing.get_origin(annotation) is Literal:
        return list(typing.get_args(annotation))
    return []


def test_the_spec_model_walk_finds_nested_fields():
    fields = spec_fields()
    for path in ("name", "features[].max_null_fraction", "checks[].reason_code", "monitoring.drift_overrides.<key>.threshold"):
        assert path in fields
    assert fields["name"].required and not fields["training"].required


def test_spec_reference_lists_exactly_the_spec_model_fields():
    model, documented = spec_fields(), documented_fields(README.read_text())
    missing = sorted(set(model) - set(documented))
    unknown = sorted(set(documented) - set(model))
    assert not missing, f"fields of the spec model missing from the README's spec reference: {missing}"
    assert not unknown, f"the README's spec reference documents fields the spec model does not have: {unknown}"


@pytest.mark.parametrize("path", sorted(spec_fields()))
def test_spec_reference_row_states_type_default_and_meaning(path):
    field = spec_fields()[path]
    documented = documented_fields(README.read_text())
    if path not in documented:
        pytest.skip("reported by test_spec_reference_lists_exactly_the_spec_model_fields")
    type_cell, default_cell, meaning = documented[path]
    assert type_cell and meaning, f"{path}: the type and the meaning must be written"
    for value in _literals(field.annotation):
        assert str(value) in type_cell, f"{path}: the type cell does not name the allowed value {value!r}"
    if field.required:
        assert default_cell == "required", f"{path} is required; the README says {default_cell!r}"
        return
    written = re.fullmatch(r"`(.*)`", default_cell)
    assert written, f"{path}: the default must be `<YAML>` (or 'required'), got {default_cell!r}"
    value = TypeAdapter(field.annotation).validate_python(yaml.safe_load(written.group(1)), strict=True)
    assert value == field.default, f"{path}: the README says {written.group(1)}, the spec model's default is {field.default!r}"


# -- no measurement trail in the README ------------------------------------------------------------
_HEX = re.compile(r"(?<![0-9A-Za-z_])[0-9a-fA-F]{7,40}(?![0-9A-Za-z_])")
_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?"
_DATES = [
    re.compile(r"(?<!\d)((?:19|20)\d\d)-[01]\d-[0-3]\d(?!\d)"),  # 2026-11-27, 2026-11-27T16:11
    re.compile(r"(?<!\d)((?:19|20)\d\d)[01]\d[0-3]\dT\d{4,6}Z?(?!\d)"),  # 20261127T014916Z (result files)
    re.compile(rf"(?i)\b{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+((?:19|20)\d\d)\b"),  # Nov 27, 2026
    re.compile(rf"(?i)\b\d{{1,2}}(?:st|nd|rd|th)?\s+{_MONTH}\s+((?:19|20)\d\d)\b"),  # 27 November 2026
]
_TIME_OF_RUN = re.compile(r"(?i)\b[0-2]?\d:[0-5]\d(?::[0-5]\d)?\s*(?:UTC|GMT|CET|CEST|[ap]m)\b")
_MACHINE = re.compile(
    r"(?i)\b(?:xeon|epyc|ryzen|threadripper|opteron|graviton|neoverse|intel|amd|apple\s+m\d|core\s+i[3579]|[0-9.]+\s*ghz)\b"
)


def _commits() -> list[str]:
    """Every commit of the repository (empty without git or outside a clone)."""
    if not shutil.which("git") or not (ROOT / ".git").exists():
        return []
    out = subprocess.run(["git", "rev-list", "--all"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    return out.stdout.split() if out.returncode == 0 else []


def commit_hashes(text: str, commits: list[str]) -> list[str]:
    """Tokens of 7-40 hex digits that look like a commit hash (digits and letters mixed, as git's
    abbreviations nearly always are) or that abbreviate a commit of this repository. Plain numbers
    (1000000) are numbers."""
    found = []
    for token in _HEX.findall(text):
        low = token.lower()
        if low.isdigit():
            continue
        if any(c.isdigit() for c in low) or any(c.startswith(low) for c in commits):
            found.append(token)
    return found


def run_dates(text: str) -> list[str]:
    found = [m.group(0) for pattern in _DATES for m in pattern.finditer(text) if int(m.group(1)) != DATA_YEAR]
    return found + _TIME_OF_RUN.findall(text)


def test_the_trail_detectors_catch_what_they_should_and_spare_the_demo_data():
    assert commit_hashes("runs of f6f5d85 and 3b78b56", []) == ["f6f5d85", "3b78b56"]
    assert commit_hashes("a 40-char 0123456789abcdef0123456789abcdef01234567 too", []) != []
    assert commit_hashes("1048576 bytes, 1000000 rows, a decade, effaced, e2e, sha256", []) == []
    assert commit_hashes("the fix in deadbeef", ["deadbeefcafe" + "0" * 28]) == ["deadbeef"]
    assert run_dates("replay 2013-06-30 and 2013-01-01T09:00:00; events of 2013") == []
    assert run_dates("measured on 2026-11-27, raw file serving-20261127T014916Z.json") == ["2026-11-27", "20261127T014916Z"]
    assert run_dates("on Nov 27, 2026; 27 November 2026; at 16:11 UTC") == ["Nov 27, 2026", "27 November 2026", "16:11 UTC"]
    assert _MACHINE.findall("an Intel Xeon @ 2.50GHz, then an AMD EPYC") != []
    assert _MACHINE.findall("amd64 wheels on a 2-core machine, a core idea") == []


def test_readme_holds_no_commit_hash():
    assert commit_hashes(README.read_text(), _commits()) == []


def test_readme_holds_no_date_of_a_run():
    assert run_dates(README.read_text()) == []


def test_readme_holds_no_machine_name():
    assert _MACHINE.findall(README.read_text()) == []


# -- links --------------------------------------------------------------------------------------
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def _prose(text: str) -> str:
    """The text without fenced code blocks and inline code (brackets there are not links)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file (lower case, punctuation dropped, spaces to -)."""
    found = set()
    for line in re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S).splitlines():
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            title = heading.group(1).replace("`", "").lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


def test_anchors_follow_githubs_rule(tmp_path):
    doc = tmp_path / "d.md"
    doc.write_text("# The demo's wall time (`make demo`)\n## Security as it is today\n```\n# not a heading\n```\n")
    assert anchors(doc) == {"the-demos-wall-time-make-demo", "security-as-it-is-today"}


@pytest.mark.parametrize("doc", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_to_an_existing_file(doc):
    broken = []
    for target in _LINK.findall(_prose(doc.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, flags=re.I):  # https:, mailto:
            continue
        path, _, fragment = target.partition("#")
        resolved = (doc.parent / path).resolve() if path else doc
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            broken.append(f"{target}: no heading #{fragment} in {resolved.relative_to(ROOT)}")
    assert not broken, f"{doc.relative_to(ROOT)} has broken links: {broken}"


def test_readme_links_to_every_document_of_docs():
    linked = {t.partition("#")[0] for t in _LINK.findall(_prose(README.read_text()))}
    unlinked = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if f"docs/{p.name}" not in linked]
    assert not unlinked, f"README does not link {unlinked}"
