"""The top of the auditor: the command line, and the runs it makes over files (a scan, a fix)."""
