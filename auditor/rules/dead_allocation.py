"""AA104: a CUDA tensor allocated and never read — dropped, or rebound before any use."""

from __future__ import annotations

import ast
from typing import Iterator, Optional

from allocaudit.auditor.analysis.factories import FACTORY_HINTS
from allocaudit.auditor.analysis.sites import DEAD, AllocationSite, ModuleFacts
from allocaudit.auditor.rules.base import FixAvailability, FixKind, Invalid, Report, Rule, Valid, evidence

# Calls whose evaluation has no effect beyond their value: removing them changes nothing.
PURE_CALLS = frozenset(
    {
        "size", "dim", "numel", "stride", "len", "int", "float", "bool", "max", "min", "prod", "current_device",
        "get_default_dtype", "device", "Size", "cdiv", "round_up", "ceil", "floor",
    }
)


class DeadAllocation(Rule):
    """Fix safety: the fix deletes the statement that allocates, when that statement does
    nothing else: it binds (or drops) only the allocation, and every argument is a name, a
    constant, an attribute or arithmetic of them, or a call of a known pure function
    (`x.size(0)`, `len(...)`, `max(...)`). Deleting it then changes no value the program
    reads; only the allocation (and any fill kernel) is gone. Otherwise it only reports."""

    CODE = "AA104"
    NAME = "dead-cuda-allocation"
    HINTS = FACTORY_HINTS
    SUMMARY = "CUDA tensor allocated and never read (dropped, or rebound before any use)"
    FIX = FixAvailability.SOMETIMES
    FIX_KIND = FixKind.DELETE
    EXPLAIN = """\
Why: the tensor is allocated (and, for zeros/full, filled by a kernel) but nothing ever
reads it: the call's value is dropped, or the name it is bound to is rebound before any
read, or never read at all. Each call costs an allocation, often a kernel launch, and
under CUDA graphs a block of the graph's memory pool, for nothing. Such lines are
usually left over from a refactor (a preallocated output that a later version stopped
writing into).

Fix: delete the allocation. `allocaudit fix` deletes the statement when it does nothing
else (its arguments are names, constants and pure calls such as `x.size(0)`):

    topk_weights = torch.empty(m, k, dtype=torch.float32, device=x.device)   # AA104
    topk_weights = scores.softmax(dim=-1)

becomes

    topk_weights = scores.softmax(dim=-1)
"""
    VALID = (
        # Read before it is rebound, or on some path only rebound.
        Valid(
            """
            import torch
            def forward(x, flag):
                out = torch.empty_like(x)
                kernel(x, out)
                out = out.sum()
                ws = torch.empty(4, device='cuda')
                if flag:
                    ws = x
                return out, ws
            """
        ),
        # A loop may come round to an earlier read.
        Valid(
            """
            import torch
            def forward(chunks):
                prev = None
                for c in chunks:
                    if prev is not None:
                        kernel(prev, c)
                    prev = torch.empty(4, device='cuda')
            """
        ),
        # Dropped on purpose: warming a pool, reserving memory, flushing the L2 cache.
        Valid(
            """
            import torch
            def warm(device, n):
                torch.empty(n, dtype=torch.uint8, device=device)
                _ = torch.zeros(1, device=device)
                torch.empty(n // 4, dtype=torch.int, device='cuda').zero_()
            """
        ),
        # A closure or an exception handler may read it.
        Valid(
            """
            import torch
            def forward(x):
                buf = torch.empty(4, device='cuda')
                def later():
                    return buf
                try:
                    tmp = torch.empty(4, device='cuda')
                    tmp = compute(x)
                except RuntimeError:
                    log(tmp)
                return later, tmp
            """
        ),
    )
    INVALID = (
        # Rebound on the next line (SGLang's fused_topk_torch_native had this).
        Invalid(
            """
            import torch
            def fused_topk(hidden, gating, topk):
                m = hidden.shape[0]
                topk_weights = torch.empty(m, topk, dtype=torch.float32, device=hidden.device)  # expect
                topk_ids = torch.empty(m, topk, dtype=torch.int32, device=hidden.device)  # expect
                topk_weights = gating.float().softmax(dim=-1)
                topk_weights, topk_ids = torch.topk(topk_weights, topk, dim=-1)
                return topk_weights, topk_ids
            """,
            site_class="dead",
            fixable=True,
            fix="""
            import torch
            def fused_topk(hidden, gating, topk):
                m = hidden.shape[0]
                topk_weights = gating.float().softmax(dim=-1)
                topk_weights, topk_ids = torch.topk(topk_weights, topk, dim=-1)
                return topk_weights, topk_ids
            """,
        ),
        # Never read, or not before the function ends.
        Invalid(
            """
            import torch
            class M:
                def forward(self, x, mask=None):
                    zeros = torch.zeros(x.size(0), device='cuda')  # expect
                    scratch = torch.empty(len(x), device='cuda')  # expect
                    if mask is None:
                        mask = torch.ones(x.shape, device=x.device)  # expect
                    return x
            """,
            message="never read",
            fixable=True,
            fix="""
            import torch
            class M:
                def forward(self, x, mask=None):
                    if mask is None:
                        mask = torch.ones(x.shape, device=x.device)  # expect
                    return x
            """,
        ),
        # Reported, not deleted, where an argument may have effects.
        Invalid(
            """
            import torch
            def forward(x):
                scratch = torch.empty(next_size(), device='cuda')  # expect
                return x
            """,
            fixable=False,
            reason="an argument may have effects: delete the allocation by hand",
        ),
    )

    def check(self, facts: ModuleFacts) -> Iterator[Report]:
        for site in facts.sites:
            if site.site_class != DEAD or not site.device.on_cuda:
                continue
            reason = _not_removable(facts, site)
            yield Report(
                site.call,
                f"`{site.api}` allocates a CUDA tensor in `{site.qualname}` that is never read ({evidence(site)}): delete it",
                site,
                fixable=reason is None,
                not_fixable_reason=reason,
            )


def _not_removable(facts: ModuleFacts, site: AllocationSite) -> Optional[str]:
    """Why deleting the statement could change what the program does, or None."""
    node: ast.AST = site.call
    parent = facts.index.parents.get(node)
    while isinstance(parent, (ast.Attribute, ast.Call)) and not isinstance(parent, ast.stmt):
        node, parent = parent, facts.index.parents.get(parent)
    if not isinstance(parent, (ast.Expr, ast.Assign, ast.AnnAssign)):
        return "the allocation is part of a larger statement"
    for sub in ast.walk(node):
        if isinstance(sub, (ast.Await, ast.Yield, ast.YieldFrom, ast.NamedExpr)):
            return "an argument may have effects: delete the allocation by hand"
        if isinstance(sub, ast.Call) and sub is not site.call and not _is_chained_method(facts, site.call, sub):
            callee = sub.func.attr if isinstance(sub.func, ast.Attribute) else getattr(sub.func, "id", "")
            if callee not in PURE_CALLS:
                return "an argument may have effects: delete the allocation by hand"
    return None


def _is_chained_method(facts: ModuleFacts, call: ast.Call, sub: ast.Call) -> bool:
    """`.view(...)`/`.fill_(...)` applied to the allocation itself (its own arguments are
    checked like any other)."""
    node: ast.AST = call
    while True:
        parent = facts.index.parents.get(node)
        grand = facts.index.parents.get(parent)
        if not (isinstance(parent, ast.Attribute) and isinstance(grand, ast.Call) and grand.func is parent):
            return False
        if grand is sub:
            return True
        node = grand
