"""Running the codemods on one file in a temporary folder, as the CLI does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from allocaudit.auditor.settings import Settings
from allocaudit.rewrites.apply import WRITE, run_fix, run_unfix

FIXTURES = Path(__file__).parent / "fixtures"


def fix_file(path: Path, mode: str = WRITE):
    return run_fix([str(path)], Settings(), mode, cache_dir=None, jobs=1)


def unfix_file(path: Path, mode: str = WRITE):
    return run_unfix([str(path)], Settings(), mode)


def moe_file(folder: Path, text: str, name: str = "layer.py") -> Path:
    """``text`` written to ``folder``/moe/``name``: a file in the default scope."""
    path = folder / "moe" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "allocaudit.auditor", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )
