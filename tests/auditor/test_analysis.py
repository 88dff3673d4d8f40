"""Name resolution, device classes and site classes, asserted on the facts of small modules."""

import textwrap

import pytest

from allocaudit.auditor.engine import scan, scan_source
from allocaudit.auditor.settings import Settings

ALL = Settings(select=("ALL",))


def findings(source, settings=ALL):
    return scan_source("mod.py", textwrap.dedent(source).encode(), settings)


def one(source, settings=ALL):
    (finding,) = findings(source, settings)
    return finding


@pytest.mark.parametrize(
    "call, form",
    [
        ("torch.empty(4, device='cuda')", "cuda"),
        ("torch.empty(4, device='cuda:1')", "cuda"),
        ("torch.empty(4, device=f'cuda:{rank}')", "cuda"),
        ("torch.empty(4, device=torch.device('cuda', 1))", "cuda"),
        ("torch.empty(4, device=torch.device(type='cuda'))", "cuda"),
        ("torch.empty(4, device=0)", "cuda"),
        ("torch.empty(4, device=torch.cuda.current_device())", "cuda-current"),
        ("torch.empty(4, device=x.device)", "inherited"),
        ("torch.empty(4, device=self.device)", "inherited"),
        ("torch.empty_like(x)", "inherited"),
        ("x.new_empty(4)", "inherited"),
        ("torch.empty(4, device=dev)", "variable"),
        ("torch.empty(4, device='cuda' if flag else 'cuda:1')", "cuda"),
        ("torch.empty(4).cuda()", "cuda"),
        ("torch.empty(4).to('cuda:0')", "cuda"),
        ("torch.empty(4).to(x.device)", "inherited"),
    ],
)
def test_device_forms(call, form):
    f = one(f"import torch\nclass M:\n    def forward(self, x, dev, flag, rank):\n        ws = {call}\n        k(ws)\n")
    assert (f.device_form, f.code) == (form, "AA101")


@pytest.mark.parametrize(
    "call",
    [
        "torch.empty(4, device='cpu')",
        "torch.empty(4, device='meta')",
        "torch.empty(4, device=torch.device('cpu'))",
        "torch.empty(4)",
        "torch.empty(4, device=None)",
        "torch.empty(4).to(torch.float16)",
        "torch.empty(4).to(dtype)",
    ],
)
def test_non_cuda_is_never_reported(call):
    assert findings(f"import torch\ndef forward(x, dtype):\n    ws = {call}\n    k(ws)\n") == []


def test_local_device_variable_is_followed():
    f = one("import torch\ndef forward(x):\n    dev = torch.device('cuda', 0)\n    ws = torch.empty(4, device=dev)\n    k(ws)\n")
    assert f.device_form == "cuda"
    f = one("import torch\nDEVICE = 'cuda'\ndef forward(x):\n    ws = torch.empty(4, device=DEVICE)\n    k(ws)\n")
    assert f.device_form == "cuda"


def test_with_torch_device_sets_the_default():
    f = one("import torch\ndef forward(n):\n    with torch.device('cuda'):\n        ws = torch.empty(n)\n        k(ws)\n")
    assert f.device_form == "cuda"


@pytest.mark.parametrize(
    "header, call",
    [
        ("import torch as th", "th.zeros(4, device='cuda')"),
        ("from torch import zeros as Z", "Z(4, device='cuda')"),
        ("from torch import empty", "empty(4, device='cuda')"),
        ("import torch\nalloc = torch.empty", "alloc(4, device='cuda')"),
        ("import torch.nn.functional as F\nimport torch", "torch.empty(4, device='cuda')"),
    ],
)
def test_names_resolve_through_imports_and_aliases(header, call):
    f = one(f"{header}\ndef forward(x):\n    ws = {call}\n    k(ws)\n")
    assert f.api in ("torch.zeros", "torch.empty")


@pytest.mark.parametrize(
    "source",
    [
        "import torch\ndef forward(torch):\n    ws = torch.empty(4, device='cuda')\n    k(ws)\n",
        "from torch import empty\ndef forward(x):\n    empty = make_allocator()\n    ws = empty(4, device='cuda')\n    k(ws)\n",
        "import numpy as torch\ndef forward(x):\n    ws = torch.empty(4, device='cuda')\n    k(ws)\n",
        "def forward(x):\n    ws = torch.empty(4, device='cuda')\n    k(ws)\n",  # torch never imported
        "import torch\ndef forward(x):\n    for torch in mods:\n        ws = torch.empty(4, device='cuda')\n",
    ],
)
def test_shadowed_or_foreign_names_are_not_torch(source):
    assert findings(source) == []


