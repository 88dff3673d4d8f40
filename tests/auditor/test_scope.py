"""Which files `allocaudit scan` reads, through the real command: the project root, the nearest
config per file, include globs that ignore case, .gitignore with or without git,
--force-exclude, --show-files, --show-settings and the summary's count of skipped files."""

import os
import subprocess
import sys

import pytest

WORKSPACE = "import torch\ndef forward(x):\n    ws = torch.empty(4, device='cuda')\n    kernel(x, ws)\n"


def run(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "allocaudit.auditor", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def shown(*args, cwd):
    """The files `--show-files` lists, as paths relative to ``cwd``."""
    result = run("scan", "--show-files", *args, cwd=cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    return sorted(os.path.normpath(line) for line in result.stdout.splitlines())


def write(path, text=WORKSPACE):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def wheel(tmp_path):
    """An unpacked wheel, like vLLM's: packages, no pyproject.toml, no git."""
    top = tmp_path / "wheel" / "engine"
    for package in (top, top / "layers", top / "layers" / "fused_moe"):
        write(package / "__init__.py", "")
    write(top / "layers" / "fused_moe" / "layer.py")
    write(top / "layers" / "fused_moe" / "utils.py")
    write(top / "layers" / "linear.py")
    return top


def test_scope_does_not_depend_on_the_current_folder(wheel):
    moe = wheel / "layers" / "fused_moe"
    inside = shown(cwd=moe)
    from_parent = shown("fused_moe", cwd=moe.parent)
    assert inside == ["__init__.py", "layer.py", "utils.py"]
    assert from_parent == ["fused_moe/__init__.py", "fused_moe/layer.py", "fused_moe/utils.py"]


def test_a_project_marker_is_the_root(tmp_path):
    project = tmp_path / "project"
    write(project / "setup.py", "")
    write(project / "src" / "fused_moe" / "layer.py")
    write(project / "src" / "fused_moe" / "kernels" / "gemm.py")
    assert shown(cwd=project / "src" / "fused_moe") == ["kernels/gemm.py", "layer.py"]


def test_include_globs_ignore_case(tmp_path):
    write(tmp_path / "layers" / "MoE" / "router.py")
    write(tmp_path / "layers" / "SparseMoE.py")
    write(tmp_path / "layers" / "ExpertParallel.py")
    write(tmp_path / "layers" / "linear.py")
    assert shown("layers", cwd=tmp_path) == ["layers/ExpertParallel.py", "layers/MoE/router.py", "layers/SparseMoE.py"]


def test_gitignore_is_honoured_without_git(tmp_path):
    moe = tmp_path / "moe"
    write(moe / "layer.py")
    write(moe / "generated" / "kernel.py")
    write(moe / "vendored" / "keep.py")
    write(moe / "vendored" / "drop.py")
    write(tmp_path / ".gitignore", "generated/\n")
    write(moe / "vendored" / ".gitignore", "*.py\n!keep.py\n")
    assert not (tmp_path / ".git").exists()
    assert shown(".", cwd=tmp_path) == ["moe/layer.py", "moe/vendored/keep.py"]
    assert len(shown("--no-gitignore", ".", cwd=tmp_path)) == 4


def test_each_file_takes_its_nearest_config(tmp_path):
    # ruff's rule: the closest pyproject.toml with a [tool.allocaudit] table, not the first path's.
    write(tmp_path / "pyproject.toml", '[tool.allocaudit]\nselect = ["AA101"]\n')
    write(tmp_path / "moe" / "layer.py")
    write(tmp_path / "sub" / "pyproject.toml", '[tool.allocaudit]\nignore = ["AA101"]\n')
    write(tmp_path / "sub" / "moe" / "layer.py")
    for paths in (["moe", "sub"], ["sub", "moe"]):
        result = run("scan", "--no-cache", *paths, cwd=tmp_path)
        assert result.returncode == 1
        assert [line.split(":")[0] for line in result.stdout.splitlines() if "AA101" in line] == ["moe/layer.py"]


def test_a_subproject_config_has_its_own_root(tmp_path):
    write(tmp_path / "pyproject.toml", "[tool.allocaudit]\n")
    write(tmp_path / "kernels" / "pyproject.toml", '[tool.allocaudit]\ninclude = ["gemm.py"]\n')
    write(tmp_path / "kernels" / "gemm.py")
    write(tmp_path / "kernels" / "moe_router.py")
    write(tmp_path / "moe_router.py")
    assert shown(".", cwd=tmp_path) == ["kernels/gemm.py", "moe_router.py"]


def test_set_up_names_are_exact_not_prefixes(tmp_path):
    # transformers runs load_balancing_loss_func on every training step; SGLang's attention
    # backends run init_forward_metadata on every forward.
    write(
        tmp_path / "moe" / "model.py",
        "import torch\n"
        "def load_balancing_loss_func(gate_logits, num_experts):\n"
        "    counts = torch.zeros(num_experts, device='cuda')\n"
        "    return (counts * gate_logits).sum()\n"
        "class Backend:\n"
        "    def init_forward_metadata(self, batch):\n"
        "        indices = torch.empty(batch, device='cuda')\n"
        "        kernel(indices)\n"
        "    def load_weights(self, weights):\n"
        "        staging = torch.empty(4, device='cuda')\n"
        "        kernel(staging, weights)\n",
    )
    result = run("scan", "--no-cache", "--select", "AA101", "moe", cwd=tmp_path)
    assert [line.split(":")[1] for line in result.stdout.splitlines() if "AA101" in line] == ["3", "7"]


def test_force_exclude_filters_named_files_as_pre_commit_passes_them(tmp_path):
    write(tmp_path / "setup.py", "")
    layer = write(tmp_path / "model" / "fused_moe" / "layer.py")
    other = write(tmp_path / "model" / "linear.py")
    built = write(tmp_path / "build" / "lib" / "fused_moe" / "layer.py")
    write(tmp_path / ".gitignore", "model/fused_moe/generated_*.py\n")
    generated = write(tmp_path / "model" / "fused_moe" / "generated_gemm.py")
    named = [str(p.relative_to(tmp_path)) for p in (layer, other, built, generated)]
    assert shown(*named, cwd=tmp_path) == sorted(named)  # named files are always read...
    assert shown("--force-exclude", *named, cwd=tmp_path) == ["model/fused_moe/layer.py"]  # ...unless forced
    result = run("scan", "--no-cache", "--force-exclude", *named, cwd=tmp_path)
    assert "1 file outside the include globs skipped" in result.stdout
    (tmp_path / "pyproject.toml").write_text("[tool.allocaudit]\nforce-exclude = true\n")
    assert shown(*named, cwd=tmp_path) == ["model/fused_moe/layer.py"]


def test_summary_counts_the_files_the_scope_skipped(wheel):
    result = run("scan", "--no-cache", "layers", cwd=wheel)
    assert result.stdout.splitlines()[-1] == (
        "Found 2 findings in 3 files scanned; 2 files outside the include globs skipped (--all scans them). "
        "[*] 2 fixable with `allocaudit fix`."
    )
    assert run("scan", "--no-cache", "--all", "layers", cwd=wheel).stdout.splitlines()[-1].startswith("Found 3 findings in 5 files scanned.")


def test_show_settings_names_the_config_and_the_root(tmp_path):
    write(tmp_path / "pyproject.toml", '[tool.allocaudit]\nextend-exclude = ["vendored"]\nper-file-ignores = {"tests/*" = ["AA101"]}\n')
    write(tmp_path / "moe" / "layer.py")
    result = run("scan", "--show-settings", "--select", "AA2", "moe", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"Config file: {tmp_path / 'pyproject.toml'}" in lines
    assert f"Project root (globs are relative to it): {tmp_path}" in lines
    assert 'per-file-ignores = {"tests/*": ["AA101"]}' in lines
    assert any(line.startswith("exclude = [") and line.endswith('".allocaudit_cache", "vendored"]') for line in lines)
    assert 'enabled-codes = ["AA201", "AA202", "AA203", "AA204", "AA205", "AA206", "AA207"]' in lines


def test_exclude_and_extend_exclude_do_not_depend_on_key_order(tmp_path):
    write(tmp_path / "moe" / "a" / "layer.py")
    write(tmp_path / "moe" / "b" / "layer.py")
    write(tmp_path / "moe" / "c" / "layer.py")
    for table in ('extend-exclude = ["b"]\nexclude = ["a"]\n', 'exclude = ["a"]\nextend-exclude = ["b"]\n'):
        (tmp_path / "pyproject.toml").write_text("[tool.allocaudit]\n" + table)
        assert shown(".", cwd=tmp_path) == ["moe/c/layer.py"], table
