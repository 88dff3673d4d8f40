"""Which files `allocaudit scan` reads, through the real command: the project root, the nearest
config per file, include globs that ignore case, MoE content, .gitignore with or without git,
--force-exclude, --show-files and --statistics with the reason, --show-settings and the
summary's count of skipped files."""

import json
import os
import subprocess
import sys

import pytest

WORKSPACE = "import torch\ndef forward(x, n):\n    ws = torch.empty(n, device='cuda')\n    kernel(x, ws)\n"


def run(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "allocaudit.auditor", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def reasons(*args, cwd):
    """`--show-files`' rows: each file, relative to ``cwd``, with why it is read."""
    result = run("scan", "--show-files", *args, cwd=cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = (line.split("\t") for line in result.stdout.splitlines())
    return {os.path.normpath(path): reason for path, reason in rows}


def shown(*args, cwd):
    """The files `--show-files` lists, as paths relative to ``cwd``."""
    return sorted(reasons(*args, cwd=cwd))


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
    assert "1 file out of scope skipped" in result.stdout
    (tmp_path / "pyproject.toml").write_text("[tool.allocaudit]\nforce-exclude = true\n")
    assert shown(*named, cwd=tmp_path) == ["model/fused_moe/layer.py"]


def test_summary_counts_the_files_the_scope_skipped(wheel):
    result = run("scan", "--no-cache", "layers", cwd=wheel)
    assert result.stdout.splitlines()[-1] == (
        "Found 2 findings in 3 files scanned; 2 files out of scope skipped (--all scans them). "
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


# MoE code outside any MoE-like path, as model libraries keep it (transformers' models/mixtral/).
EXPERTS = (
    "import torch\n"
    "from torch import nn\n"
    "\n"
    "class MixtralExperts(nn.Module):\n"
    "    def forward(self, x, top_k_index):\n"
    "        ws = torch.empty(x.shape[0], device='cuda')\n"
    "        kernel(x, top_k_index, ws)\n"
    "        return x\n"
)
SAMPLER = (
    "import torch\n"
    "\n"
    "class TopKSampler:\n"
    "    def forward(self, logits, k):\n"
    "        values, indices = torch.topk(logits, k)\n"
    "        probs = torch.empty(logits.shape[0], device='cuda')\n"
    "        kernel(values, probs)\n"
    "        return indices\n"
)


@pytest.fixture
def model_library(tmp_path):
    """A project whose MoE code is in scope by content only: no path names MoE or experts."""
    write(tmp_path / "pyproject.toml", "[project]\nname = 'lib'\n")
    models = tmp_path / "lib" / "models"
    write(models / "mixtral" / "modeling.py", EXPERTS)
    write(models / "dbrx" / "modeling.py", WORKSPACE + "def route(router_logits, k):\n    return router_logits.topk(k)\n")
    write(models / "llama" / "modeling.py", WORKSPACE.replace("forward", "fused_moe_forward") + "\n")  # defines an MoE op
    write(models / "gpt" / "modeling.py", WORKSPACE + "out = fused_experts(x, w1, w2, topk_weights, topk_ids)\n")
    write(models / "qwen" / "configuration.py", "class Qwen3MoeConfig:\n    num_experts = 8\n")
    write(models / "qwen" / "loader.py", WORKSPACE + "if is_moe_model(config):\n    pass\n# the MoE experts' weights\n")
    write(models / "qwen" / "vision.py", "class Qwen3VLMoeVisionPatchMerger:\n    pass\n")
    write(tmp_path / "lib" / "sampling" / "sampler.py", SAMPLER)
    write(tmp_path / "lib" / "layers" / "fused_moe" / "layer.py")
    return tmp_path


def test_moe_content_puts_a_file_in_scope_and_says_why(model_library):
    assert reasons("lib", cwd=model_library) == {
        "lib/layers/fused_moe/layer.py": "include glob *moe*",
        "lib/models/mixtral/modeling.py": "content moe-class: MixtralExperts (line 4)",
        "lib/models/dbrx/modeling.py": "content router-logits: router_logits (line 5)",
        "lib/models/llama/modeling.py": "content moe-op: fused_moe_forward (line 2)",
        "lib/models/gpt/modeling.py": "content moe-op: fused_experts (line 5)",
    }  # not the sampler's torch.topk, a config class, `is_moe_model()`, a comment, an MoE model's vision part


def test_a_sampler_using_topk_is_not_moe_code(model_library):
    result = run("scan", "--no-cache", "lib", cwd=model_library)
    assert "sampler.py" not in result.stdout
    assert "lib/models/mixtral/modeling.py:6:14: AA101" in result.stdout
    named = run("scan", "--no-cache", "lib/sampling/sampler.py", cwd=model_library)
    assert "sampler.py:6:" in named.stdout  # a file named on the command line is always read


def test_content_scope_off_gives_the_globs_only(model_library):
    path_only = {"lib/layers/fused_moe/layer.py": "include glob *moe*"}
    assert reasons("--no-include-by-content", "lib", cwd=model_library) == path_only
    (model_library / "pyproject.toml").write_text("[tool.allocaudit]\ninclude-by-content = false\n")
    assert reasons("lib", cwd=model_library) == path_only
    assert "lib/models/mixtral/modeling.py" in reasons("--include-by-content", "lib", cwd=model_library)


def test_an_explicit_include_replaces_the_default_scope(model_library):
    config = model_library / "pyproject.toml"
    config.write_text('[tool.allocaudit]\ninclude = ["*fused_moe*", "*dbrx*"]\n')
    assert shown("lib", cwd=model_library) == ["lib/layers/fused_moe/layer.py", "lib/models/dbrx/modeling.py"]
    config.write_text('[tool.allocaudit]\ninclude = ["*llama*"]\ninclude-by-content = true\n')
    assert shown("lib", cwd=model_library) == [
        "lib/models/dbrx/modeling.py", "lib/models/gpt/modeling.py", "lib/models/llama/modeling.py", "lib/models/mixtral/modeling.py",
    ]
    assert reasons("lib", cwd=model_library)["lib/models/llama/modeling.py"] == "include glob *llama*"  # a glob is named first
    config.write_text('[tool.allocaudit]\nextend-include = ["*sampling*"]\n')
    assert len(shown("lib", cwd=model_library)) == 6  # the default globs, the content, and the sampler
    settings = run("scan", "--show-settings", "lib", cwd=model_library).stdout.splitlines()
    assert 'include = ["*moe*", "*expert*", "*sampling*"]' in settings
    assert "include-by-content = true" in settings


def test_statistics_count_the_files_by_reason(model_library):
    result = run("scan", "--no-cache", "--statistics", "lib", cwd=model_library)
    lines = result.stdout.splitlines()
    assert "     2\tfiles in scope by content moe-op" in lines
    assert "     1\tfile in scope by content moe-class" in lines
    assert "     1\tfile in scope by include glob *moe*" in lines
    assert lines[-1].startswith("Found 5 findings in 5 files scanned; 4 files out of scope skipped")
    document = json.loads(run("scan", "--no-cache", "--statistics", "--format", "json", "lib", cwd=model_library).stdout)
    assert document["summary"]["files_by_scope_reason"] == {
        "content moe-op": 2, "content moe-class": 1, "content router-logits": 1, "include glob *moe*": 1,
    }


def test_hooks_pass_named_files_through_the_content_scope(model_library):
    write(model_library / "build" / "lib" / "modeling.py", EXPERTS)
    named = ["lib/models/mixtral/modeling.py", "lib/sampling/sampler.py", "lib/models/qwen/configuration.py", "build/lib/modeling.py"]
    assert shown(*named, cwd=model_library) == sorted(named)
    assert reasons("--force-exclude", *named, cwd=model_library) == {"lib/models/mixtral/modeling.py": "content moe-class: MixtralExperts (line 4)"}
    assert shown("--force-exclude", "--no-include-by-content", *named, cwd=model_library) == []
    result = run("scan", "--no-cache", "--force-exclude", *named, cwd=model_library)
    assert "2 files out of scope skipped" in result.stdout
    fixed = run("fix", "--diff", "--force-exclude", *named, cwd=model_library)
    assert "+++ b/lib/models/mixtral/modeling.py" in fixed.stdout and "sampler" not in fixed.stdout
    assert "2 files out of scope left alone" in fixed.stderr
