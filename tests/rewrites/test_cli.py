"""`allocaudit fix` / `unfix` end to end, through a real subprocess: flags, output, exit codes, bad input."""

import os
import stat

import pytest

from tests.rewrites.helpers import cli, moe_file

WORKSPACE = "import torch\n\n\ndef forward(x, m):\n    ws = torch.zeros(m, 8, device='cuda')\n    kernel(x, ws)\n"
FIXED = (
    "import torch\nfrom allocaudit.runtime import get_empty\n\n\ndef forward(x, m):\n"
    "    ws = get_empty((m, 8), torch.get_default_dtype(), device='cuda', cache_name=\"layer.forward.ws\", zero=True)\n"
    "    kernel(x, ws)\n"
)
SKIPPED = "import torch\n\n\ndef forward(x, m):\n    ws = torch.empty_strided((m,), (1,), device='cuda')\n    kernel(x, ws)\n"


@pytest.fixture
def layer(tmp_path):
    return moe_file(tmp_path, WORKSPACE)


def test_fix_writes_and_a_second_fix_changes_nothing(layer):
    result = cli("fix", str(layer))
    assert result.returncode == 0, result.stderr
    assert layer.read_text() == FIXED
    assert result.stdout.strip() == "Fixed 1 site in 1 file (0 skipped)."
    again = cli("fix", str(layer))
    assert again.returncode == 0 and layer.read_text() == FIXED
    assert again.stdout.strip() == "Fixed 0 sites in 0 files (0 skipped)."


def test_diff_prints_a_unified_diff_and_writes_nothing(layer):
    result = cli("fix", "--diff", str(layer))
    assert result.returncode == 1
    assert layer.read_text() == WORKSPACE
    assert result.stdout.startswith(f"--- a/{layer}\n+++ b/{layer}\n")
    assert "-    ws = torch.zeros(m, 8, device='cuda')\n" in result.stdout
    assert "+from allocaudit.runtime import get_empty\n" in result.stdout
    assert "Would fix 1 site in 1 file" in result.stderr  # the diff alone on stdout, ready for `patch`


def test_check_exits_1_when_a_fix_is_pending_and_0_when_not(layer):
    result = cli("fix", "--check", str(layer))
    assert result.returncode == 1
    assert layer.read_text() == WORKSPACE
    assert f"{layer}:5:10: would rewrite `torch.zeros`" in result.stdout
    layer.write_text(FIXED)
    assert cli("fix", "--check", str(layer)).returncode == 0


def test_skipped_sites_are_listed_with_their_reason(tmp_path):
    path = tmp_path / "experts.py"
    path.write_text(SKIPPED)
    result = cli("fix", str(path))
    assert result.returncode == 0
    assert result.stdout.splitlines() == [
        f"{path}:5:10: skipped: explicit strides: get_empty returns contiguous tensors",
        "Fixed 0 sites in 0 files (1 skipped).",
    ]
    assert path.read_text() == SKIPPED


def test_folders_follow_the_scan_scope_and_all(tmp_path, layer):
    other = tmp_path / "other.py"  # not a MoE-like path
    other.write_text(WORKSPACE)
    assert cli("fix", str(tmp_path)).returncode == 0
    assert layer.read_text() == FIXED and other.read_text() == WORKSPACE
    assert cli("fix", "--all", str(tmp_path)).returncode == 0
    assert "get_empty" in other.read_text()


def test_permissions_are_kept(layer):
    os.chmod(layer, 0o640)
    assert cli("fix", str(layer)).returncode == 0
    assert stat.S_IMODE(os.stat(layer).st_mode) == 0o640
    assert not [p for p in layer.parent.iterdir() if p.name != "layer.py"]  # no temporary file left


def test_a_symlink_is_written_through(tmp_path, layer):
    link = tmp_path / "moe" / "link_layer.py"
    link.symlink_to(layer)
    assert cli("fix", str(link)).returncode == 0
    assert link.is_symlink() and layer.read_text() == FIXED.replace("layer.forward", "link_layer.forward")


def test_read_only_file_is_an_error_row_and_stays_as_it_was(tmp_path, layer):
    os.chmod(layer, 0o444)
    result = cli("fix", str(layer))
    assert result.returncode == 2
    assert f"{layer}: error: read-only file: not written" in result.stdout
    assert layer.read_text() == WORKSPACE


