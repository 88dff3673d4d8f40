"""`allocaudit vendor-runtime`: the runtime as one module of the user's package, importable with
torch alone, replaced only when it is ours, checked by --check."""

import sys

from typer.testing import CliRunner

from allocaudit.auditor.app.cli import app
from tests.rewrites.helpers import run_without_allocaudit

runner = CliRunner()


def make_package(tmp_path):
    pkg = tmp_path / "myengine" / "_vendor"
    pkg.mkdir(parents=True)
    (tmp_path / "myengine" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    return pkg


def test_writes_the_runtime_and_names_its_import(tmp_path):
    pkg = make_package(tmp_path)
    result = runner.invoke(app, ["vendor-runtime", str(pkg)])
    assert result.exit_code == 0, result.output
    target = pkg / "allocaudit_runtime.py"
    text = target.read_text()
    assert text.startswith("# allocaudit-vendored-runtime runtime=2 ")
    assert "--runtime-module myengine._vendor.allocaudit_runtime" in result.output
    # A second run changes nothing.
    again = runner.invoke(app, ["vendor-runtime", str(target)])
    assert again.exit_code == 0 and "Unchanged" in again.output
    assert runner.invoke(app, ["vendor-runtime", "--check", str(pkg)]).exit_code == 0


def test_the_vendored_module_works_without_allocaudit(tmp_path):
    pkg = make_package(tmp_path)
    assert runner.invoke(app, ["vendor-runtime", str(pkg)]).exit_code == 0
    proc = run_without_allocaudit("""
        import torch
        from myengine._vendor.allocaudit_runtime import WorkspaceCache, get_empty
        cache = WorkspaceCache("vendored")
        a = get_empty((4, 4), torch.float32, device="cpu", cache_name="ws", cache=cache, zero=True)
        assert a.eq(0).all() and a.shape == (4, 4)
        assert not any(m == "allocaudit" or m.startswith("allocaudit.") for m in sys.modules), sorted(sys.modules)
        print("ok")
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_check_reports_a_stale_copy_and_an_edited_copy_is_not_replaced(tmp_path):
    pkg = make_package(tmp_path)
    target = pkg / "allocaudit_runtime.py"
    assert runner.invoke(app, ["vendor-runtime", str(pkg)]).exit_code == 0
    target.write_text(target.read_text().replace('RUNTIME_VERSION = "2"', 'RUNTIME_VERSION = "2"  # local change'))
    check = runner.invoke(app, ["vendor-runtime", "--check", str(pkg)])
    assert check.exit_code == 1 and "out of date" in check.output
    refused = runner.invoke(app, ["vendor-runtime", str(pkg)])
    assert refused.exit_code == 2 and "was edited" in refused.output and str(target) in refused.output
    forced = runner.invoke(app, ["vendor-runtime", "--force", str(pkg)])
    assert forced.exit_code == 0 and "local change" not in target.read_text()


def test_a_file_of_the_users_is_never_overwritten(tmp_path):
    pkg = make_package(tmp_path)
    mine = pkg / "workspaces.py"
    mine.write_text("def get_empty(): ...\n")
    result = runner.invoke(app, ["vendor-runtime", str(mine)])
    assert result.exit_code == 2
    assert "not written by `allocaudit vendor-runtime`" in result.output and str(mine) in result.output
    assert mine.read_text() == "def get_empty(): ...\n"


def test_bad_destinations_are_named(tmp_path):
    result = runner.invoke(app, ["vendor-runtime", str(tmp_path / "nowhere" / "rt.py")])
    assert result.exit_code == 2 and "does not exist" in result.output
    result = runner.invoke(app, ["vendor-runtime", str(tmp_path / "rt.txt")])
    assert result.exit_code == 2 and "not a folder and not a .py file" in result.output


def test_a_vendored_copy_reports_to_the_same_observers(tmp_path):
    # The profiler registers with allocaudit.runtime; a vendored copy in the same process must
    # notify it too.
    import importlib.util

    import torch

    import allocaudit.runtime as runtime

    pkg = make_package(tmp_path)
    assert runner.invoke(app, ["vendor-runtime", str(pkg)]).exit_code == 0
    spec = importlib.util.spec_from_file_location("vendored_runtime_copy", pkg / "allocaudit_runtime.py")
    copy = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = copy  # dataclasses look their module up there
    try:
        spec.loader.exec_module(copy)
    finally:
        del sys.modules[spec.name]
    events = []
    runtime.add_observer(events.append)
    try:
        copy.get_empty(8, torch.float32, device="cpu", cache_name="vendored.ws", cache=copy.WorkspaceCache("copy"))
    finally:
        runtime.remove_observer(events.append)
    assert [(e.cache, e.name, e.kind) for e in events] == [("copy", "vendored.ws", "miss")]


def test_scan_and_fix_leave_the_vendored_runtime_alone(tmp_path):
    # Its header suppresses every finding: the runtime's own allocations (a buffer it keeps)
    # are not workspaces, and rewriting the runtime into calls of itself would recurse.
    pkg = make_package(tmp_path)
    assert runner.invoke(app, ["vendor-runtime", str(pkg)]).exit_code == 0
    target = pkg / "allocaudit_runtime.py"
    before = target.read_text()
    scan = runner.invoke(app, ["scan", "--all", "--no-cache", str(target)])
    assert scan.exit_code == 0 and "No findings in 1 file scanned." in scan.output, scan.output
    fix = runner.invoke(app, ["fix", "--all", "--no-cache", str(target)])
    assert fix.exit_code == 0 and target.read_text() == before
    assert runner.invoke(app, ["vendor-runtime", "--check", str(pkg)]).exit_code == 0
