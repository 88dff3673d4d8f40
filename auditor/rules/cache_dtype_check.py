"""AA201: a hand-written cache hands out a buffer without checking its dtype."""

from __future__ import annotations

import re
from typing import Iterator

from allocaudit.auditor.analysis.caches import HandWrittenCache, hand_written_caches
from allocaudit.auditor.analysis.factories import FACTORY_HINTS
from allocaudit.auditor.analysis.sites import ModuleFacts
from allocaudit.auditor.rules.base import Invalid, Report, Rule, Valid


class CacheDtypeCheck(Rule):
    CODE = "AA201"
    NAME = "cache-reuse-without-dtype-check"
    HINTS = FACTORY_HINTS
    SUMMARY = "hand-written cache reuses a buffer without checking its dtype"
    EXPLAIN = """\
Why: a function that keeps workspace buffers in long-lived state (a class attribute, a
global, `self`) and hands out views of them was asked for `dtype`, but on a hit it
returns a view of whatever buffer the key holds. A request for bf16 after an fp8 one of
the same name gets an fp8 tensor (or a view with the wrong element size): kernels then
read and write garbage. This is the first bug the review of TensorRT-LLM PR 7390 found in
its `get_empty`.

Fix: compare `buf.dtype` with the requested dtype before reuse, key the cache by dtype,
or keep raw bytes and reinterpret them (`buf[:nbytes].view(dtype)`). Or use
`allocaudit.runtime.get_empty`, which does all of this:

    for buf in pool.get(name, []):
        if buf.dtype == dtype and buf.device == device and buf.numel() >= n:
            return buf[:n].view(shape)
"""
    VALID = (
        # Checks the dtype.
        Valid(
            """
            import torch
            class M:
                def get(self, name, n, dtype):
                    buf = self._bufs.get(name)
                    if buf is None or buf.dtype != dtype or buf.device != torch.device('cuda', 0) or buf.numel() < n:
                        buf = torch.empty(n, dtype=dtype, device='cuda:0')
                        self._bufs[name] = buf
                    return buf[:n]
            """
        ),
        # Keyed by dtype.
        Valid(
            """
            import torch
            class M:
                def get(self, name, n, dtype, device):
                    key = (name, dtype, device)
                    buf = self._bufs.get((name, dtype, device))
                    if buf is None or buf.numel() < n:
                        buf = torch.empty(n, dtype=dtype, device=device)
                        self._bufs[(name, dtype, device)] = buf
                    return buf[:n]
            """
        ),
        # Compared through a local.
        Valid(
            """
            import torch
            class M:
                def reserve(self, n, dtype):
                    held = self._buf.dtype if self._buf is not None else None
                    if self._buf is None or n > self._buf.shape[0] or dtype != held:
                        self._buf = torch.empty(n, dtype=dtype, device='cuda:0')
                    return self._buf[:n]
            """
        ),
        # A byte buffer reinterpreted to the requested dtype.
        Valid(
            """
            import torch
            class M:
                def get(self, nbytes, dtype, shape):
                    if self._ws is None or self._ws.numel() < nbytes or self._ws.device != torch.device('cuda', 0):
                        self._ws = torch.empty(nbytes, dtype=torch.uint8, device='cuda:0')
                    return self._ws[:nbytes].view(dtype).view(shape)
            """
        ),
        # A key built in steps: `(name, dtype, device, stream)`, then that plus a flag.
        Valid(
            """
            import torch
            class Workspace:
                def tensor(self, name, shape, *, dtype, device):
                    n = shape[0] * shape[1]
                    key = (name, dtype, device, stream_of(device))
                    if self._graph_mode:
                        key = (*key, self._prefill)
                    buf = self._bufs.get(key)
                    if buf is None or buf.numel() < n:
                        buf = torch.empty((n,), dtype=dtype, device=device)
                        self._bufs[key] = buf
                    return buf[:n].view(shape)
            """
        ),
        # One byte buffer, reinterpreted per request through a local.
        Valid(
            """
            import torch
            class Arena:
                def get(self, nbytes, dtype, shape):
                    if self._ws is None or self._ws.numel() < nbytes or self._ws.device != torch.device('cuda', 0):
                        self._ws = torch.empty(nbytes, dtype=torch.uint8, device='cuda:0')
                    typed = self._ws[:nbytes].view(dtype=dtype)
                    return typed.view(shape)
            """
        ),
    )
    INVALID = (
        # A dict of lists scanned first-fit, as in the seed.
        Invalid(
            """
            import math, torch
            class Moe:
                pool = {}
                @staticmethod
                def get_empty(shape, dtype, name):
                    for buf in Moe.pool.get(name, []):
                        if buf.numel() >= math.prod(shape):
                            return buf[: math.prod(shape)].view(shape)  # expect
                    new = torch.empty(shape, dtype=dtype, device='cuda')
                    Moe.pool.setdefault(name, []).append(new)
                    return new
            """
        ),
        # A dict keyed by name holding one buffer.
        Invalid(
            """
            import torch
            _BUFFERS = {}
            def scratch(name, numel, dtype, device):
                buf = _BUFFERS.get(name)
                if buf is None or buf.numel() < numel or buf.device != device:
                    buf = torch.empty(numel, dtype=dtype, device=device)
                    _BUFFERS[name] = buf
                return buf[:numel]  # expect
            """
        ),
    )

    def check(self, facts: ModuleFacts) -> Iterator[Report]:
        for cache in hand_written_caches(facts):
            if checks_dtype(cache):
                continue
            yield Report(
                cache.hit_returns[0],
                f"hand-written cache `{cache.qualname}` hands out a buffer of `{cache.container}` without checking its dtype "
                f"against `{cache.dtype_param}`: a request of another dtype gets a tensor of the wrong dtype",
            )


def checks_dtype(cache: HandWrittenCache) -> bool:
    """Whether a hit can only hand out a buffer of the requested dtype: no dtype is asked
    for, a condition compares it (`buf.dtype != dtype`, `dtype != held`), the key holds it
    (`(name, dtype, device, stream)`, built in steps or not), or every hand-out
    reinterprets a byte buffer as it (`buf[:n].view(dtype)`, directly or through locals)."""
    dtype = cache.dtype_param
    reinterpreted = re.compile(rf"\.view\((?:dtype=)?{re.escape(dtype)}\b") if dtype else None
    return (
        dtype is None
        or ".dtype" in cache.condition_text
        or dtype in cache.compared_names
        or cache.key_holds(dtype)
        or all(reinterpreted.search(text) for text in cache.returned_readings)
    )