def test_alias_of_several_factories_is_reported_but_not_fixable():
    f = one("import torch\ndef forward(x, det):\n    init = torch.zeros if det else torch.empty\n    ws = init(4, device='cuda')\n    k(ws)\n")
    assert f.api == "torch.empty|torch.zeros"
    assert not f.fixable and "alias of several" in f.not_fixable_reason


def test_relative_import_of_an_alias_inside_the_scanned_tree(tmp_path):
    pkg = tmp_path / "engine" / "moe"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "alloc.py").write_text("import torch\ncuda_zeros = torch.zeros\n")
    (pkg / "layer.py").write_text(
        "from .alloc import cuda_zeros\nfrom engine.moe.alloc import cuda_zeros as cz\n"
        "def forward(x):\n    a = cuda_zeros(4, device='cuda')\n    b = cz(4, device='cuda')\n    k(a, b)\n"
    )
    result = scan([str(tmp_path)], Settings(), cache_dir=None)
    assert [(f.line, f.api) for f in result.findings] == [(4, "torch.zeros"), (5, "torch.zeros")]


@pytest.mark.parametrize(
    "shape",
    ["(m, 4)", "[m, 4]", "(m)", "m, 4", "*shape", "m, *rest", "x.shape", "torch.Size([m, 4])", "shape", "(m, 4) if big else (4, m)", "size=(m, 4)"],
)
def test_every_shape_form_is_a_fixable_workspace(shape):
    f = one(f"import torch\ndef forward(x, m, shape, rest, big):\n    ws = torch.empty({shape}, device='cuda')\n    k(ws)\n")
    assert (f.code, f.site_class, f.fixable) == ("AA101", "workspace", True)


@pytest.mark.parametrize(
    "body, evidence",
    [
        ("ws = torch.empty(4, device='cuda')\n    return ws", "returned"),
        ("ws = torch.empty(4, device='cuda')\n    return ws[:2].view(2, 1)", "returned"),
        ("ws = torch.empty(4, device='cuda')\n    return ws.to(torch.float16)", "returned"),
        ("ws = torch.empty(4, device='cuda')\n    return (ws, 1)", "returned"),
        ("self.ws = torch.empty(4, device='cuda')", "stored on `self.ws`"),
        ("a = b = torch.empty(4, device='cuda')\n    self.keep = b", "stored on `self.keep`"),
        ("ws = torch.empty(4, device='cuda')\n    self.bufs.append(ws)", "added to `self.bufs`"),
        ("ws = torch.empty(4, device='cuda')\n    CACHE['k'] = ws", "stored into `CACHE[...]`"),
        ("ws = torch.empty(4, device='cuda')\n    yield ws", "yielded"),
        ("ws = torch.empty(4, device='cuda')\n    ctx.save_for_backward(ws)", "saved for backward"),
        ("ws = torch.empty(4, device='cuda')\n    def get():\n        return ws\n    return get", "captured by closure `get`"),
        ("bufs = []\n    bufs.append(torch.empty(4, device='cuda'))\n    return bufs", "returned"),
        ("if out is None:\n        out = torch.empty(4, device='cuda')\n    k(out)\n    return out", "optional-output idiom"),
    ],
)
def test_escape_evidence(body, evidence):
    f = one(f"import torch\nclass M:\n    def forward(self, x, ctx, out=None):\n    {body}\n".replace("\n    ", "\n        ").replace("class M:\n        def", "class M:\n    def"))
    assert f.site_class == "escapes" and f.code == "AA102"
    assert evidence in f.message


@pytest.mark.parametrize(
    "body",
    [
        "ws = torch.empty(4, device='cuda')\n    kernel(x, ws)\n    return x",
        "ws = torch.empty(4, device='cuda')\n    local = []\n    local.append(ws)\n    kernel(*local)",
        "ws = torch.empty(4, device='cuda')\n    kernel(out=ws)\n    return ws.sum()",
        "ws = torch.empty(4, device='cuda')\n    y = ws.view(2, 2)\n    kernel(y)",
    ],
)
def test_consumed_values_are_workspaces(body):
    f = one(f"import torch\ndef forward(x):\n    {body}\n")
    assert f.site_class == "workspace"


