"""Bad input never stops a scan: each bad file is an error row with its path and reason,
the other files are still scanned, and the exit code is 2."""

import os

import pytest

from allocaudit.auditor.app import engine
from allocaudit.auditor.app.engine import scan
from allocaudit.auditor.settings import Settings

GOOD = "import torch\ndef forward(x):\n    ws = torch.empty(4, device='cuda')\n    kernel(x, ws)\n"


def errors_for(tmp_path, name, content, **settings):
    folder = tmp_path / "moe"
    folder.mkdir(exist_ok=True)
    (folder / "good.py").write_text(GOOD)
    target = folder / name
    if content is not None:
        target.write_bytes(content)
    result = scan([str(tmp_path)], Settings(**settings), cache_dir=None)
    assert [f.line for f in result.findings] == [3], "the good file is still scanned"
    assert result.exit_code == 2
    return {os.path.basename(e.path): e.reason for e in result.errors}


def test_syntax_error(tmp_path):
    assert errors_for(tmp_path, "bad.py", b"def f(:\n    pass\n") == {"bad.py": "syntax error at line 1, column 7: invalid syntax"}


def test_not_utf8(tmp_path):
    errors = errors_for(tmp_path, "latin.py", "x = 'caf\xe9'  # torch.empty\n".encode("latin-1"))
    assert errors == {"latin.py": "not valid UTF-8: undecodable byte at offset 8"}


def test_declared_latin1_is_fine(tmp_path):
    folder = tmp_path / "moe"
    folder.mkdir()
    (folder / "latin.py").write_bytes("# -*- coding: latin-1 -*-\nimport torch\ns = 'caf\xe9'\ndef f():\n    w = torch.empty(2, device='cuda')\n    k(w)\n".encode("latin-1"))
    result = scan([str(tmp_path)], Settings(), cache_dir=None)
    assert result.errors == [] and [f.line for f in result.findings] == [5]


def test_binary(tmp_path):
    assert errors_for(tmp_path, "blob.py", b"torch.empty\x00\x01\x02") == {"blob.py": "binary file (NUL byte at offset 11)"}


def test_too_large(tmp_path):
    errors = errors_for(tmp_path, "huge.py", b"x = 1  # torch.empty\n" * 500_000)
    assert errors["huge.py"].startswith("file too large (10.5 MB > max-file-size 8.4 MB)")


def test_empty_file_is_clean(tmp_path):
    (tmp_path / "moe").mkdir()
    (tmp_path / "moe" / "empty.py").write_bytes(b"")
    result = scan([str(tmp_path)], Settings(), cache_dir=None)
    assert result.errors == [] and result.exit_code == 0


def test_symlink_loop_of_files(tmp_path):
    folder = tmp_path / "moe"
    folder.mkdir()
    os.symlink(folder / "loop_b.py", folder / "loop_a.py")
    os.symlink(folder / "loop_a.py", folder / "loop_b.py")
    errors = errors_for(tmp_path, "x.py", None)
    assert errors == {"loop_a.py": "symlink loop", "loop_b.py": "symlink loop"}


def test_symlink_loop_of_folders(tmp_path):
    folder = tmp_path / "moe"
    folder.mkdir()
    os.symlink(folder, folder / "again")
    errors = errors_for(tmp_path, "x.py", None)
    assert errors == {"again": f"symlink loop: {folder} is already being scanned"}


def test_vanished_file(tmp_path, monkeypatch):
    real_discover = engine.discover

    def discover_then_delete(paths, settings):
        found = real_discover(paths, settings)
        os.unlink(tmp_path / "moe" / "gone.py")
        return found

    monkeypatch.setattr(engine, "discover", discover_then_delete)
    assert errors_for(tmp_path, "gone.py", GOOD.encode()) == {"gone.py": "file vanished during the scan"}


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable(tmp_path):
    folder = tmp_path / "moe"
    folder.mkdir()
    (folder / "secret.py").write_text(GOOD)
    (folder / "secret.py").chmod(0)
    assert errors_for(tmp_path, "x.py", None) == {"secret.py": "permission denied"}


def test_a_crash_in_the_analysis_is_an_error_row_not_a_stop(tmp_path, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(engine, "analyze", explode)
    folder = tmp_path / "moe"
    folder.mkdir()
    (folder / "a.py").write_text(GOOD)
    result = scan([str(tmp_path)], Settings(), cache_dir=None, jobs=1)
    assert [e.reason for e in result.errors] == ["internal error while analysing: RuntimeError: boom"]
    assert result.exit_code == 2


def test_parallel_and_serial_scans_agree(tmp_path):
    folder = tmp_path / "moe"
    folder.mkdir()
    for i in range(40):
        (folder / f"m{i}.py").write_text(GOOD if i % 3 else "def broken(:\n")
    serial = scan([str(tmp_path)], Settings(), cache_dir=None, jobs=1)
    parallel = scan([str(tmp_path)], Settings(), cache_dir=None, jobs=2)
    assert serial.findings == parallel.findings and serial.errors == parallel.errors
    assert len(serial.findings) == 26 and len(serial.errors) == 14
