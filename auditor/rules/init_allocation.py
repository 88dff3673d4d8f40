"""AA103: a CUDA tensor allocated once — set-up code, module level, lazy init (inventory)."""

from __future__ import annotations

from typing import Iterator

from allocaudit.auditor.analysis.sites import INIT, ModuleFacts
from allocaudit.auditor.rules.base import Invalid, Report, Rule, Valid, evidence


class InitAllocation(Rule):
    CODE = "AA103"
    NAME = "cuda-init-allocation"
    SUMMARY = "CUDA tensor allocated once (set-up, module level or lazy init)"
    DEFAULT = False
    EXPLAIN = """\
Why: inventory, off by default (`--select AA103`). The allocation runs once, not per
call: in `__init__`, `create_weights`, `load_*`, `process_weights_after_loading`, at
module level, in a memoized function, in a fake/meta kernel (runs on fake tensors while
tracing), or in one-off lazy initialisation (`if self._buf is None: self._buf = ...`).
Such buffers are not per-call workspaces; the list helps to account for memory held for
the lifetime of the engine. Which names count as set-up is configurable
(`not-per-call` and `per-call` in `[tool.allocaudit]`).

Fix: none needed. If a "set-up" function actually runs every step, add its name to
`per-call` so that its workspaces are reported as AA101.

    class MoE(nn.Module):
        def __init__(self):
            self.w13 = torch.empty(E, 2 * I, H, device="cuda")   # AA103
"""
    VALID = (
        Valid(
            """
            import torch
            def forward(x):
                ws = torch.empty(4, device='cuda')
                kernel(x, ws)
            """
        ),
    )
    INVALID = (
        Invalid(
            """
            import torch
            TABLE = torch.zeros(16, device='cuda')  # expect
            class M:
                def __init__(self):
                    self.w = torch.empty(4, device='cuda')  # expect
                def load_weights(self, w):
                    tmp = torch.empty(4, device='cuda')  # expect
                    tmp.copy_(w)
                def forward(self, x):
                    if not hasattr(self, '_ws'):
                        self._ws = torch.empty(8, device='cuda')  # expect
                    kernel(x, self._ws)
            """
        ),
    )

    def check(self, facts: ModuleFacts) -> Iterator[Report]:
        for site in facts.sites:
            if site.site_class != INIT or not site.device.on_cuda:
                continue
            yield Report(site.call, f"`{site.api}` allocates once ({evidence(site)})", site)
