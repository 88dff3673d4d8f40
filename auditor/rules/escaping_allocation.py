"""AA102: a CUDA tensor allocated on every call that outlives the call (inventory)."""

from __future__ import annotations

from typing import Iterator

from allocaudit.auditor.analysis.factories import FACTORY_HINTS
from allocaudit.auditor.analysis.sites import ESCAPES, ModuleFacts
from allocaudit.auditor.rules.base import Invalid, Report, Rule, Valid, evidence


class EscapingAllocation(Rule):
    CODE = "AA102"
    NAME = "per-call-cuda-escaping"
    HINTS = FACTORY_HINTS
    SUMMARY = "CUDA tensor allocated on every call outlives the call (not a workspace)"
    DEFAULT = False
    EXPLAIN = """\
Why: the tensor is allocated on every call of a per-call function but is returned,
yielded, stored on an attribute or a global, added to a container that outlives the
call, or saved for backward. It is a result, not scratch space: reusing its memory on the
next call would overwrite what the caller still holds. This rule is an inventory (off by
default; `--select AA102` turns it on) so that you can see every per-call allocation and
the evidence of why it is not a reuse candidate.

Fix: usually none. If the caller only uses the result within the same step, consider
passing an output buffer in (the `out=` idiom), and allocate that buffer once.

    def forward(self, x):
        out = torch.empty_like(x)   # AA102: returned to the caller
        kernel(x, out)
        return out
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
            class M:
                def forward(self, x, out=None):
                    if out is None:
                        out = torch.empty_like(x)  # expect
                    self.last = torch.zeros(4, device='cuda')  # expect
                    a = b = torch.empty(4, device='cuda')  # expect
                    self.history.append(b.view(2, 2))
                    c = torch.empty(4, device='cuda')  # expect
                    def reader():
                        return c
                    self.callbacks.append(reader)
                    kernel(x, out)
                    return out
                def steps(self, n):
                    for _ in range(n):
                        yield torch.empty(n, device='cuda')  # expect
            """
        ),
        # `out=` returns the very buffer.
        Invalid(
            """
            import torch
            def forward(a, b):
                ws = torch.empty(4, device='cuda')  # expect
                return torch.mm(a, b, out=ws)
            """,
            site_class="escapes",
        ),
    )

    def check(self, facts: ModuleFacts) -> Iterator[Report]:
        for site in facts.sites:
            if site.site_class != ESCAPES or not site.device.on_cuda:
                continue
            yield Report(site.call, f"`{site.api}` allocates on every call of `{site.qualname}` and escapes ({evidence(site)})", site)
