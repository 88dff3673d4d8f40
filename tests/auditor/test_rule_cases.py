"""Every rule's own VALID and INVALID cases, one test each (the rule module holds them)."""

import pytest

from allocaudit.auditor.engine import scan_source
from allocaudit.auditor.rules import ALL_RULES
from allocaudit.auditor.settings import Settings


def _cases(kind):
    return list(_iter_cases(kind))


def _iter_cases(kind):
    for rule in ALL_RULES:
        for i, source in enumerate(getattr(rule, kind)):
            yield pytest.param(rule, source, id=f"{rule.CODE}-{kind.lower()}-{i}")


def _lines(rule, source):
    findings = scan_source("case.py", source.encode(), Settings(select=(rule.CODE,)))
    return sorted(f.line for f in findings if f.code == rule.CODE)


def test_every_rule_has_cases_and_docs():
    for rule in ALL_RULES:
        assert rule.VALID and rule.INVALID, rule.CODE
        assert rule.SUMMARY and "\n" not in rule.SUMMARY, rule.CODE
        assert "Why:" in rule.EXPLAIN and "Fix:" in rule.EXPLAIN, rule.CODE


@pytest.mark.parametrize("rule, source", _cases("VALID"))
def test_valid_case_is_not_flagged(rule, source):
    assert _lines(rule, source) == []


@pytest.mark.parametrize("rule, source", _cases("INVALID"))
def test_invalid_case_flags_exactly_the_marked_lines(rule, source):
    expected = [n for n, line in enumerate(source.splitlines(), 1) if line.rstrip().endswith("# expect")]
    assert expected, "an INVALID case must mark at least one line with `# expect`"
    assert _lines(rule, source) == expected
