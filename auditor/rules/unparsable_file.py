"""AA999: a file that is not readable as Python source (ruff's E999)."""

from __future__ import annotations

from typing import Iterator

from allocaudit.auditor.rules.base import Invalid, Report, Rule, Valid
from allocaudit.auditor.analysis.sites import ModuleFacts


class UnparsableFile(Rule):
    CODE = "AA999"
    NAME = "unparsable-file"
    SUMMARY = "the file is not readable as Python source (syntax error, encoding, binary)"
    # Off: by default such a file is an error row and the scan exits 2. `--exit-zero` turns it
    # on, so that a file that does not parse is reported as a finding and the exit is 0, as
    # ruff does.
    DEFAULT = False
    EXPLAIN = """\
Why: a file that does not parse cannot be analysed, so its allocations go unreported. By
default it is an error row (`path: error: reason`) and the scan exits 2; with AA999 on
(`--exit-zero` turns it on, or `--extend-select AA999`) it is a finding at the place the
parser stopped, and the other files' findings decide the exit code. A file written for a
newer Python than the one running allocaudit says so: run allocaudit under that Python.

Fix: make the file valid Python for the interpreter that runs allocaudit, or keep it out
of the scan (`extend-exclude`, or `per-file-ignores` for AA999):

    def forward(x:        # a syntax error

becomes

    def forward(x):
"""
    VALID = (Valid("x = 1\n"),)
    INVALID = (Invalid("def forward(:  # expect\n    pass\n"),)

    def check(self, facts: ModuleFacts) -> Iterator[Report]:
        """Nothing: a file that does not parse has no facts; the engine reports AA999."""
        return iter(())
