"""AA204: a hand-written cache grows without bound."""

from __future__ import annotations

from typing import Iterator

from allocaudit.auditor.caches import hand_written_caches
from allocaudit.auditor.rules.base import Report, Rule
from allocaudit.auditor.sites import ModuleFacts


class CacheUnboundedGrowth(Rule):
    CODE = "AA204"
    NAME = "cache-unbounded-growth"
    SUMMARY = "hand-written cache grows without eviction or bound"
    EXPLAIN = """\
Why: on a miss the cache appends a new buffer to the list of its key (or adds a key per
requested size) and never evicts anything. Every batch size that does not fit the
buffers already held adds one more: under a serving load with varying batch sizes the
cache keeps every size it ever saw, and measured on an H100 the seed's cache used 13%
more peak memory than plain `torch.empty` when larger batches came after graph capture.
The review of TensorRT-LLM PR 7390 asked the same question.

Fix: keep one buffer per key and grow it (taking care of buffers that captured graphs
still use, see AA205), evict with a bound, or use `allocaudit.runtime.get_empty`: one live
buffer per slot plus graph-pinned ones, and an optional byte budget for the whole cache.
"""
    VALID = (
        # One buffer per key, grown in place, capture-aware.
        "import torch\nclass M:\n    def get(self, name, n, dtype, device):\n        buf = self._bufs.get((name, dtype, device))\n"
        "        if buf is None or buf.numel() < n:\n            if buf is not None and torch.cuda.is_current_stream_capturing():\n                self._pinned.append(buf)\n"
        "            buf = torch.empty(n, dtype=dtype, device=device)\n            self._bufs[(name, dtype, device)] = buf\n        return buf[:n]\n",
        # Appends, but evicts beyond a bound.
        "import torch\nclass M:\n    def get(self, name, n, dtype, device):\n        for buf in self.pool.get(name, []):\n"
        "            if buf.dtype == dtype and buf.device == device and buf.numel() >= n:\n                return buf[:n]\n"
        "        new = torch.empty(n, dtype=dtype, device=device)\n        bufs = self.pool.setdefault(name, [])\n        bufs.append(new)\n"
        "        if len(bufs) > self.max_per_key:\n            bufs.pop(0)\n        return new\n",
    )
    INVALID = (
        "import math, torch\nclass Moe:\n    pool = {}\n    @staticmethod\n    def get_empty(shape, dtype, name, device):\n"
        "        for buf in Moe.pool.get(name, []):\n            if buf.dtype == dtype and buf.device == device and buf.numel() >= math.prod(shape):\n"
        "                return buf[: math.prod(shape)].view(shape)\n"
        "        new = torch.empty(shape, dtype=dtype, device=device)\n        Moe.pool.setdefault(name, []).append(new)  # expect\n        return new\n",
        # A key per requested size.
        "import torch\nclass M:\n    def get(self, numel, dtype, device):\n        buf = self.by_size.get((numel, dtype, device))\n"
        "        if buf is None:\n            buf = torch.empty(numel, dtype=dtype, device=device)\n            self.by_size[(numel, dtype, device)] = buf  # expect\n        return buf[:numel]\n",
    )

    def check(self, facts: ModuleFacts) -> Iterator[Report]:
        for cache in hand_written_caches(facts):
            if cache.bounded:
                continue
            if cache.appends:
                call = cache.appends[0]
                yield Report(
                    call,
                    f"hand-written cache `{cache.qualname}` grows without bound: `.{call.func.attr}()` adds a buffer to "
                    f"`{cache.container}` on every miss and nothing evicts or caps it",
                )
            elif cache.key_growth is not None:
                yield Report(
                    cache.key_growth,
                    f"hand-written cache `{cache.qualname}` grows without bound: `{cache.container}` gets a new key per "
                    "requested size and nothing evicts or caps it",
                )
