"""`python -m allocaudit.auditor` is the `allocaudit` command."""

from allocaudit.auditor.cli import main

main()
