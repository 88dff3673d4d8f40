"""Promises the repository makes about itself: the README's commands, CI, the layout."""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands():
    return re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text())


def test_readme_starts_with_the_two_commands_and_ci_runs_the_test_one():
    setup, tests = _readme_commands()[:2]
    assert setup.endswith("allocaudit scan examples/")
    assert "pip install torch==2.13.0" in tests
    test_command = tests.rsplit("&& ", 1)[1]
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == test_command, "CI must run the README's exact test command"
    assert "pip install -q torch==2.13.0" in "\n".join(ci), "CI installs torch 2.13.0 first"


def test_every_package_folder_is_declared_for_setuptools():
    declared = set(re.findall(r'"(allocaudit\.[a-z_.]+)"', (ROOT / "pyproject.toml").read_text()))
    on_disk = {
        "allocaudit." + ".".join(init.parent.relative_to(ROOT).parts)
        for part in ("auditor", "rewrites", "runtime")
        for init in (ROOT / part).rglob("__init__.py")
        if "fixtures" not in init.parts
    }
    assert on_disk <= declared, f"missing from [tool.setuptools] packages: {on_disk - declared}"


def test_auditor_and_rewrites_do_not_import_torch_or_matplotlib():
    # Every module of both packages (the CLI, the scan and the codemods) but the dynamic
    # auditor, which imports torch on purpose; a pre-commit hook's environment has no torch.
    modules = sorted(
        "allocaudit." + ".".join(source.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for part in ("auditor", "rewrites")
        for source in (ROOT / part).rglob("*.py")
        if "profiling" not in source.parts and source.name != "__main__.py"
    )
    assert "allocaudit.rewrites.fix" in modules and "allocaudit.auditor.app.cli" in modules
    code = (
        f"import sys\nfor name in {modules!r}:\n    __import__(name)\nassert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib was imported'"  # the plot extra: only when drawing
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_runtime_imports_nothing_of_the_auditor_or_rewrites():
    for source in (ROOT / "runtime").rglob("*.py"):
        text = source.read_text()
        assert "allocaudit.auditor" not in text and "allocaudit.rewrites" not in text, source


# The layers of the code, bottom up: each layer's modules (by name prefix; the longest match
# wins) and the layers it may import besides itself. A module in no layer, or an import that
# the table does not allow (an upward one), fails the test: say where a new module belongs,
# and let a lower layer take a callback rather than import upward.
LAYERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # the runtime: what patched code imports (the standard library and torch only)
    "runtime": (("allocaudit.runtime",), ()),
    # plain values and helpers every layer above shares
    "base": (
        (
            "allocaudit.auditor.findings", "allocaudit.auditor.plural", "allocaudit.auditor.version",
            "allocaudit.auditor.usage", "allocaudit.auditor.source", "allocaudit.auditor.suppression",
            "allocaudit.auditor.progress",
        ),
        (),
    ),
    # the static analysis of one module: nothing outside itself
    "analysis": (("allocaudit.auditor.analysis",), ()),
    # the settings, with the analysis options they carry; no rule (loading a config loads none)
    "settings": (("allocaudit.auditor.settings",), ("analysis",)),
    "rules": (("allocaudit.auditor.rules", "allocaudit.auditor.selection"), ("analysis", "settings")),
    # which files a scan reads, and with which settings
    "scope": (
        ("allocaudit.auditor.discovery", "allocaudit.auditor.project", "allocaudit.auditor.content_scope"),
        ("base", "settings", "rules"),
    ),
    "formats": (("allocaudit.auditor.formats",), ("base", "analysis", "rules")),
    "profiling": (("allocaudit.auditor.profiling",), ("base", "rules", "formats", "runtime")),
    # the codemods of one module's source
    "rewrites": (("allocaudit.rewrites",), ("base", "analysis", "settings", "rules")),
    "engine": (("allocaudit.auditor.app.engine",), ("base", "analysis", "settings", "rules", "scope")),
    # the top: the command line, and the runs it makes over files
    "cli": (
        ("allocaudit.auditor.app", "allocaudit.auditor.__main__"),
        ("base", "analysis", "settings", "rules", "scope", "formats", "profiling", "rewrites", "engine"),
    ),
}


def _layer(module: str) -> str:
    best = max(
        ((prefix, layer) for layer, (prefixes, _) in LAYERS.items() for prefix in prefixes if module == prefix or module.startswith(prefix + ".")),
        key=lambda match: len(match[0]),
        default=None,
    )
    if best is None and module in ("allocaudit.auditor", "allocaudit"):
        return "base"  # the package itself: an empty __init__
    assert best is not None, f"{module} is in no layer of tests/test_repository.py LAYERS: say where it belongs"
    return best[1]


def _imported(source: Path, module: str) -> set[str]:
    """The allocaudit modules (or names of them) that a file imports, lazily inside a function too."""
    package = module if source.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], *filter(None, [base])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name == "allocaudit" or name.startswith("allocaudit.")}


def test_each_layer_imports_only_the_layers_below_it():
    wrong = []
    for part in ("auditor", "rewrites", "runtime"):
        for source in sorted((ROOT / part).rglob("*.py")):
            module = "allocaudit." + ".".join(source.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            layer = _layer(module)
            allowed = {layer, *LAYERS[layer][1]}
            names = sorted(name for name in _imported(source, module) if _layer(name) not in allowed)
            # `from a.b import c`: a.b.c says nothing more than a.b
            wrong += [f"{module} ({layer}) imports {name} ({_layer(name)})" for name in names if name.rpartition(".")[0] not in names]
    assert not wrong, "imports the layers do not allow:\n" + "\n".join(wrong)


def _interpreter(version: str):
    """An interpreter of ``version`` (e.g. "3.10") on PATH or under pyenv, or None."""
    import glob
    import shutil

    candidates = [shutil.which(f"python{version}")] + sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python")))
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return candidate
    return None


def test_the_oldest_python_declared_compiles_the_code_and_has_the_ast_nodes_it_reads():
    # What broke 3.9 while `requires-python` said >=3.9: `ast.MatchAs` does not exist there.
    minimum = re.search(r'requires-python = ">=(3\.[0-9]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    python = _interpreter(minimum)
    if python is None:
        pytest.skip(f"no Python {minimum} here")
    sources = [p for part in ("auditor", "rewrites", "runtime") for p in (ROOT / part).rglob("*.py")]
    compiled = subprocess.run([python, "-m", "py_compile", *map(str, sources)], capture_output=True, text=True)
    assert compiled.returncode == 0, compiled.stderr
    names = subprocess.run([python, "-c", "import ast; print(' '.join(dir(ast)))"], capture_output=True, text=True, check=True)
    used = {name for source in sources for name in re.findall(r"\bast\.([A-Za-z_]+)", source.read_text())}
    assert used <= set(names.stdout.split()), f"missing from Python {minimum}'s ast: {sorted(used - set(names.stdout.split()))}"
