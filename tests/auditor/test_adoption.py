"""Adopting allocaudit on a large codebase, through the real command: `--add-noqa`,
`per-file-ignores`, file-level suppression, the unused-suppression report (AA001), and
suppression comments that are comments (the tokenizer's, not a regex over the line)."""

import subprocess
import sys

import pytest

WORKSPACE = "import torch\ndef forward(x):\n    ws = torch.empty(4, device='cuda')\n    kernel(x, ws)\n"


def run(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "allocaudit.auditor", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def codes(result):
    return [line.split(": ", 1)[1].split(" ", 1)[0] for line in result.stdout.splitlines() if ": AA" in line]


@pytest.fixture
def moe(tmp_path):
    folder = tmp_path / "moe"
    folder.mkdir()
    (tmp_path / "setup.py").write_text("")
    return folder


def test_a_noqa_inside_a_string_suppresses_nothing(moe):
    (moe / "layer.py").write_text(
        "import torch\ndef forward(x):\n    ws = torch.empty(4, device='cuda'); kernel(ws, '# noqa')\n"
        "    acc = torch.zeros(4, device='cuda'); log('''\n    # noqa: AA101''')\n    kernel(acc)\n"
    )
    assert codes(run("scan", "--no-cache", "moe", cwd=moe.parent)) == ["AA101", "AA101"]


def test_file_level_suppression(moe):
    (moe / "layer.py").write_text("# allocaudit: file-ignore[AA101]\n" + WORKSPACE)
    (moe / "other.py").write_text("# allocaudit: file-ignore[AA205]\n" + WORKSPACE)
    result = run("scan", "--no-cache", "moe", cwd=moe.parent)
    assert [line.split(":")[0] for line in result.stdout.splitlines() if "AA101" in line] == ["moe/other.py"]


def test_per_file_ignores(moe):
    (moe.parent / "pyproject.toml").write_text('[tool.allocaudit]\nper-file-ignores = {"moe/tests/*" = ["AA1"], "reference.py" = ["AA101"]}\n')
    (moe / "tests").mkdir()
    (moe / "tests" / "test_layer.py").write_text(WORKSPACE)
    (moe / "reference.py").write_text(WORKSPACE)
    (moe / "layer.py").write_text(WORKSPACE)
    result = run("scan", "--no-cache", ".", cwd=moe.parent)
    assert [line.split(":")[0] for line in result.stdout.splitlines() if "AA101" in line] == ["./moe/layer.py"]
    (moe.parent / "pyproject.toml").write_text('[tool.allocaudit]\nper-file-ignores = {"moe/*" = ["AA77"]}\n')
    bad = run("scan", "--no-cache", ".", cwd=moe.parent)
    assert bad.returncode == 2
    assert "pyproject.toml: [tool.allocaudit] per-file-ignores `moe/*`" in bad.stderr and "unknown rule code `AA77`" in bad.stderr


def test_unused_suppressions_are_reported_when_aa001_is_on(moe):
    (moe / "layer.py").write_text(
        "import torch\n"
        "def forward(x):\n"
        "    ws = torch.empty(4, device='cuda')  # noqa: AA101\n"  # used
        "    kernel(x, ws)  # noqa: AA101, E501\n"  # nothing to suppress; E501 is another tool's
        "    y = x + 1  # allocaudit: ignore[AA102]\n"  # AA102 is off by default
        "    return y  # noqa\n"  # bare: may serve another linter
    )
    assert run("scan", "--no-cache", "moe", cwd=moe.parent).returncode == 0  # off by default, like RUF100
    result = run("scan", "--no-cache", "--extend-select", "AA001", "moe", cwd=moe.parent)
    assert result.returncode == 1
    assert [line for line in result.stdout.splitlines() if "AA001" in line] == [
        "moe/layer.py:4:20: AA001 unused suppression of AA101 `# noqa: AA101, E501`: no AA101 finding on this line",
        "moe/layer.py:5:16: AA001 unused suppression of AA102 `# allocaudit: ignore[AA102]`: `AA102` is not enabled",
    ]


def test_add_noqa_suppresses_every_finding_and_keeps_other_comments(moe):
    layer = moe / "layer.py"
    layer.write_text(
        "import torch\n"
        "def forward(x, n):\n"
        "    ws = torch.empty(4, device='cuda')  # noqa: E501\n"
        "    acc = torch.zeros(n, device='cuda')  # the accumulator\n"
        "    tmp = torch.empty(len('''\n"
        "        '''), device='cuda')\n"
        "    kernel(x, ws, acc, tmp)\n"
    )
    result = run("scan", "--no-cache", "--add-noqa", "moe", cwd=moe.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "Added 3 noqa directives in 1 file."
    assert layer.read_text().splitlines()[2:6] == [
        "    ws = torch.empty(4, device='cuda')  # noqa: AA101, E501",
        "    acc = torch.zeros(n, device='cuda')  # the accumulator  # noqa: AA101",
        "    tmp = torch.empty(len('''",  # a comment here would be part of the string
        "        '''), device='cuda')  # noqa: AA101",
    ]
    assert run("scan", "--no-cache", "moe", cwd=moe.parent).returncode == 0
    again = run("scan", "--no-cache", "--add-noqa", "moe", cwd=moe.parent)
    assert again.stdout.strip() == "Added 0 noqa directives in 0 files."