def test_not_per_call_names_are_configurable():
    source = "import torch\nclass M:\n    def warmup(self):\n        ws = torch.empty(4, device='cuda')\n        k(ws)\n    def __init__(self):\n        ws = torch.empty(4, device='cuda')\n        k(ws)\n"
    assert [f.site_class for f in findings(source)] == ["workspace", "init"]
    settings = Settings(select=("ALL",), not_per_call=("warmup",), per_call=("__init__",))
    assert [f.site_class for f in findings(source, settings)] == ["init", "workspace"]


def test_memoized_and_nested_in_init_are_not_per_call():
    source = (
        "import functools, torch\n@functools.lru_cache\ndef table(n):\n    t = torch.empty(n, device='cuda')\n    return t\n"
        "class M:\n    def __init__(self):\n        def make():\n            return torch.zeros(4, device='cuda')\n        self.w = make()\n"
    )
    assert [f.site_class for f in findings(source)] == ["init", "init"]


@pytest.mark.parametrize(
    "call, reason",
    [
        ("torch.empty(4, device='cuda', requires_grad=True)", "requires_grad"),
        ("torch.empty(4, device='cuda', pin_memory=flag)", "pin_memory"),
        ("torch.zeros(4, device='cuda', out=buf)", "out="),
        ("torch.ones(4, device='cuda')", "ones"),
        ("torch.full((4,), 7, device='cuda')", "other than a literal zero"),
        ("torch.empty_strided((4,), (1,), device='cuda')", "strides"),
        ("torch.empty_like(x)", "memory format"),
        ("torch.empty(4, device='cuda', **kw)", "**kwargs"),
        ("torch.empty(4, device='cuda', layout=torch.sparse_coo)", "layout"),
    ],
)
def test_not_fixable_reasons(call, reason):
    f = one(f"import torch\ndef forward(x, buf, flag, kw):\n    ws = {call}\n    k(ws)\n")
    assert not f.fixable and reason in f.not_fixable_reason


@pytest.mark.parametrize(
    "call",
    ["torch.full((4,), 0, device='cuda')", "torch.zeros_like(x, memory_format=torch.contiguous_format)", "torch.empty(4, device='cuda', requires_grad=False)"],
)
def test_fixable_only_where_semantics_are_kept(call):
    assert one(f"import torch\ndef forward(x):\n    ws = {call}\n    k(ws)\n").fixable


def test_columns_count_characters_not_bytes():
    f = one("import torch\ndef forward(x):\n    é = 1; ws = torch.empty(4, device='cuda')\n    k(ws)\n")
    assert (f.line, f.col) == (3, 17)  # é is one character but two UTF-8 bytes


@pytest.mark.parametrize(
    "comment, suppressed",
    [
        ("# allocaudit: ignore[AA101]", True),
        ("# allocaudit: ignore", True),
        ("# noqa: AA101", True),
        ("# noqa", True),
        ("# noqa: E501, AA101", True),
        ("# noqa: AA102", False),
        ("# allocaudit: ignore[AA103]", False),
        ("# just a comment", False),
    ],
)
def test_suppression_comments(comment, suppressed):
    source = f"import torch\ndef forward(x):\n    ws = torch.empty(4, device='cuda')  {comment}\n    k(ws)\n"
    assert (findings(source, Settings()) == []) == suppressed


def test_suppression_on_last_line_of_a_multiline_call():
    source = "import torch\ndef forward(x):\n    ws = torch.empty(\n        4, device='cuda'\n    )  # noqa: AA101\n    k(ws)\n"
    assert findings(source, Settings()) == []


def test_min_confidence_drops_uncertain_devices():
    source = "import torch\ndef forward(x, dev):\n    a = torch.empty(4, device=dev)\n    b = torch.empty(4, device=x.device)\n    c = torch.empty(4, device='cuda')\n    k(a, b, c)\n"
    assert [f.confidence for f in findings(source, Settings())] == ["low", "medium", "high"]
    assert [f.line for f in findings(source, Settings(min_confidence="medium"))] == [4, 5]
    assert [f.line for f in findings(source, Settings(min_confidence="high"))] == [5]
