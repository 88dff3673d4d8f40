"""Name resolution, device classes and site classes, asserted on the facts of small modules.

What AA101 reports and which of its sites `fix` may rewrite are the rule's own cases
(auditor/rules/workspace_allocation.py)."""

from pathlib import Path
import textwrap

import pytest

from allocaudit.auditor.app.engine import scan, scan_source
from allocaudit.auditor.settings import Settings

ALL = Settings(select=("AA1",))  # the allocation-site rules


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
        "torch.zeros(4, device='cuda', out=buf)",  # fills `buf`: allocates nothing
    ],
)
def test_not_reported_as_a_cuda_allocation(call):
    assert findings(f"import torch\ndef forward(x, dtype, buf):\n    ws = {call}\n    k(ws)\n") == []


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


def test_not_per_call_names_are_configurable():
    source = "import torch\nclass M:\n    def step(self):\n        ws = torch.empty(4, device='cuda')\n        k(ws)\n    def __init__(self):\n        ws = torch.empty(4, device='cuda')\n        k(ws)\n"
    assert [f.site_class for f in findings(source)] == ["workspace", "init"]
    settings = Settings(select=("ALL",), not_per_call=("step",), per_call=("__init__",))
    assert [f.site_class for f in findings(source, settings)] == ["init", "workspace"]


def test_memoized_and_nested_in_init_are_not_per_call():
    source = (
        "import functools, torch\n@functools.lru_cache\ndef table(n):\n    t = torch.empty(n, device='cuda')\n    return t\n"
        "class M:\n    def __init__(self):\n        def make():\n            return torch.zeros(4, device='cuda')\n        self.w = make()\n"
    )
    assert [f.site_class for f in findings(source)] == ["init", "init"]


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


# -- what calls do with a buffer -------------------------------------------------------


def test_returned_through_a_local_helper_that_returns_its_argument():
    source = (
        "import torch\n"
        "def _view_of(buf, n):\n    return buf.flatten()[:n]\n"
        "def finalize(out, x):\n    out.copy_(x)\n    return out\n"
        "def forward(x):\n    ws = torch.empty(x.numel() * 2, device='cuda')\n    return _view_of(ws, x.numel())\n"
        "def forward2(x):\n    out = torch.empty(x.shape, device='cuda')\n    return finalize(out, x)\n"
        "def forward3(x):\n    ws = torch.empty(x.shape, device='cuda')\n    y = _view_of(ws, 4)\n    kernel(y)\n    return x\n"
    )
    assert [(f.line, f.site_class) for f in findings(source)] == [(8, "escapes"), (11, "escapes"), (14, "workspace")]


def test_kept_by_wrappers_constructors_and_helpers_that_store():
    source = (
        "import torch\n"
        "def install_parameter(layer, name, t):\n    setattr(layer, name, torch.nn.Parameter(t, requires_grad=False))\n"
        "def prepare(x):\n    counts = torch.zeros(8, device='cuda')\n    return x, Meta(counts=counts)\n"
        "def shrink(layer):\n    p = torch.nn.Parameter(torch.empty(4, device='cuda'), requires_grad=False)\n    layer.p = p\n"
        "def pad(layer):\n    w = torch.zeros(4, 4, device='cuda')\n    install_parameter(layer, 'w', w)\n"
    )
    result = findings(source)
    assert [(f.line, f.site_class) for f in result] == [(5, "escapes"), (8, "escapes"), (11, "escapes")]
    assert "kept by `install_parameter(...)`: stored with setattr" in result[2].message


def test_private_helpers_called_only_from_set_up_code_are_not_per_call():
    source = (
        "import torch\nclass MoE:\n"
        "    def __init__(self):\n        self._create_buffers(8)\n"
        "    def _create_buffers(self, n):\n        self._logits = torch.empty(n, device='cuda')\n"
        "    def _helper(self, n):\n        tmp = torch.empty(n, device='cuda')\n        k(tmp)\n"
        "    def forward(self, x):\n        self._helper(4)\n"
        "    def warmup(self):\n        ws = torch.empty(4, device='cuda')\n        k(ws)\n"
    )
    result = findings(source)
    assert [(f.line, f.site_class) for f in result] == [(6, "init"), (8, "workspace"), (13, "init")]
    assert "only called from set-up code (`MoE.__init__`)" in result[0].message


