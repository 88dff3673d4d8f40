"""The hooks of .pre-commit-hooks.yaml, installed from this repository by the real pre-commit
(`pre-commit try-repo`) in a temporary git repository: a commit with a workspace allocation
fails, the fix hook rewrites it, and the fixed file passes; no staged Python file passes; a
staged file outside the scope (not MoE-like, excluded, .gitignored) is neither reported nor
rewritten."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKSPACE = "import torch\n\n\ndef forward(x, m):\n    ws = torch.zeros(m, 8, device='cuda')\n    kernel(x, ws)\n"

try:
    import pre_commit  # noqa: F401

    PRE_COMMIT = [sys.executable, "-m", "pre_commit"]
except ImportError:
    PRE_COMMIT = [shutil.which("pre-commit")] if shutil.which("pre-commit") else None

pytestmark = [
    pytest.mark.skipif(PRE_COMMIT is None, reason="needs pre-commit"),
    pytest.mark.skipif(shutil.which("git") is None, reason="needs git"),
    pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs the allocaudit git repository"),
]


def git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True)


def try_repo(repo, hook, env, *files):
    args = ["--files", *files] if files else []
    return subprocess.run(
        [*PRE_COMMIT, "try-repo", str(ROOT), hook, "--verbose", *args],
        cwd=repo, capture_output=True, text=True, env=env, timeout=900,
    )


def test_hooks_from_the_repository(tmp_path):
    repo = tmp_path / "user-repo"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "dev@example.com")
    git(repo, "config", "user.name", "dev")
    env = {**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home")}

    # No Python file staged: both hooks have nothing to check and pass.
    (repo / "README.md").write_text("notes\n")
    git(repo, "add", "README.md")
    for hook in ("allocaudit", "allocaudit-fix"):
        result = try_repo(repo, hook, env)
        if result.returncode != 0 and "An unexpected error has occurred" in result.stdout + result.stderr:
            pytest.skip(f"pre-commit could not build the hook environment (offline?): {result.stdout[-400:]}")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "(no files to check)Skipped" in result.stdout

    # Staged files outside the scope: pre-commit names them, the hooks leave them alone.
    outside = {repo / "linear.py": WORKSPACE, repo / "build" / "moe_copy.py": WORKSPACE}
    for path, text in outside.items():
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    git(repo, "add", "linear.py", "build/moe_copy.py")
    for hook in ("allocaudit", "allocaudit-fix"):
        result = try_repo(repo, hook, env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Passed" in result.stdout
    assert all(path.read_text() == text for path, text in outside.items())

    # One staged file with a workspace allocation: the scan hook fails the commit...
    layer = repo / "moe_layer.py"
    layer.write_text(WORKSPACE)
    git(repo, "add", "moe_layer.py")
    scan = try_repo(repo, "allocaudit", env)
    assert scan.returncode == 1, scan.stdout
    assert "AA101" in scan.stdout and "Failed" in scan.stdout

    # ...the fix hook rewrites it (and fails, as pre-commit does for a hook that changes files)...
    fix = try_repo(repo, "allocaudit-fix", env)
    assert fix.returncode == 1, fix.stdout
    assert "files were modified by this hook" in fix.stdout
    assert "get_empty(" in layer.read_text()
    assert all(path.read_text() == text for path, text in outside.items())

    # ...and the fixed file passes both.
    git(repo, "add", "moe_layer.py")
    for hook in ("allocaudit-fix", "allocaudit"):
        result = try_repo(repo, hook, env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Passed" in result.stdout
