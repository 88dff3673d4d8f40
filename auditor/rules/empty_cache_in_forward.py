"""AA105: `torch.cuda.empty_cache()` on every forward step."""

from __future__ import annotations

import ast
from typing import Iterator

from allocaudit.auditor.analysis.functions import matches
from allocaudit.auditor.analysis.sites import ModuleFacts
from allocaudit.auditor.analysis.syntax import unparse
from allocaudit.auditor.rules.base import Invalid, Report, Rule, Valid

EMPTY_CACHE = frozenset({"torch.cuda.empty_cache", "torch.cuda.memory.empty_cache", "torch.accelerator.empty_cache"})
# A forward step by its name. Set-up, shutdown, profiling and sleep/wake-up functions empty
# the cache on purpose, and the engines name them freely (`set_embed_and_head`, `shutdown`,
# `profile_cudagraph_memory`): only these, and what the `per-call` setting names, are checked.
FORWARD_NAMES = ("forward", "*forward*", "__call__", "step", "*_step")


class EmptyCacheInForward(Rule):
    CODE = "AA105"
    NAME = "empty-cache-in-forward"
    HINTS = (b"empty_cache",)
    SUMMARY = "torch.cuda.empty_cache() runs on every forward step: it waits for the GPU and empties the caching allocator"
    EXPLAIN = """\
Why: `torch.cuda.empty_cache()` (and `torch.accelerator.empty_cache()` on a CUDA device)
hands every block of PyTorch's caching allocator that no tensor uses back to the driver.
It waits for the device to finish its work first, and the allocations that follow get
their memory from `cudaMalloc` again, which is slow and synchronises too. On every forward
step that undoes the caching allocator: each step's buffers are allocated and freed
through the driver, and the CPU waits for the GPU where it would run ahead. It frees no
memory that a live tensor holds, so the step's own peak stays what it was.

Checked in forward steps by their name (`forward`, `*forward*` such as
`init_forward_metadata`, `__call__`, `step`, `*_step`) and in the functions the `per-call`
setting names. Set-up, shutdown, profiling and sleep/wake-up code empty the cache on
purpose and are not reported, nor is a call in an `except` clause (an out-of-memory
handler before a retry).

Fix: take it out of the forward path. If the step's memory is the concern, reuse its
workspaces (`allocaudit fix` rewrites them to `get_empty`) and let the caching allocator
keep its blocks; if memory must go back between phases, call it once where the phase
ends. Where a step empties the cache on purpose (a low-memory mode behind a flag), say so
with `# noqa: AA105`.

    def forward(self, x):
        out = self.experts(x)
        torch.cuda.empty_cache()   # AA105: every step waits and allocates anew
        return out
"""
    VALID = (
        # Set-up code, shutdown, and a handler of an out-of-memory error are no forward step.
        Valid(
            """
            import torch
            class MoE:
                def process_weights_after_loading(self, layer):
                    layer.w13 = repack(layer.w13)
                    torch.cuda.empty_cache()
                def set_embed_and_head(self, embed, head):
                    self.embed, self.head = embed, head
                    torch.cuda.empty_cache()
                def shutdown(self):
                    torch.cuda.empty_cache()
                def forward(self, x):
                    try:
                        return self.experts(x)
                    except torch.cuda.OutOfMemoryError:
                        torch.cuda.empty_cache()
                        return self.experts_chunked(x)
            torch.cuda.empty_cache()
            """
        ),
        # Another object's `empty_cache` is not torch's.
        Valid(
            """
            def forward(self, x):
                self.prefix_cache.empty_cache()
                return x
            """
        ),
        Valid(
            """
            def forward(torch, x):
                torch.cuda.empty_cache()
                return x
            """
        ),
    )
    INVALID = (
        Invalid(
            """
            import torch
            import torch as th
            class Attention:
                def init_forward_metadata(self, batch):
                    torch.cuda.empty_cache()  # expect
                    self.mask = build_mask(batch)
                def forward(self, x):
                    out = self.experts(x)
                    th.accelerator.empty_cache()  # expect
                    return out
            """,
            message="runs on every call of `Attention.",
        ),
        # Imported by name: the text holds no `.empty`, and the rule's own hint lets it through.
        Invalid(
            """
            from torch.cuda import empty_cache
            from torch.cuda import empty_cache as free_cached
            def experts_forward(x, w):
                y = x @ w
                empty_cache()  # expect
                free_cached()  # expect
                return y
            def train_step(model, batch):
                loss = model(batch)
                empty_cache()  # expect
                return loss
            """
        ),
    )

    def check(self, facts: ModuleFacts) -> Iterator[Report]:
        index = facts.index
        names = {"empty_cache"} | {
            alias.asname for node in index.imports for alias in node.names if alias.asname and alias.name.endswith("empty_cache")
        }
        for call in index.calls:
            func = call.func
            callee = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if callee not in names or not index.resolve(func, call) & EMPTY_CACHE:
                continue
            function = index.owner(call)
            info = index.functions.info.get(function) if function is not None else None
            if info is None or not info.per_call or self._in_handler(facts, call, function):
                continue
            if not (info.forced_per_call or matches(function.name, FORWARD_NAMES)):
                continue
            yield Report(
                call,
                f"`{unparse(func)}()` runs on every call of `{info.qualname}`: it waits for the GPU and empties the "
                "caching allocator, so the next allocations go to cudaMalloc again",
            )

    @staticmethod
    def _in_handler(facts: ModuleFacts, call: ast.Call, function: ast.AST) -> bool:
        """Inside an `except` clause of its function: it runs when something failed (an
        out-of-memory error before a retry), not on every call."""
        parent = facts.index.parents.get(call)
        while parent is not None and parent is not function:
            if isinstance(parent, ast.ExceptHandler):
                return True
            parent = facts.index.parents.get(parent)
        return False
