"""Writes are atomic and never overwrite a file that changed, vanished or is read-only;
files that change or vanish while `fix` runs are error rows."""

import os
import stat

import pytest

import allocaudit.auditor.app.apply as apply
from allocaudit.rewrites.files import WriteError, read_source, write_atomic
from tests.rewrites.helpers import fix_file

WORKSPACE = "import torch\n\n\ndef forward(x, m):\n    ws = torch.empty(m, device='cuda')\n    kernel(x, ws)\n"


def test_write_replaces_the_file_and_keeps_its_mode(tmp_path):
    path = tmp_path / "a.py"
    path.write_text("old\n")
    os.chmod(path, 0o600)
    write_atomic(read_source(str(path), 1 << 20), b"new\n")
    assert path.read_bytes() == b"new\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["a.py"]


def test_a_file_changed_since_it_was_read_is_not_written(tmp_path):
    path = tmp_path / "a.py"
    path.write_text("old\n")
    source = read_source(str(path), 1 << 20)
    path.write_text("edited meanwhile\n")
    with pytest.raises(WriteError, match="changed since it was read"):
        write_atomic(source, b"new\n")
    assert path.read_text() == "edited meanwhile\n"
    assert [p.name for p in tmp_path.iterdir()] == ["a.py"]


def test_a_vanished_file_is_not_recreated(tmp_path):
    path = tmp_path / "a.py"
    path.write_text("old\n")
    source = read_source(str(path), 1 << 20)
    path.unlink()
    with pytest.raises(WriteError, match="vanished"):
        write_atomic(source, b"new\n")
    assert not path.exists()


def test_a_read_only_file_is_not_written(tmp_path):
    path = tmp_path / "a.py"
    path.write_text("old\n")
    os.chmod(path, 0o444)
    with pytest.raises(WriteError, match="read-only"):
        write_atomic(read_source(str(path), 1 << 20), b"new\n")
    assert path.read_text() == "old\n"


@pytest.mark.parametrize("what", ["vanishes", "changes"])
def test_a_file_that_vanishes_or_changes_during_the_run_is_an_error_row(tmp_path, monkeypatch, what):
    path = tmp_path / "moe.py"
    path.write_text(WORKSPACE)
    real = apply.read_source

    def meddling_read(name, max_size):
        if what == "vanishes":
            os.unlink(name)
        else:
            with open(name, "a") as handle:
                handle.write("# edited by someone else\n")
        return real(name, max_size)

    monkeypatch.setattr(apply, "read_source", meddling_read)
    result = fix_file(path)
    assert [e.reason for e in result.errors] == [
        "file vanished during the scan" if what == "vanishes" else "file changed during the run: not rewritten"
    ]
    assert not result.changed
    if what == "changes":
        assert path.read_text() == WORKSPACE + "# edited by someone else\n"