def test_bad_files_are_error_rows_and_the_others_are_fixed(tmp_path, layer):
    broken = tmp_path / "moe" / "broken.py"
    broken.write_text("def forward(:\n    pass\n")
    latin = tmp_path / "moe" / "latin.py"
    latin.write_bytes(b"x = '\xe9'\n" + WORKSPACE.encode())
    result = cli("fix", str(tmp_path / "moe"))
    assert result.returncode == 2
    assert f"{broken}: error: syntax error at line 1" in result.stdout
    assert f"{latin}: error: not valid UTF-8" in result.stdout
    assert broken.read_text() == "def forward(:\n    pass\n"
    assert latin.read_bytes().startswith(b"x = '\xe9'\n") and b"get_empty" not in latin.read_bytes()
    assert layer.read_text() == FIXED


def test_a_missing_path_is_an_error(tmp_path):
    result = cli("fix", str(tmp_path / "nowhere.py"))
    assert result.returncode == 2
    assert "no such file or directory" in result.stdout


def test_unfix_restores_and_removes_the_import(layer):
    layer.write_text(FIXED)
    check = cli("unfix", "--check", str(layer))
    assert check.returncode == 1 and layer.read_text() == FIXED
    result = cli("unfix", str(layer))
    assert result.returncode == 0, result.stdout
    assert layer.read_text() == WORKSPACE.replace("torch.zeros(m, 8, device='cuda')", "torch.zeros((m, 8), device='cuda')")
    assert result.stdout.strip() == "Restored 1 site in 1 file (0 skipped)."


def test_unfix_leaves_calls_with_their_own_cache(tmp_path):
    path = tmp_path / "moe_cache.py"
    text = FIXED.replace("zero=True)", "zero=True, cache=my_cache)")
    path.write_text(text)
    result = cli("unfix", str(path))
    assert result.returncode == 0
    assert "skipped: `cache=` has no counterpart in torch.empty/zeros" in result.stdout
    assert path.read_text() == text


def test_fix_selects_aa101_whatever_the_configuration(tmp_path, layer):
    (tmp_path / "pyproject.toml").write_text('[tool.allocaudit]\nselect = ["AA2"]\n')
    assert cli("fix", str(layer)).returncode == 0
    assert layer.read_text() == FIXED


def test_ctrl_c_during_fix_lists_the_files_written_and_exits_130(tmp_path):
    import subprocess
    import sys

    moe = tmp_path / "moe"
    moe.mkdir()
    for name in ("a.py", "b.py", "c.py"):
        (moe / name).write_text(WORKSPACE)
    # Ctrl-C lands while the second file is being written: the first is written, the
    # others are not, and the user is told which.
    code = (
        "import sys\n"
        "import allocaudit.auditor.app.apply as apply\n"
        "from allocaudit.auditor.app.cli import main\n"
        "real, calls = apply.write_atomic, []\n"
        "def write(source, data):\n"
        "    calls.append(source.path)\n"
        "    if len(calls) == 2:\n"
        "        raise KeyboardInterrupt\n"
        "    real(source, data)\n"
        "apply.write_atomic = write\n"
        "sys.argv = ['allocaudit', 'fix', '--no-cache', sys.argv[1]]\n"
        "main()\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(moe)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 130, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        "Interrupted (Ctrl-C): 1 file written before it:",
        f"  {moe / 'a.py'}",
        "Stopped early. Fixed 1 site in 1 file (0 skipped).",
    ]
    assert "get_empty" in (moe / "a.py").read_text()
    assert (moe / "b.py").read_text() == WORKSPACE and (moe / "c.py").read_text() == WORKSPACE


def test_fix_shows_progress_on_a_terminal_and_nothing_when_piped(tmp_path):
    import pty
    import subprocess
    import sys

    from allocaudit.auditor.app.apply import PROGRESS_FROM

    moe = tmp_path / "moe"
    moe.mkdir()
    for i in range(PROGRESS_FROM):
        (moe / f"m{i}.py").write_text(WORKSPACE)
    piped = cli("fix", "--no-cache", "--diff", str(moe))
    assert piped.returncode == 1 and piped.stderr.splitlines() == [f"Would fix {PROGRESS_FROM} sites in {PROGRESS_FROM} files (0 skipped)."]
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "allocaudit.auditor", "fix", "--no-cache", "--check", str(moe)],
        stdout=subprocess.DEVNULL, stderr=terminal,
    )
    os.close(terminal)
    shown = b""
    try:
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the command closed the terminal
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(controller)
    assert proc.wait(timeout=300) == 1
    assert b"fixing" in shown