def test_memo_dict_and_grow_on_demand_are_lazy_init():
    source = (
        "import torch\nclass M:\n"
        "    def scales(self, n, dev):\n"
        "        s = self._scales.get(dev)\n"
        "        if s is None or s.numel() < n:\n"
        "            s = torch.ones(n, device=dev)\n"
        "            self._scales[dev] = s\n"
        "        return s[:n]\n"
        "    def ensure(self, rows):\n"
        "        if rows <= self.capacity:\n            return\n"
        "        self.buf = torch.empty(rows, device='cuda')\n"
        "        self.capacity = rows\n"
    )
    assert [(f.line, f.site_class) for f in findings(source)] == [(6, "init"), (12, "init")]


def test_cpu_only_branches_and_accelerator_current_device():
    source = (
        "import torch\ndef forward(x, platform, acc):\n"
        "    if platform.is_cpu():\n        a = torch.empty(4, device=x.device)\n        k(a)\n"
        "    if not platform.is_cpu():\n        b = torch.empty(4, device=x.device)\n        k(b)\n"
        "    c = torch.empty(4, device=acc().current_device())\n    k(c)\n"
        "    dev = x.device\n    d = torch.empty(4, device=dev)\n    k(d)\n"
    )
    result = findings(source)
    assert [(f.line, f.device_form) for f in result] == [(7, "inherited"), (9, "cuda-current"), (12, "inherited")]
    assert "device dev = x.device" in result[2].message


def test_private_helper_inherited_from_another_class_of_the_module():
    source = (
        "import torch\nclass Base:\n"
        "    def _pad(self, layer):\n        w = layer.w.new_zeros(4, 4)\n        w[:2] = layer.w\n        layer.w.data = w\n"
        "class Experts(Base):\n    def process_weights_after_loading(self, layer):\n        self._pad(layer)\n"
    )
    assert one(source).site_class == "init"


def test_global_statement_at_module_level_is_harmless():
    # A `global` at module level is legal and changes nothing; it once sent the lookup in circles.
    source = "import torch\nglobal counter\ncounter = 0\ndef forward(x):\n    global counter\n    ws = torch.empty(4, device='cuda')\n    k(ws, counter)\n"
    assert one(source).code == "AA101"


def test_a_file_whose_only_allocations_are_get_empty_calls_is_analysed(tmp_path):
    # What `fix` wrote: the prefilter must not skip it, so that AA206 runs on it.
    (tmp_path / "fixed.py").write_text(
        "from allocaudit.runtime import get_empty\n"
        "def forward(x, dt):\n"
        "    a = get_empty((4,), dt, cache_name='moe.ws')\n"
        "    b = get_empty((8,), dt, cache_name='moe.ws')\n"
        "    kernel(a, b)\n"
    )
    result = scan([str(tmp_path / "fixed.py")], Settings(select=("AA206",)))
    assert [(f.code, f.line) for f in result.findings] == [("AA206", 4)]


def test_a_function_of_another_module_of_the_tree_decides_what_its_result_holds(tmp_path):
    package = tmp_path / "pkg"
    (package / "layers").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "layers" / "__init__.py").write_text("")
    quant = package / "quant.py"
    quant.write_text(
        "import torch\n"
        "def quant(x, out_q=None):\n"
        "    x_q = out_q if out_q is not None else torch.empty(x.shape, device=x.device)\n"
        "    x_s = torch.empty(x.shape[0], device=x.device)\n"
        "    return x_q, x_s\n"
    )
    layer = package / "layers" / "moe.py"
    layer.write_text(
        "import torch\n"
        "from pkg.quant import quant\n"
        "from .. import quant as q\n"
        "def forward(x, out):\n"
        "    act = torch.empty(x.shape, device='cuda')\n"
        "    kernel(x, act)\n"
        "    return quant(act, out_q=out)\n"
        "def scales(x):\n"
        "    buf = torch.empty(x.shape, device='cuda')\n"
        "    return q.quant(x, buf)[1]\n"
    )
    settings = Settings(select=("AA101", "AA102"))
    cache = tmp_path / "cache"
    # Only the layer is scanned; the module it imports is read to know what quant returns.
    found = scan([str(layer)], settings, cache_dir=cache)
    assert [(f.line, f.code, f.fixable) for f in found.findings] == [(5, "AA101", True), (9, "AA101", True)]
    # When quant starts returning its input (and out_q second), the cached result is stale.
    quant.write_text(quant.read_text().replace("return x_q, x_s", "return x, x_q"))
    again = scan([str(layer)], settings, cache_dir=cache)
    assert again.cache_hits == 0
    assert [(f.line, f.code) for f in again.findings] == [(5, "AA102"), (9, "AA102")]


