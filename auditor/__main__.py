"""`python -m allocaudit.auditor` is the `allocaudit` command."""

from allocaudit.auditor.app.cli import main

main()
