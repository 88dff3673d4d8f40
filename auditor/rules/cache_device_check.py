"""AA202: a hand-written cache hands out a buffer without checking its device."""

from __future__ import annotations

from typing import Iterator

from allocaudit.auditor.analysis import devices
from allocaudit.auditor.analysis.caches import HandWrittenCache, hand_written_caches
from allocaudit.auditor.analysis.factories import FACTORY_HINTS
from allocaudit.auditor.analysis.sites import AllocationSite, ModuleFacts
from allocaudit.auditor.rules.base import Invalid, Report, Rule, Valid


class CacheDeviceCheck(Rule):
    CODE = "AA202"
    NAME = "cache-reuse-without-device-check"
    HINTS = FACTORY_HINTS
    SUMMARY = "hand-written cache reuses a buffer without checking its device"
    EXPLAIN = """\
Why: a cache in a class attribute or a module global (shared by every object, whatever its
device) allocates on a device that can differ between calls (`'cuda'` is the
current device, `device=x.device` is the caller's) but on a hit returns the buffer it
holds without comparing devices. With one process driving several GPUs, or a caller that
switches `torch.cuda.device`, a kernel on GPU 1 gets a workspace on GPU 0: an illegal
memory access, or silent cross-device traffic. The review of TensorRT-LLM PR 7390 found
this in its `get_empty`.

Fix: compare `buf.device` with the requested device, key the cache by device (with its
index), or use `allocaudit.runtime.get_empty`, whose slots are keyed by cache name and
device:

    device = torch.device("cuda", torch.cuda.current_device())
    key = (name, dtype, device)
"""
    VALID = (
        # Held by an object, which serves one device.
        Valid(
            """
            import torch
            class Backend:
                def scratch(self, n, device):
                    if self._buf is None or self._buf.numel() < n:
                        self._buf = torch.empty(n, device=device)
                    return self._buf[:n]
            """
        ),
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
        # A fixed device index cannot change between calls.
        Valid(
            """
            import torch
            class M:
                def get(self, n):
                    if self._ws is None or self._ws.numel() < n:
                        self._ws = torch.empty(n, device='cuda:0')
                    return self._ws[:n]
            """
        ),
        # A key built in steps holds the device.
        Valid(
            """
            import torch
            _BUFFERS = {}
            def tensor(name, n, dtype, device):
                key = (name, dtype, torch.device(device), stream_of(device))
                if capturing():
                    key = (*key, True)
                buf = _BUFFERS.get(key)
                if buf is None or buf.numel() < n:
                    buf = torch.empty((n,), dtype=dtype, device=device)
                    _BUFFERS[key] = buf
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
                def get_empty(shape, dtype, name):
                    for buf in Moe.pool.get(name, []):
                        if buf.dtype == dtype and buf.numel() >= math.prod(shape):
                            return buf[: math.prod(shape)].view(shape)  # expect
                    new = torch.empty(shape, dtype=dtype, device='cuda')
                    Moe.pool.setdefault(name, []).append(new)
                    return new
            """
        ),
        # Best fit over blocks with a reserved flag, in a module-level arena; device from the caller.
        Invalid(
            """
            import torch
            _BLOCKS = []
            def alloc(x, nbytes):
                best = None
                for block in _BLOCKS:
                    if not block.reserved and block.data.numel() >= nbytes and (best is None or block.data.numel() < best.data.numel()):
                        best = block
                if best is not None:
                    best.reserved = True
                    return best.data[:nbytes]  # expect
                data = torch.empty(nbytes, dtype=torch.uint8, device=x.device)
                _BLOCKS.append(Block(data, reserved=True))
                return data
            """
        ),
    )

    def check(self, facts: ModuleFacts) -> Iterator[Report]:
        for cache in hand_written_caches(facts):
            if checks_device(cache):
                continue
            yield Report(
                cache.hit_returns[0],
                f"hand-written cache `{cache.qualname}` hands out a buffer of `{cache.container}` without checking its device: "
                "a request on another GPU gets memory of the wrong device",
            )


def checks_device(cache: HandWrittenCache) -> bool:
    """Whether a hit can only hand out a buffer of the requested device: a condition
    compares devices, the key holds the device, every miss allocates on one fixed device,
    or the cache is held by an object (a backend, a layer), which serves its own device."""
    device = cache.device_param
    return (
        ".device" in cache.condition_text
        or (device is not None and device in cache.compared_names)
        or cache.key_holds("device")
        or all(_fixed_device(s) or not s.device.on_cuda for s in cache.misses)
        or cache.container_kind == "instance attribute"
    )


def _fixed_device(site: AllocationSite) -> bool:
    """A literal device with an index (`'cuda:1'`, `torch.device('cuda', 0)`): reuse cannot
    cross devices. Plain `'cuda'` means the current device, which a caller can change."""
    text = site.device.text or ""
    return site.device.form == devices.CUDA and (":" in text or "," in text or text.isdigit())
