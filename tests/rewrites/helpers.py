"""Running the codemods on one file in a temporary folder, as the CLI does."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from allocaudit.auditor.settings import Settings
from allocaudit.auditor.app.apply import WRITE, run_fix, run_unfix

FIXTURES = Path(__file__).parent / "fixtures"


def fix_file(path: Path, mode: str = WRITE):
    """`allocaudit fix --all-sizes` of one file: the fixtures show how each form is rewritten,
    whatever its size (which sizes `fix` rewrites by default: tests/rewrites/test_selection.py)."""
    return run_fix([str(path)], Settings(all_sizes=True), mode, cache_dir=None, jobs=1)


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


# Run first in `run_without_allocaudit`: any import of allocaudit fails, as where it is not installed.
_BLOCK_ALLOCAUDIT = """
import sys
class _NoAllocaudit:
    def find_spec(self, name, path=None, target=None):
        if name == "allocaudit" or name.startswith("allocaudit."):
            raise ImportError(f"allocaudit is not installed here ({name})")
sys.meta_path.insert(0, _NoAllocaudit())
"""


def run_without_allocaudit(code: str, root: Path) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter that can import ``root``'s packages and torch, and
    not allocaudit: isolated mode (-I: no user site, no PYTHONPATH, no .pth files, so the
    project's own installation is not on the path), torch's folder added back, and an import
    hook that refuses allocaudit should it be found anyway."""
    import torch

    torch_root = os.path.dirname(os.path.dirname(torch.__file__))
    prelude = f"import sys\nsys.path[:0] = [{str(root)!r}, {torch_root!r}]\n" + _BLOCK_ALLOCAUDIT
    env = {"PATH": os.environ["PATH"], "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-I", "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=300
    )
