"""AA101: a CUDA tensor allocated on every call and dead by its end — a reuse candidate."""

from __future__ import annotations

from typing import Iterator

from allocaudit.auditor.analysis.sites import WORKSPACE, ModuleFacts
from allocaudit.auditor.rules.base import FixAvailability, Report, Rule, evidence


class WorkspaceAllocation(Rule):
    """Fix safety: the rewrite to `get_empty` keeps what the call allocates (shape, dtype and
    device as written, zeros where `torch.zeros` gave zeros) and is offered only for sites
    that die within the call (`allocaudit.auditor.analysis.fixability` says which forms keep
    their meaning exactly, and why the others do not). The runtime then guards what static
    analysis cannot see: it never hands out memory a live tensor still uses."""

    CODE = "AA101"
    NAME = "per-call-cuda-workspace"
    SUMMARY = "CUDA workspace allocated on every call; reuse it with get_empty"
    FIX = FixAvailability.SOMETIMES
    EXPLAIN = """\
Why: a per-call function (a MoE layer's forward, a kernel wrapper) allocates a CUDA
tensor that dies before the call returns. Every step pays the caching allocator again,
memory fragments across batch sizes, and under CUDA graphs each captured batch size keeps
its own copy of the workspace in the graph pool: peak memory grows with every size
captured. The device may be literal ('cuda', torch.device('cuda', i)), inherited
(x.device, new_*, *_like: reported with medium confidence) or an unresolved variable
(low confidence; `--min-confidence medium` hides those).

Fix: `allocaudit fix` rewrites fixable sites to the runtime cache, which keeps one buffer
per site and device, validates dtype/device/size, zeroes exactly what `torch.zeros` would,
and never frees a buffer a captured graph still uses:

    ws = torch.zeros(m, hidden, dtype=torch.bfloat16, device="cuda")

becomes

    from allocaudit.runtime import get_empty
    ws = get_empty((m, hidden), torch.bfloat16, device="cuda",
                   cache_name="mypkg.moe.MoE.forward.ws", zero=True)

Sites the codemod leaves alone say why in the JSON output (`not_fixable_reason`):
torch.compile'd functions, custom-op implementations, `out=`/`requires_grad=`/
`pin_memory=`, ones/full fills, strides, and `*_like` without an explicit
memory_format=torch.contiguous_format.
"""
    VALID = (
        # Not CUDA, or the default device.
        "import torch\ndef forward(x):\n    a = torch.empty(4, device='cpu')\n    b = torch.zeros(4)\n    kernel(a, b)\n",
        # Returned or stored: escapes, not a workspace.
        "import torch\ndef forward(x):\n    out = torch.empty_like(x)\n    kernel(x, out)\n    return out\n",
        "import torch\nclass M:\n    def forward(self, x):\n        self.buf = torch.empty(4, device='cuda')\n",
        # Set-up code runs once.
        "import torch\nclass M:\n    def __init__(self):\n        w = torch.empty(4, device='cuda')\n        self.w = w * 2\n"
        "    def create_weights(self, n):\n        scratch = torch.zeros(n, device='cuda')\n        fill(scratch)\n",
        # One-off lazy init.
        "import torch\nclass M:\n    def forward(self, x):\n        if self._ws is None:\n            self._ws = torch.empty(8, device='cuda')\n        kernel(x, self._ws)\n",
        # `torch` shadowed by a parameter is not torch.
        "def forward(torch, x):\n    ws = torch.empty(4, device='cuda')\n    kernel(x, ws)\n",
        # Fake kernels run on fake tensors while tracing.
        "import torch\n@torch.library.register_fake('moe::gemm')\ndef _(x):\n    ws = torch.empty(4, device=x.device)\n    return x\n"
        "def gemm_fake(x):\n    tmp = torch.empty(4, device=x.device)\n    return x\n",
    )
    INVALID = (
        # Literal devices, aliases and separate-int / tuple / list / starred shapes.
        "import torch\nimport torch as th\nfrom torch import empty as E\n"
        "def forward(x, m):\n"
        "    a = torch.zeros(m, 4096, dtype=torch.bfloat16, device='cuda')  # expect\n"
        "    b = th.empty((m, 4096), device='cuda:1')  # expect\n"
        "    c = E([m, 8], device=torch.device('cuda', 0))  # expect\n"
        "    d = torch.empty(*x.shape, device=f'cuda:{x.device.index}')  # expect\n"
        "    e = torch.empty(x.shape, device=torch.cuda.current_device())  # expect\n"
        "    kernel(x, a, b, c, d, e)\n",
        # Inherited and variable devices, new_* and a local alias of several factories.
        "import torch\n"
        "def forward(x, device, deterministic):\n"
        "    init = torch.zeros if deterministic else torch.empty\n"
        "    a = init((4,), device='cuda')  # expect\n"
        "    b = x.new_zeros(4, 4)  # expect\n"
        "    c = torch.empty(4, device=device)  # expect\n"
        "    dev = x.device\n"
        "    d = torch.empty(torch.Size([4, 4]), device=dev)  # expect\n"
        "    kernel(a, b, c, d)\n",
        # Workspace helpers return scratch buffers to their caller.
        "import torch\nclass DeepGemmMoE:\n    def get_workspace(self, m_max, dtype):\n"
        "        ws0 = torch.empty((32, m_max, 4096), dtype=torch.float8_e4m3fn, device='cuda')  # expect\n"
        "        ws1 = torch.empty((32, m_max, 3072), dtype=dtype, device='cuda')  # expect\n"
        "        return {'workspace_0': ws0, 'workspace_1': ws1}\n",
        # Loops, comprehensions and moved allocations; `with torch.device`.
        "import torch\ndef forward(chunks, n):\n"
        "    for c in chunks:\n        tmp = torch.empty(n, device='cuda')  # expect\n        kernel(c, tmp)\n"
        "    bufs = [torch.zeros(n, device='cuda') for _ in chunks]  # expect\n    kernel(*bufs)\n"
        "    host = torch.empty(n).cuda()  # expect\n    kernel(host)\n"
        "    with torch.device('cuda'):\n        scratch = torch.empty(n)  # expect\n        kernel(scratch)\n",
    )

    def check(self, facts: ModuleFacts) -> Iterator[Report]:
        for site in facts.sites:
            if site.site_class != WORKSPACE or not site.device.on_cuda:
                continue
            message = f"`{site.api}` allocates a CUDA workspace on every call of `{site.qualname}` ({evidence(site)}): reuse it with get_empty"
            yield Report(site.call, message, site)
