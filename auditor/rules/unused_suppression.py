"""AA001: a suppression comment that suppresses nothing (ruff's RUF100)."""

from __future__ import annotations

from typing import Iterator

from allocaudit.auditor.rules.base import Invalid, Report, Rule, Valid
from allocaudit.auditor.analysis.sites import ModuleFacts


class UnusedSuppression(Rule):
    CODE = "AA001"
    NAME = "unused-suppression"
    SUMMARY = "a suppression comment of allocaudit's codes that suppresses nothing"
    # Off, as ruff's RUF100 is: whether a comment is used depends on the run's selection and
    # configuration (a `# noqa: AA102` is unused while AA102 is off), so a default scan or a
    # hook would fail commits over comments another configuration needs. Turn it on where
    # one configuration rules, to clean up after fixes: `--extend-select AA001`.
    DEFAULT = False
    EXPLAIN = """\
Why: a `# noqa: AA101`, `# allocaudit: ignore[AA101]` or `# allocaudit: file-ignore[AA101]`
left behind after the code it excused was fixed or moved hides the next finding on that
line or in that file without anyone deciding so. Only allocaudit's own codes are judged:
in `# noqa: E501, AA101` the E501 belongs to another tool, and a bare `# noqa` may serve
another linter, so neither is reported. A code whose rule is not enabled in this run, or
that is no allocaudit rule, is reported as such.

Fix: delete the comment, or the unused codes in it:

    ws = torch.empty(n, device="cuda")  # noqa: AA101     <- nothing here is AA101 any more

becomes

    ws = torch.empty(n, device="cuda")
"""
    VALID = (
        Valid("x = 1  # noqa\n"),
        Valid("x = 1  # noqa: E501\n"),
        Valid('s = "# noqa: AA101"\n'),
        Valid("x = 1  # noqa: AA001\n"),
    )
    INVALID = (
        Invalid("x = 1  # noqa: AA101  # expect\n", message="AA101"),
        Invalid("x = 1  # allocaudit: ignore  # expect\n"),
        Invalid("# allocaudit: file-ignore[AA205]  # expect\nx = 1\n", message="AA205"),
    )

    def check(self, facts: ModuleFacts) -> Iterator[Report]:
        """Nothing: the engine decides AA001, since it needs the comments (which `ast` drops)
        and what every other rule reported."""
        return iter(())
