"""End-to-end fixtures (TorchFix style): each fixtures/scan/NAME.py is scanned with every
rule on, and the rows `line:col CODE site_class [*]` (`[!]`: an unsafe fix) must equal
NAME.expected."""

from pathlib import Path

import pytest

from allocaudit.auditor.app.engine import scan_source
from allocaudit.auditor.settings import Settings

FIXTURES = Path(__file__).parent / "fixtures" / "scan"


def _row(f):
    mark = {"safe": " [*]", "unsafe": " [!]"}.get(f.fix_safety, "")
    return f"{f.line}:{f.col} {f.code} {f.site_class}{mark}"


@pytest.mark.parametrize("source", sorted(FIXTURES.glob("*.py")), ids=lambda p: p.stem)
def test_fixture_findings_match_expectation(source):
    findings = scan_source(str(source), source.read_bytes(), Settings(select=("ALL",)))
    expected = source.with_suffix(".expected").read_text().splitlines()
    assert [_row(f) for f in findings] == expected
