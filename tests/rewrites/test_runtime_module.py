"""`fix --runtime-module` (and `runtime-module` in the config) with a runtime written by
`allocaudit vendor-runtime`, and modules that import torch lazily, through the real CLI:
patched code runs where allocaudit is not installed, a lazy module stays lazy, and `unfix`
undoes both without touching a `get_empty` of the user's own."""

from pathlib import Path

from tests.rewrites.helpers import cli, run_without_allocaudit

RUNTIME = "myengine._allocaudit_runtime"

EAGER = '''\
import torch


def forward(x, m):
    ws = torch.zeros((m, 8), dtype=x.dtype, device=x.device)
    ws[:, 0] = x[:m]
    return float(ws.sum())
'''

# torch only for type checkers at module level, imported where the code runs (vLLM and
# transformers write modules like this so that importing them stays cheap).
LAZY = '''\
"""Routing that imports torch only when it runs."""
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def forward(x: "torch.Tensor", m: int) -> float:
    """Sum of the first m values, through a workspace."""
    import torch

    ws = torch.empty((m, 8), dtype=x.dtype, device=x.device)
    ws.zero_()
    ws[:, 0] = x[:m]
    return float(ws.sum())
'''

# A helper of the engine's own that happens to be called get_empty, with the runtime's signature.
OWN_HELPER = '''\
import torch


def get_empty(shape, dtype, device=None, cache_name=None, zero=False):
    return torch.zeros(shape, dtype=dtype, device=device)
'''
USES_OWN_HELPER = '''\
import torch

from myengine.workspaces import get_empty


def forward(x, m):
    ws = get_empty((m, 8), x.dtype, device=x.device, cache_name="mine", zero=True)
    return float(ws.sum())
'''

# Runs the patched modules: the lazy one does not load torch on import, both give the same
# results as before, and get_empty comes from the vendored copy.
RUN_PATCHED = f"""
from myengine.moe import lazy_layer
assert "torch" not in sys.modules, "importing the lazy module imported torch"
from myengine.moe import eager_layer
import torch
x = torch.arange(8, dtype=torch.float32)
print([eager_layer.forward(x, m) for m in (3, 2, 3)], [lazy_layer.forward(x, m) for m in (3, 2, 3)])
import {RUNTIME} as runtime
assert eager_layer.get_empty is runtime.get_empty
hits = sum(s.hits for s in runtime.default_cache().stats().values())
assert hits >= 4, runtime.default_cache().report()
assert not [m for m in sys.modules if m.split(".")[0] == "allocaudit"]
"""


def make_engine(root: Path, vendored: bool = True) -> Path:
    """myengine/ with a MoE package of an eager and a lazy module (and the vendored runtime)."""
    moe = root / "myengine" / "moe"
    moe.mkdir(parents=True)
    (root / "myengine" / "__init__.py").write_text("")
    (moe / "__init__.py").write_text("")
    (moe / "eager_layer.py").write_text(EAGER)
    (moe / "lazy_layer.py").write_text(LAZY)
    if vendored:
        result = cli("vendor-runtime", str(root / "myengine" / "_allocaudit_runtime.py"))
        assert result.returncode == 0, result.stdout + result.stderr
    return moe


