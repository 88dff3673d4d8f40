"""AA203: a cache that allocates with zeros reuses the buffer without re-zeroing it."""

from __future__ import annotations

import ast
from typing import Iterator, Optional

from allocaudit.auditor.analysis.caches import HandWrittenCache, hand_written_caches
from allocaudit.auditor.analysis.factories import FACTORY_HINTS
from allocaudit.auditor.analysis.sites import AllocationSite, ModuleFacts
from allocaudit.auditor.rules.base import Invalid, Report, Rule, Valid

ZEROING = frozenset({"zeros", "zeros_like", "new_zeros"})


class CacheRezero(Rule):
    CODE = "AA203"
    NAME = "cache-reuse-without-rezero"
    HINTS = FACTORY_HINTS
    SUMMARY = "hand-written cache allocates zeros but reuses the buffer without re-zeroing it"
    EXPLAIN = """\
Why: a cache shared by name (callers ask it for a name, a shape and a dtype) allocates with
`torch.zeros` (or `zeros_like`, `new_zeros`) on a miss, so its callers may rely on zeros: padding rows, masked lanes, accumulators, counters. On a
hit it hands out the old buffer as it is, with whatever the last user wrote: the first
call is right and every later one reads stale data. The review of TensorRT-LLM PR 7390
found this in its `get_empty`.

Some caches zero once on purpose: the part read as zero (padding heads, bytes past the
last page) is never written by any user, so the zeros survive reuse. Then say so next to
the allocation with `# noqa: AA203` and the invariant in a comment.

Fix: zero the part handed out on every hit (`view.zero_()`), or allocate with
`torch.empty` if every consumer writes before it reads. `allocaudit.runtime.get_empty`
keeps `torch.zeros` semantics exactly with `zero=True`, zeroing only the requested bytes:

    view = buf[:n].view(shape)
    view.zero_()
    return view
"""
    VALID = (
        # Re-zeroes on reuse.
        Valid(
            """
            import torch
            class M:
                def get(self, name, n, dtype, device):
                    buf = self._bufs.get((name, dtype, device))
                    if buf is None or buf.numel() < n:
                        buf = torch.zeros(n, dtype=dtype, device=device)
                        self._bufs[(name, dtype, device)] = buf
                    view = buf[:n]
                    view.zero_()
                    return view
            """
        ),
        # Allocates with empty: no zeros promised.
        Valid(
            """
            import torch
            class M:
                def get(self, name, n, dtype, device):
                    buf = self._bufs.get((name, dtype, device))
                    if buf is None or buf.numel() < n:
                        buf = torch.empty(n, dtype=dtype, device=device)
                        self._bufs[(name, dtype, device)] = buf
                    return buf[:n]
            """
        ),
    )
    INVALID = (
        Invalid(
            """
            import math, torch
            class Moe:
                pool = {}
                @staticmethod
                def get_empty(shape, dtype, name, device):
                    for buf in Moe.pool.get(name, []):
                        if buf.dtype == dtype and buf.device == device and buf.numel() >= math.prod(shape):
                            return buf[: math.prod(shape)].view(shape)  # expect
                    new = torch.zeros(shape, dtype=dtype, device=device)
                    Moe.pool.setdefault(name, []).append(new)
                    return new
            """
        ),
        # A workspace manager object.
        Invalid(
            """
            import torch
            class WorkspaceManager:
                def get(self, name, shape, dtype, device):
                    ws = self.workspaces.get((name, dtype, device))
                    n = shape[0] * shape[1]
                    if ws is None or ws.numel() < n:
                        ws = torch.zeros(n, dtype=dtype, device=device)
                        self.workspaces[(name, dtype, device)] = ws
                    return ws[:n].view(shape)  # expect
            """
        ),
    )

    def check(self, facts: ModuleFacts) -> Iterator[Report]:
        for cache in hand_written_caches(facts):
            zeroing = zeroing_miss(cache)
            # A single-purpose buffer zeroed once is usually a documented invariant (counters
            # that kernels reset, padding never written); callers of a cache shared by name
            # cannot know what the last user left.
            if zeroing is None or rezeroes(cache) or not shared_by_name(cache):
                continue
            yield Report(
                cache.hit_returns[0],
                f"hand-written cache `{cache.qualname}` allocates with `{zeroing.api}` (line {zeroing.call.lineno}) but hands the "
                "buffer out again without re-zeroing it: callers that expect zeros read stale data",
            )


def zeroing_miss(cache: HandWrittenCache) -> Optional[AllocationSite]:
    """The miss that allocates zeros, if one does. Only a CUDA buffer handed out as
    allocated counts: a table built on the CPU and moved (`torch.zeros(n).to(device)`, then
    filled) is a computed constant, not a workspace."""
    return next(
        (
            s for s in cache.misses
            if s.device.on_cuda and not s.moved and (s.factory in ZEROING or (s.factory == "full" and "0" in ast.unparse(s.call)))
        ),
        None,
    )


def rezeroes(cache: HandWrittenCache) -> bool:
    """Whether the function zeroes anything (`view.zero_()`, `.fill_(0)`)."""
    text = ast.unparse(cache.function)
    return ".zero_(" in text or ".fill_(0" in text or "torch.zero_(" in text


def shared_by_name(cache: HandWrittenCache) -> bool:
    """A general-purpose cache: callers ask it by name for a dtype (the seed's
    `get_empty(shape, dtype, name)`), rather than one buffer with one purpose."""
    return cache.dtype_param is not None and any("name" in p or p == "key" for p in cache.parameters)
