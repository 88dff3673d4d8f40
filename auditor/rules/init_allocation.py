"""AA103: a CUDA tensor allocated once — set-up code, module level, lazy init (inventory)."""

from __future__ import annotations

from typing import Iterator

from allocaudit.auditor.analysis.factories import FACTORY_HINTS
from allocaudit.auditor.analysis.sites import INIT, ModuleFacts
from allocaudit.auditor.rules.base import Invalid, Report, Rule, Valid, evidence


class InitAllocation(Rule):
    CODE = "AA103"
    NAME = "cuda-init-allocation"
    HINTS = FACTORY_HINTS
    SUMMARY = "CUDA tensor allocated once (set-up, module level or lazy init)"
    DEFAULT = False
    EXPLAIN = """\
Why: inventory, off by default (`--select AA103`). The allocation runs once, not per
call: in `__init__`, `create_weights`, `load_*`, `process_weights_after_loading`, at
module level, in a memoized function, in a fake/meta kernel (runs on fake tensors while
tracing), in one-off lazy initialisation (`if self._buf is None: self._buf = ...`), in a
function that processes weights (`align_fp8_moe_weights`, `convert_weight_to_*`, or one
that binds module parameters with `copy_or_rebind_param`/`replace_parameter`), or in a
function the scanned tree calls only from set-up code (`process_weights_after_loading`
calls `dequant_experts`, in the same module or another).
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
        Valid(
            """
            import torch
            def shuffle_weighted_sum(x):
                # `weighted` is no weight: a word counts only as a whole part of the name
                ws = torch.empty(4, device='cuda')
                kernel(x, ws)
            def dequant_experts(w):
                # called at load and per call: per call
                out = torch.empty(w.shape, dtype=torch.float32, device='cuda')
                kernel(w, out)
                return out * 2
            class Method:
                def process_weights_after_loading(self, layer):
                    layer.w = dequant_experts(layer.w)
                def apply(self, layer, x):
                    return dequant_experts(x)
            def forward(x):
                # public, called at module level only by a script's main block
                ws = torch.empty(4, device='cuda')
                kernel(x, ws)
            if __name__ == '__main__':
                forward(x0)
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
        Invalid(
            """
            import torch
            def align_fp8_moe_weights(layer):
                # named for what it does to weights
                w13 = torch.empty_like(layer.w13_weight)  # expect
                shuffle_rows(layer.w13_weight, w13)
                layer.w13_weight.copy_(w13)
            def _shuffle_scales(layer):
                # binds module parameters
                s = torch.empty_like(layer.w13_scale)  # expect
                shuffle_rows(layer.w13_scale, s)
                copy_or_rebind_param(layer, "w13_scale", s)
            def _dequant(w):
                out = torch.empty(w.shape, dtype=torch.float32, device='cuda')  # expect
                kernel(w, out)
                return out * 2
            def dequant_experts(w):
                # a module-level function only set-up code calls, and what it calls
                return _dequant(w)
            class Method:
                def process_weights_after_loading(self, layer):
                    layer.w = dequant_experts(layer.w)
            """
        ),
    )

    def check(self, facts: ModuleFacts) -> Iterator[Report]:
        for site in facts.sites:
            if site.site_class != INIT or not site.device.on_cuda:
                continue
            yield Report(site.call, f"`{site.api}` allocates once ({evidence(site)})", site)
