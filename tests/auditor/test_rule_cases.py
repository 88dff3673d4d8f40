"""Every rule's own Valid and Invalid cases, one test each (the rule module holds them).

Each case is scanned as a real scan scans a file (`scan_files`: the text prefilter built
from the rules' hints, the tree's call graph, the suppressions), so a rule whose hints miss
the bytes of its own cases fails here, not only in the field."""

from pathlib import Path

import pytest

from allocaudit.auditor import rules
from allocaudit.auditor.app.engine import scan_files
from allocaudit.auditor.rules import ALL_RULES, FixAvailability
from allocaudit.auditor.rules.base import Invalid, Valid
from allocaudit.auditor.settings import Settings
from allocaudit.rewrites.fix import fix_source


def _cases(kind):
    return [
        pytest.param(rule, case, id=f"{rule.CODE}-{kind.lower()}-{i}")
        for rule in ALL_RULES
        for i, case in enumerate(getattr(rule, kind))
    ]


def _assert_hints_let_through(rule, case):
    """By the rule's own hints, not by another rule's that happen to match."""
    if rule.HINTS:
        assert any(hint in case.code.encode() for hint in rule.HINTS), f"none of {rule.CODE}'s HINTS is in this case"


def _findings(rule, path, code, all_sizes=False):
    path.write_text(code, encoding="utf-8")
    result = scan_files([(str(path), Settings(select=(rule.CODE,), all_sizes=all_sizes))], cache_dir=None, jobs=1)
    assert result.errors == []
    return [f for f in result.findings if f.code == rule.CODE]


def test_every_module_of_the_rules_package_is_a_rule_the_scan_runs():
    folder = Path(rules.__file__).parent
    modules = {p.stem for p in folder.glob("*.py")} - {"__init__", "base"}
    assert {rule.__module__.rpartition(".")[2] for rule in ALL_RULES} == modules


def test_every_rule_has_cases_and_docs():
    for rule in ALL_RULES:
        assert rule.VALID and rule.INVALID, rule.CODE
        assert all(isinstance(c, Valid) for c in rule.VALID) and all(isinstance(c, Invalid) for c in rule.INVALID), rule.CODE
        assert rule.SUMMARY and "\n" not in rule.SUMMARY, rule.CODE
        assert "Why:" in rule.EXPLAIN and "Fix:" in rule.EXPLAIN, rule.CODE


@pytest.mark.parametrize("rule, case", _cases("VALID"))
def test_valid_case_is_not_flagged(rule, case, tmp_path):
    _assert_hints_let_through(rule, case)  # a case the prefilter skips would test nothing of the rule
    assert _findings(rule, tmp_path / "case.py", case.code) == []


@pytest.mark.parametrize("rule, case", _cases("INVALID"))
def test_invalid_case_flags_exactly_the_marked_lines_as_stated(rule, case, tmp_path):
    path = tmp_path / "case.py"  # a folder without __init__.py: the fix's cache names start with "case."
    expected = [n for n, line in enumerate(case.code.splitlines(), 1) if line.rstrip().endswith("# expect")]
    assert expected, "an Invalid case must mark at least one line with `# expect`"
    _assert_hints_let_through(rule, case)
    findings = _findings(rule, path, case.code, case.all_sizes)
    assert [f.line for f in findings] == expected
    for f in findings:
        if case.message is not None:
            assert case.message in f.message
        if case.site_class is not None:
            assert f.site_class == case.site_class
        if case.fixable is not None:
            assert f.fixable == case.fixable
        if case.reason is not None:
            assert f.not_fixable_reason == case.reason
        if case.fix_safety is not None:
            assert f.fix_safety == case.fix_safety
        if case.unsafe_reason is not None:
            assert f.unsafe_reason == case.unsafe_reason
        if rule.FIX is FixAvailability.NONE:
            assert not f.fixable and f.not_fixable_reason is None, "a rule without a fix marks nothing fixable"
    if case.fix is not None:
        fixed = fix_source(str(path), case.code, findings)
        assert (case.code if fixed.text is None else fixed.text) == case.fix