def test_patched_code_runs_on_the_vendored_runtime_without_allocaudit(tmp_path):
    moe = make_engine(tmp_path)
    result = cli("fix", "--no-cache", "--runtime-module", RUNTIME, str(tmp_path / "myengine"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("Fixed 2 sites in 2 files (0 skipped)."), result.stdout
    assert "warning" not in result.stderr
    eager, lazy = (moe / "eager_layer.py").read_text(), (moe / "lazy_layer.py").read_text()
    assert eager.startswith(f"import torch\nfrom {RUNTIME} import get_empty\n")
    # The lazy module imports the runtime (and with it torch) only where it runs.
    assert f'    """Sum of the first m values, through a workspace."""\n    import torch\n    from {RUNTIME} import get_empty\n' in lazy
    assert "allocaudit.runtime" not in eager + lazy

    run = run_without_allocaudit(RUN_PATCHED, tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[3.0, 1.0, 3.0] [3.0, 1.0, 3.0]"


def test_unfix_undoes_a_vendored_fix_and_leaves_a_get_empty_of_the_users_own(tmp_path):
    moe = make_engine(tmp_path)
    (tmp_path / "myengine" / "workspaces.py").write_text(OWN_HELPER)
    (moe / "own_helper.py").write_text(USES_OWN_HELPER)
    assert cli("fix", "--no-cache", "--runtime-module", RUNTIME, str(moe)).returncode == 0
    assert "get_empty" in (moe / "lazy_layer.py").read_text()
    # Neither the flag nor a config: the vendored copy's header says whose import it is.
    result = cli("unfix", str(moe))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "Restored 2 sites in 2 files (0 skipped).", result.stdout
    assert (moe / "eager_layer.py").read_text() == EAGER
    assert (moe / "lazy_layer.py").read_text() == LAZY
    assert (moe / "own_helper.py").read_text() == USES_OWN_HELPER


def test_the_nearest_config_names_each_files_runtime_module(tmp_path):
    moe = make_engine(tmp_path)
    (tmp_path / "pyproject.toml").write_text(f'[tool.allocaudit]\nruntime-module = "{RUNTIME}"\n')
    plugin = tmp_path / "plugins" / "moe"
    plugin.mkdir(parents=True)
    (tmp_path / "plugins" / "__init__.py").write_text("")
    (plugin / "__init__.py").write_text("")
    (plugin / "layer.py").write_text(EAGER)
    (tmp_path / "plugins" / "pyproject.toml").write_text('[tool.allocaudit]\nruntime-module = "plugins._allocaudit_runtime"\n')
    assert cli("vendor-runtime", str(tmp_path / "plugins" / "_allocaudit_runtime.py")).returncode == 0

    shown = cli("scan", "--show-settings", str(plugin))
    assert 'runtime-module = "plugins._allocaudit_runtime"' in shown.stdout
    result = cli("fix", "--no-cache", str(tmp_path))
    assert result.returncode == 0 and "warning" not in result.stderr, result.stdout + result.stderr
    assert f"from {RUNTIME} import get_empty\n" in (moe / "eager_layer.py").read_text()
    assert "from plugins._allocaudit_runtime import get_empty\n" in (plugin / "layer.py").read_text()
    assert cli("unfix", str(tmp_path)).returncode == 0
    assert (plugin / "layer.py").read_text() == EAGER and (moe / "eager_layer.py").read_text() == EAGER


def test_a_bad_module_name_is_an_error_that_names_it(tmp_path):
    moe = make_engine(tmp_path, vendored=False)
    for bad in ("my-engine.runtime", ".runtime", "myengine.class"):
        result = cli("fix", "--runtime-module", bad, str(moe))
        assert result.returncode == 2
        assert f"--runtime-module: runtime module must be an absolute dotted module name" in result.stderr
        assert repr(bad) in result.stderr
    (tmp_path / "pyproject.toml").write_text('[tool.allocaudit]\nruntime-module = "myengine/rt.py"\n')
    result = cli("fix", str(moe))
    assert result.returncode == 2
    assert f"{tmp_path / 'pyproject.toml'}: [tool.allocaudit] runtime-module: " in result.stderr
    assert "'myengine/rt.py'" in result.stderr
    assert (moe / "eager_layer.py").read_text() == EAGER


def test_fix_warns_when_the_module_is_not_a_vendored_runtime(tmp_path):
    moe = make_engine(tmp_path, vendored=False)
    result = cli("fix", "--no-cache", "--diff", "--runtime-module", "myengine.nowhere", str(moe))
    assert result.returncode == 1
    assert result.stderr.count("warning:") == 1  # once, not once per file
    assert "warning: runtime module `myengine.nowhere` is not a file of this project" in result.stderr
    (tmp_path / "myengine" / "workspaces.py").write_text(OWN_HELPER)
    result = cli("fix", "--no-cache", "--diff", "--runtime-module", "myengine.workspaces", str(moe))
    assert "warning: runtime module `myengine.workspaces`" in result.stderr
    assert "was not written by `allocaudit vendor-runtime`" in result.stderr


def test_a_lazy_module_stays_lazy_with_allocaudits_own_runtime(tmp_path):
    moe = make_engine(tmp_path, vendored=False)
    result = cli("fix", "--no-cache", str(moe / "lazy_layer.py"))
    assert result.returncode == 0, result.stdout + result.stderr
    lazy = (moe / "lazy_layer.py").read_text()
    assert "\n    from allocaudit.runtime import get_empty\n" in lazy
    assert "\nfrom allocaudit.runtime" not in lazy
    import subprocess
    import sys

    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "from myengine.moe import lazy_layer\n"
        "assert 'torch' not in sys.modules\n"
        "import torch\n"
        "print(lazy_layer.forward(torch.arange(8.0), 3), 'allocaudit.runtime' in sys.modules)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["3.0", "True"]


def test_unfix_restores_a_module_level_import_in_a_lazy_loader_module(tmp_path):
    # What fix wrote before it knew lazy modules: the runtime imported at module level in a
    # module whose `torch` is a LazyLoader. The sites were left by unfix ("`torch` names
    # something else"); the name is torch when the module runs, so they are restored.
    path = tmp_path / "placeholders.py"
    path.write_text(
        "from typing import TYPE_CHECKING\n"
        "from allocaudit.runtime import get_empty\n\n"
        "if TYPE_CHECKING:\n    import torch\nelse:\n"
        '    torch = LazyLoader("torch", globals(), "torch")\n\n\n'
        "def starts(mask):\n"
        '    return torch.diff(mask, prepend=get_empty(1, mask.dtype, device=mask.device, cache_name="p.starts", zero=True)) == 1\n'
    )
    result = cli("unfix", str(path))
    assert result.returncode == 0 and result.stdout.strip() == "Restored 1 site in 1 file (0 skipped).", result.stdout
    text = path.read_text()
    assert "get_empty" not in text and "import torch\nelse:" in text
    assert "prepend=torch.zeros(1, dtype=mask.dtype, device=mask.device)" in text