def test_a_function_the_tree_calls_only_from_weight_loading_is_set_up(tmp_path):
    package = tmp_path / "moe"
    (package / "oracle").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "oracle" / "__init__.py").write_text("")
    (package / "ep.py").write_text(
        "import torch\n"
        "def _dequant_rows(packed, scale):\n"
        "    values = torch.empty(packed.shape[0], packed.shape[1] * 2, dtype=torch.float32, device=packed.device)\n"
        "    values[:, ::2] = packed & 15\n"
        "    return (values * scale).to(torch.bfloat16)\n"
        "def ep_weights(w13, scale):\n"
        "    return _dequant_rows(w13, scale)\n"
        "def forward_tokens(x):\n"
        "    ws = torch.empty(x.shape, device=x.device)\n"
        "    kernel(x, ws)\n"
        "    return x\n"
    )
    oracle = package / "oracle" / "fp4.py"
    oracle.write_text(
        "def convert_weight_to_ep_format(layer):\n"
        "    from moe.ep import ep_weights\n"
        "    layer.w13 = ep_weights(layer.w13, layer.scale)\n"
    )
    settings = Settings(select=("AA101", "AA103"))
    cache = tmp_path / "cache"
    for _ in range(2):  # the second scan reads both passes from the cache
        found = scan([str(package)], settings, cache_dir=cache)
        assert [(Path(f.path).name, f.line, f.code) for f in found.findings] == [("ep.py", 3, "AA103"), ("ep.py", 9, "AA101")]
        assert "only called from set-up code" in found.findings[0].message
    # A per-call caller anywhere in the tree makes it per call again.
    oracle.write_text(oracle.read_text() + "def apply(layer, x):\n    from moe.ep import ep_weights\n    return ep_weights(x, layer.scale)\n")
    found = scan([str(package)], settings, cache_dir=cache)
    assert [(Path(f.path).name, f.line, f.code) for f in found.findings] == [("ep.py", 3, "AA101"), ("ep.py", 9, "AA101")]


@pytest.mark.parametrize(
    "caller, code",
    [
        ("    ws, out = make_workspace(x)\n    k(x, ws, out)\n    return out.view(-1)\n", "AA102"),  # a view of its result leaves
        ("    ws, out = outer_workspace(x)\n    k(x, ws)\n    return out\n", "AA102"),  # through a second helper
        ("    ws, out = make_workspace(x)\n    self.last = ws\n", "AA102"),  # stored
        ("    ws, out = make_workspace(x)\n    k(x, ws, out)\n    return x\n", "AA101"),  # used and dropped
        ("    ws, out = outer_workspace(x)\n    k(x, ws, out)\n", "AA101"),
    ],
)
def test_a_workspace_helpers_result_is_a_workspace_unless_a_caller_lets_it_out(caller, code):
    source = (
        "import torch\n"
        "def make_workspace(x):\n"
        "    ws = torch.empty(x.shape[0] * 2, device='cuda')\n"
        "    return ws, ws[: x.shape[0]]\n"
        "def outer_workspace(x):\n"
        "    return make_workspace(x)\n"
        "def forward(self, x):\n" + caller
    )
    assert [(f.line, f.code) for f in findings(source)] == [(3, code)]
