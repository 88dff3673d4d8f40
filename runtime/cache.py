"""Reusable workspaces: `get_empty` and `WorkspaceCache`.

A `WorkspaceCache` keeps one byte buffer per *slot*, a slot being a (cache name, device) pair.
`get_empty` hands out a typed view of the slot's buffer when it is large enough, and grows the
slot when it is not. Buffers handed out while a CUDA graph is being captured are *pinned*: the
graph replays into them, so neither growth, `clear()` nor the budget ever lets go of them; only
`release_pinned()` does, once the owner has dropped its graphs.
"""

from __future__ import annotations

import contextlib
import contextvars
import operator
import os
import sys
import threading
import warnings
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch

from . import hooks

__all__ = [
    "SlotStats",
    "WorkspaceAliasError",
    "WorkspaceCache",
    "WorkspaceGrowthError",
    "default_cache",
    "get_empty",
    "reload_env",
    "use_cache",
]

ShapeLike = Union[int, Sequence[int], torch.Size]
DeviceLike = Union[str, int, torch.device, None]
_Layout = Tuple[int, Tuple[int, ...], Tuple[int, ...]]


class WorkspaceGrowthError(RuntimeError):
    """A frozen cache was asked for more bytes than the slot holds."""


class WorkspaceAliasError(RuntimeError):
    """Strict mode: a slot was handed out while an earlier hand-out of it was still alive."""


# Every capacity is a multiple of this, so a buffer can be viewed whole as any dtype
# (itemsizes are at most 16) and every hand-out starts at the allocator's own alignment.
_ALIGN = 64


# ---------------------------------------------------------------------------------------------
# Argument normalisation. Each helper validates on first sight and remembers the result, so that
# a hit is a few dictionary look-ups rather than a loop over the shape and a device parse.

_LAYOUTS: Dict[object, _Layout] = {}
_MAX_LAYOUTS = 4096


def _layout(shape: object, cache_name: object) -> _Layout:
    """numel, sizes and contiguous strides of ``shape``; raises on anything `torch.empty` rejects."""
    where = f"get_empty(cache_name={cache_name!r})"
    if isinstance(shape, (list, tuple)):
        items = list(shape)
    elif isinstance(shape, bool) or not hasattr(shape, "__index__"):
        raise TypeError(f"{where}: shape must be an int or a sequence of ints, got {shape!r}")
    else:
        items = [shape]
    sizes = []
    for s in items:
        if isinstance(s, bool) or not hasattr(s, "__index__"):
            raise TypeError(f"{where}: shape must hold ints, got {s!r} in {shape!r}")
        s = operator.index(s)
        if s < 0:
            raise ValueError(f"{where}: shape must not be negative, got {s} in {shape!r}")
        sizes.append(s)
    strides = []
    numel = 1
    for s in reversed(sizes):
        strides.append(numel)
        numel *= s
    layout = (numel, tuple(sizes), tuple(reversed(strides)))
    # Remember only plain-int keys: other index types (numpy ints, 0-dim tensors) are normalised
    # on every call (the hit path checks that a key it found was asked for with plain ints).
    if type(shape) is int or all(type(s) is int for s in items):
        if len(_LAYOUTS) >= _MAX_LAYOUTS:
            _LAYOUTS.clear()
        _LAYOUTS[shape if type(shape) is int else tuple(items)] = layout
    return layout


_CPU = torch.device("cpu")
_CURRENT_CUDA = object()  # 'cuda' without an index: the current CUDA device, read at each call
_DEFAULT_DEVICE = object()  # None: torch's default device, read at each call
_DEVICES: Dict[object, object] = {None: _DEFAULT_DEVICE}
_CUDA_DEVICES: Dict[int, torch.device] = {}


def _learn_device(device: object, cache_name: object) -> object:
    if not isinstance(device, (str, int, torch.device)) or isinstance(device, bool):
        raise TypeError(
            f"get_empty(cache_name={cache_name!r}): device must be a str, int, torch.device "
            f"or None, got {device!r}"
        )
    try:
        parsed = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"get_empty(cache_name={cache_name!r}): bad device {device!r}: {e}") from None
    resolved = _CURRENT_CUDA if parsed.type == "cuda" and parsed.index is None else parsed
    _DEVICES[device] = resolved
    return resolved


def _cuda_device(index: int) -> torch.device:
    device = _CUDA_DEVICES.get(index)
    if device is None:
        device = _CUDA_DEVICES[index] = torch.device("cuda", index)
    return device


def _default_device() -> torch.device:
    # torch.get_default_device() costs microseconds; without any torch function mode active
    # (torch.set_default_device installs one) the default is the CPU.
    if not torch._C._is_torch_function_mode_enabled():
        return _CPU
    device = torch.get_default_device()
    if device.type == "cuda" and device.index is None:
        return _cuda_device(torch.cuda.current_device())
    return device


def _check_name(cache_name: object) -> None:
    if not isinstance(cache_name, str) or not cache_name:
        raise ValueError(f"get_empty: cache_name must be a non-empty str, got {cache_name!r}")


def _storage_use_count(t: torch.Tensor) -> int:
    # The number of tensors (views included) that share t's storage, plus one for the Python
    # storage object made here. torch._inductor.cudagraph_trees reads the same count to know
    # whether a graph output is still alive.
    return torch._C._storage_Use_Count(t.untyped_storage()._cdata)


def _call_site() -> str:
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back
    if frame is None:
        return "<unknown>"
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


def _poison(t: torch.Tensor) -> None:
    # All-ones bytes read as NaN in every IEEE float dtype and in fp8, and as -1 (or the
    # maximum) in integers. bool must hold 0 or 1, so it reads True.
    t.view(-1).view(torch.uint8).fill_(1 if t.dtype is torch.bool else 0xFF)


def _debug_modes_from_env() -> Tuple[bool, bool]:
    words = {w.strip().lower() for w in os.environ.get("ALLOCAUDIT_RUNTIME_DEBUG", "").split(",")}
    words.discard("")
    unknown = words - {"poison", "strict"}
    if unknown:
        warnings.warn(
            f"ALLOCAUDIT_RUNTIME_DEBUG: ignoring unknown mode(s) {sorted(unknown)}; "
            "known: poison, strict",
            RuntimeWarning,
            stacklevel=3,
        )
    return "poison" in words, "strict" in words


def _format_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.2f} GiB"


# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlotStats:
    """Counters of one slot. Each request is exactly one of a hit, a miss, a growth or a fallback."""

    hits: int
    misses: int  # the slot had no buffer and allocated one
    growths: int  # the slot's buffer was too small and was replaced by a larger one
    fallbacks: int  # served by a plain allocation (budget exceeded, or frozen with "fallback")
    bytes_held: int  # the live buffer plus the pinned ones
    bytes_pinned: int  # buffers kept for captured CUDA graphs
    zeroed_bytes: int
    peak_bytes: int  # the largest bytes_held seen


class _Slot:
    __slots__ = (
        "name", "device", "is_cuda", "buffer", "capacity", "views", "pinned", "old_pinned",
        "last", "last_layout", "last_dtype", "former_capacity", "hits", "misses", "growths",
        "fallbacks", "zeroed_bytes", "peak_bytes", "last_site",
    )

    def __init__(self, name: str, device: torch.device) -> None:
        self.name = name
        self.device = device
        self.is_cuda = device.type == "cuda"
        self.buffer: Optional[torch.Tensor] = None  # uint8, 1-D, `capacity` bytes
        self.capacity = -1  # -1 without a buffer, so that no request, not even 0 bytes, fits
        self.views: Dict[torch.dtype, torch.Tensor] = {}  # the whole buffer, per dtype
        self.last: Optional[torch.Tensor] = None  # a private copy of the last hand-out's view,
        self.last_layout: Optional[_Layout] = None  # of this layout (the memoised object)
        self.last_dtype: Optional[torch.dtype] = None  # and this dtype
        self.pinned = False  # `buffer` was handed out during a CUDA graph capture
        self.old_pinned: List[torch.Tensor] = []  # pinned buffers that growth replaced
        self.former_capacity = 0  # capacity before the buffer was let go while idle
        self.hits = self.misses = self.growths = self.fallbacks = 0
        self.zeroed_bytes = self.peak_bytes = 0
        self.last_site = "<unknown>"

    def hand_out(self, layout: _Layout, dtype: torch.dtype, cache_name: str) -> torch.Tensor:
        """A new contiguous tensor of ``layout`` and ``dtype`` over the start of the buffer."""
        if layout is self.last_layout and dtype is self.last_dtype:
            # The same request as last time (the same memoised layout object): detach() makes a
            # new tensor with the same sizes, strides and memory, at half the cost of as_strided.
            return self.last.detach()
        view = self.views.get(dtype)
        if view is None:
            try:
                view = self.views[dtype] = self.buffer.view(dtype)
            except RuntimeError as e:
                raise TypeError(
                    f"get_empty(cache_name={cache_name!r}): unsupported dtype {dtype}: {e}"
                ) from None
        # Kept private, so that nothing a caller does to its tensor's metadata reaches the next one.
        self.last = view.as_strided(layout[1], layout[2])
        self.last_layout, self.last_dtype = layout, dtype
        return self.last.detach()

    def is_idle(self) -> bool:
        """No hand-out of the buffer, nor any view made from one, is alive."""
        # One reference each: the buffer, its per-dtype views, `last`, and the storage object
        # that _storage_use_count makes.
        own = 2 + len(self.views) + (self.last is not None)
        return _storage_use_count(self.buffer) == own

    def pinned_bytes(self) -> int:
        return sum(b.numel() for b in self.old_pinned) + (self.capacity if self.pinned else 0)

    def held_bytes(self) -> int:
        return sum(b.numel() for b in self.old_pinned) + max(self.capacity, 0)


class WorkspaceCache:
    """Reusable workspace buffers, one per (cache name, device) slot, safe under CUDA graphs.

    Args:
        label: names this cache in errors, warnings and `report()`.
        growth: ``"exact"`` grows a slot to the request (rounded up to 64 bytes);
            ``"pow2"`` to the next power of two, for fewer growths when sizes creep up.
        max_bytes: budget for all buffers of the cache, pinned ones included. A request that
            would exceed it is served by a plain allocation instead, counted as a fallback, with
            one `ResourceWarning` per cache.
        poison: fill every hand-out that is not zeroed with all-ones bytes (NaN in float dtypes),
            to expose reads of stale data. ``None`` reads ``ALLOCAUDIT_RUNTIME_DEBUG``.
        strict: raise `WorkspaceAliasError` when a slot is handed out while an earlier hand-out
            of it, or any view made from one, is still alive. ``None`` reads
            ``ALLOCAUDIT_RUNTIME_DEBUG``.

    When a slot grows outside graph capture, the cache first lets go of its idle buffers on that
    device (unpinned, no hand-out alive), so that the caching allocator can reuse their memory
    for the larger buffer, as it would for plain `torch.empty`; those slots allocate again, at
    no less than their former size, on their next request (a miss, not a growth).

    All methods are thread-safe. Hand-outs of one slot share memory: as with any workspace,
    the work that uses one must be ordered (one stream, or synchronised) before the next.
    """

    def __init__(
        self,
        label: str = "workspaces",
        *,
        growth: str = "exact",
        max_bytes: Optional[int] = None,
        poison: Optional[bool] = None,
        strict: Optional[bool] = None,
    ) -> None:
        if growth not in ("exact", "pow2"):
            raise ValueError(f"WorkspaceCache({label!r}): growth must be 'exact' or 'pow2', got {growth!r}")
        if max_bytes is not None and (not isinstance(max_bytes, int) or max_bytes < 0):
            raise ValueError(f"WorkspaceCache({label!r}): max_bytes must be an int >= 0, got {max_bytes!r}")
        env_poison, env_strict = (False, False)
        if poison is None or strict is None:
            env_poison, env_strict = _debug_modes_from_env()
        self.label = label
        self.growth = growth
        self.max_bytes = max_bytes
        self._poison = env_poison if poison is None else bool(poison)
        self._strict = env_strict if strict is None else bool(strict)
        self._debug = self._poison or self._strict  # one check on the hit path
        self._slots: Dict[Tuple[str, torch.device], _Slot] = {}
        self._lock = threading.Lock()
        self._held = 0
        self._frozen: Optional[str] = None  # None, "error" or "fallback"
        self._warned_budget = False

    # -- debug modes ------------------------------------------------------------------------

    @property
    def poison(self) -> bool:
        return self._poison

    @poison.setter
    def poison(self, on: bool) -> None:
        with self._lock:
            self._poison = bool(on)
            self._debug = self._poison or self._strict

    @property
    def strict(self) -> bool:
        return self._strict

    @strict.setter
    def strict(self, on: bool) -> None:
        with self._lock:
            self._strict = bool(on)
            self._debug = self._poison or self._strict

    # -- requests ---------------------------------------------------------------------------

    def _get_empty(
        self, shape: ShapeLike, dtype: torch.dtype, device: DeviceLike, cache_name: str, zero: bool
    ) -> torch.Tensor:
        if type(shape) is list:
            shape = tuple(shape)
        try:
            layout = _LAYOUTS.get(shape)
        except TypeError:  # unhashable: a bad shape, reported by _layout
            layout = None
        # Only plain ints are remembered, but 2.0 == 2 and numpy ints equal ints as dict keys:
        # those must go through _layout, which rejects floats as torch.empty does. (A sum of
        # ints is an int; any float or numpy int makes it something else. It is the cheapest test.)
        if layout is not None and type(shape) is not int and type(sum(shape)) is not int:
            layout = None
        if layout is None:
            layout = _layout(shape, cache_name)
        if type(dtype) is not torch.dtype:
            raise TypeError(
                f"get_empty(cache_name={cache_name!r}): dtype must be a torch.dtype, got {dtype!r}"
            )
        nbytes = layout[0] * dtype.itemsize
        try:
            dev = _DEVICES[device]
        except (KeyError, TypeError):
            dev = _learn_device(device, cache_name)
        if dev is _CURRENT_CUDA:
            dev = _cuda_device(torch.cuda.current_device())
        elif dev is _DEFAULT_DEVICE:
            dev = _default_device()
        key = (cache_name, dev)

        with self._lock:
            try:
                slot = self._slots.get(key)
            except TypeError:  # an unhashable cache_name: report it as a bad name
                _check_name(cache_name)
                raise
            if slot is not None and nbytes <= slot.capacity and not self._debug:
                # The hit path: a view of the slot's buffer, no allocation.
                if slot.is_cuda and not slot.pinned and torch.cuda.is_current_stream_capturing():
                    slot.pinned = True  # the graph being captured will replay into this buffer
                slot.hits += 1
                out = slot.hand_out(layout, dtype, cache_name)
                if zero:
                    out.zero_()  # under capture this kernel is captured too: replays re-zero
                    slot.zeroed_bytes += nbytes
                kind = "hit"
            else:
                out, kind = self._hand_out(key, layout, nbytes, dtype, zero)
        if hooks.observers:
            hooks.notify(hooks.CacheEvent(self.label, cache_name, dev, kind, nbytes))
        return out

    def _hand_out(
        self,
        key: Tuple[str, torch.device],
        layout: _Layout,
        nbytes: int,
        dtype: torch.dtype,
        zero: bool,
    ) -> Tuple[torch.Tensor, str]:
        """Everything but the plain hit: new slots, growth, fallbacks and the debug modes."""
        cache_name, dev = key
        slot = self._slots.get(key)
        if slot is None:
            _check_name(cache_name)
            slot = self._slots[key] = _Slot(cache_name, dev)
        capturing = slot.is_cuda and torch.cuda.is_current_stream_capturing()
        if self._strict and slot.buffer is not None and not slot.is_idle():
            raise WorkspaceAliasError(
                f"{self.label}: slot {cache_name!r} on {dev} handed out at {_call_site()} while "
                f"its hand-out from {slot.last_site} (or a view of it) is still alive"
            )
        kind = "hit" if nbytes <= slot.capacity else self._grow(slot, nbytes, capturing)
        if kind == "fallback":
            slot.fallbacks += 1
            out = torch.empty(layout[1], dtype=dtype, device=dev)
        else:
            if kind == "hit":
                slot.hits += 1
            if capturing:
                slot.pinned = True  # the graph being captured will replay into this buffer
            out = slot.hand_out(layout, dtype, cache_name)
            if self._strict:
                slot.last_site = _call_site()
        if zero:
            out.zero_()
            slot.zeroed_bytes += nbytes
        elif self._poison:
            _poison(out)
        return out, kind

    def _grow(self, slot: _Slot, nbytes: int, capturing: bool) -> str:
        """Give ``slot`` a buffer of at least ``nbytes``; returns the kind of request it was."""
        if self._frozen is not None:
            if self._frozen == "fallback":
                return "fallback"
            raise WorkspaceGrowthError(
                f"{self.label} is frozen: slot {slot.name!r} on {slot.device} holds "
                f"{max(slot.capacity, 0)} bytes and was asked for {nbytes}"
            )
        capacity = max(nbytes, slot.former_capacity)
        if self.growth == "pow2":
            capacity = 1 << max(capacity - 1, 0).bit_length()
        capacity = -(-capacity // _ALIGN) * _ALIGN
        freed = slot.capacity if slot.buffer is not None and not slot.pinned else 0
        if self.max_bytes is not None and self._held - freed + capacity > self.max_bytes:
            if not self._warned_budget:
                self._warned_budget = True
                warnings.warn(
                    f"{self.label}: budget of {self.max_bytes} bytes reached; slot {slot.name!r} "
                    f"on {slot.device} asked for {capacity} more. Requests beyond the budget are "
                    "served by plain allocations (see stats().fallbacks).",
                    ResourceWarning,
                    stacklevel=4,
                )
            return "fallback"
        kind = "miss" if slot.buffer is None else "growth"
        self._let_go(slot)
        if kind == "growth" and not capturing:
            # Let the allocator reuse idle buffers' memory for this larger one. Only on growth:
            # capacities then only ever increase, so slots cannot keep releasing each other.
            # Under capture the new buffer comes from the graph's pool: nothing to gain there.
            for other in self._slots.values():
                if other.device != slot.device or other.buffer is None or other.pinned:
                    continue
                if other.is_idle():
                    other.former_capacity = other.capacity
                    self._let_go(other)
        # Under capture this allocation lands in the graph's private memory pool, which is
        # what the graph needs: its replays write here.
        slot.buffer = torch.empty(capacity, dtype=torch.uint8, device=slot.device)
        slot.capacity = slot.former_capacity = capacity
        self._held += capacity
        slot.peak_bytes = max(slot.peak_bytes, slot.held_bytes())
        if kind == "miss":
            slot.misses += 1
        else:
            slot.growths += 1
        return kind

    def _let_go(self, slot: _Slot) -> None:
        """Drop the slot's buffer; a pinned one moves to the slot's pinned list instead."""
        if slot.buffer is None:
            return
        if slot.pinned:
            slot.old_pinned.append(slot.buffer)  # a captured graph still replays into it
        else:
            self._held -= slot.capacity
        slot.buffer = slot.last = slot.last_layout = None
        slot.views = {}
        slot.capacity = -1
        slot.pinned = False

    # -- lifetime ---------------------------------------------------------------------------

    def freeze(self, on_growth: str = "error") -> None:
        """Forbid growth, typically after warm-up and graph capture.

        A later request that does not fit its slot raises `WorkspaceGrowthError` (naming the
        slot, the bytes held and the bytes asked) with ``on_growth="error"``, or is served by a
        plain allocation, counted in `stats()` as a fallback, with ``on_growth="fallback"``.
        """
        if on_growth not in ("error", "fallback"):
            raise ValueError(
                f"{self.label}.freeze: on_growth must be 'error' or 'fallback', got {on_growth!r}"
            )
        with self._lock:
            self._frozen = on_growth

    def unfreeze(self) -> None:
        """Allow growth again."""
        with self._lock:
            self._frozen = None

    @property
    def frozen(self) -> bool:
        return self._frozen is not None

    def clear(self) -> None:
        """Drop every buffer that no captured CUDA graph uses.

        Pinned buffers stay (and slots whose buffer is pinned keep serving it) until
        `release_pinned()`. Tensors already handed out stay valid: they keep their memory alive.
        Counters are kept. The memory goes back to PyTorch's caching allocator
        (`torch.cuda.empty_cache()` returns it to the device).
        """
        with self._lock:
            for slot in self._slots.values():
                slot.former_capacity = 0
                if not slot.pinned:
                    self._let_go(slot)

    def release_pinned(self) -> None:
        """Unpin every buffer handed out during CUDA graph capture, and drop those growth replaced.

        Call it only once every graph captured with this cache has been destroyed: a replay
        after this call may write into memory that belongs to other tensors.
        """
        if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
            raise RuntimeError(f"{self.label}.release_pinned() called during CUDA graph capture")
        with self._lock:
            for slot in self._slots.values():
                for buffer in slot.old_pinned:
                    self._held -= buffer.numel()
                slot.old_pinned = []
                slot.pinned = False

    # -- reporting --------------------------------------------------------------------------

    def stats(self) -> Dict[Tuple[str, str], SlotStats]:
        """Counters per slot, keyed by (cache name, device as a string such as ``'cuda:0'``)."""
        with self._lock:
            return {
                (s.name, str(s.device)): SlotStats(
                    hits=s.hits,
                    misses=s.misses,
                    growths=s.growths,
                    fallbacks=s.fallbacks,
                    bytes_held=s.held_bytes(),
                    bytes_pinned=s.pinned_bytes(),
                    zeroed_bytes=s.zeroed_bytes,
                    peak_bytes=s.peak_bytes,
                )
                for s in self._slots.values()
            }

    def report(self) -> str:
        """`stats()` as a text table, one row per slot."""
        header = ("cache name", "device", "hits", "misses", "growths", "fallbacks",
                  "held", "pinned", "zeroed", "peak")
        rows = [header]
        for (name, device), s in sorted(self.stats().items()):
            rows.append((
                name, device, str(s.hits), str(s.misses), str(s.growths), str(s.fallbacks),
                _format_bytes(s.bytes_held), _format_bytes(s.bytes_pinned),
                _format_bytes(s.zeroed_bytes), _format_bytes(s.peak_bytes),
            ))
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = [f"WorkspaceCache {self.label!r}" + (" (frozen)" if self.frozen else "")]
        for r in rows:
            cells = [r[0].ljust(widths[0]), r[1].ljust(widths[1])]
            cells += [c.rjust(w) for c, w in zip(r[2:], widths[2:])]
            lines.append("  ".join(cells).rstrip())
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"WorkspaceCache({self.label!r}, slots={len(self._slots)}, bytes_held={self._held})"


# ---------------------------------------------------------------------------------------------
# The module default cache and the kill switch.


def _runtime_disabled() -> bool:
    return os.environ.get("ALLOCAUDIT_RUNTIME", "").strip().lower() in ("off", "0", "false")


_disabled = _runtime_disabled()
_default = WorkspaceCache("default")
_current: contextvars.ContextVar[WorkspaceCache] = contextvars.ContextVar(
    "allocaudit_workspace_cache", default=_default
)


def reload_env() -> None:
    """Read the environment again, as at import.

    ``ALLOCAUDIT_RUNTIME=off`` (or ``0``, ``false``) turns `get_empty` into the plain
    `torch.empty` / `torch.zeros` it replaced. ``ALLOCAUDIT_RUNTIME_DEBUG`` (a comma-separated
    list of ``poison`` and ``strict``) sets the debug modes of the module default cache; caches
    created later without explicit modes read it as well.
    """
    global _disabled
    _disabled = _runtime_disabled()
    _default.poison, _default.strict = _debug_modes_from_env()


def default_cache() -> WorkspaceCache:
    """The cache that `get_empty` uses when none is passed: the module default, or `use_cache`'s."""
    return _current.get()


@contextlib.contextmanager
def use_cache(cache: WorkspaceCache) -> Iterator[WorkspaceCache]:
    """Make ``cache`` the default of `get_empty` inside the ``with`` block (per thread and task)."""
    if not isinstance(cache, WorkspaceCache):
        raise TypeError(f"use_cache: expected a WorkspaceCache, got {cache!r}")
    token = _current.set(cache)
    try:
        yield cache
    finally:
        _current.reset(token)


def get_empty(
    shape: ShapeLike,
    dtype: torch.dtype,
    *,
    device: DeviceLike = None,
    cache_name: str,
    zero: bool = False,
    cache: Optional[WorkspaceCache] = None,
) -> torch.Tensor:
    r"""Returns a workspace tensor: like `torch.empty` (or `torch.zeros`), but reused across calls.

    The result is a contiguous tensor of exactly ``shape``, ``dtype`` and ``device``, a view of
    the buffer that ``cache`` keeps for the slot (``cache_name``, ``device``). The next request
    of the same slot may return the same memory, so use the result as a workspace: let it go
    before the slot is requested again (strict mode checks this).

    Args:
        shape: an int, or a sequence of ints (``torch.Size``, tuple, list), each ``>= 0``.
        dtype: the element type; any `torch.dtype` that a byte buffer can be viewed as.
        device: a str, int or `torch.device`; ``None`` means the current default device, as
            for `torch.empty`. ``'cuda'`` means the current CUDA device at the call.
        cache_name: names the slot; requests under different names never share memory.
        zero: if ``True``, every element of the result is zero (exactly the requested bytes are
            zeroed, on every call). If ``False``, the contents are unspecified and no kernel runs.
        cache: the `WorkspaceCache` to use; by default `default_cache()`.

    CUDA graphs: a buffer handed out while the current stream captures a graph is pinned, kept
    until `WorkspaceCache.release_pinned()`, so replays never write into freed memory. Zeroing
    under capture is captured, so each replay zeroes again. A slot may grow during capture: the
    new buffer comes from the graph's memory pool.

    With ``ALLOCAUDIT_RUNTIME=off`` set at import (or before `reload_env()`), this is exactly
    ``torch.zeros(shape, dtype=dtype, device=device)`` if ``zero`` else ``torch.empty(...)``.
    """
    if _disabled:
        if zero:
            return torch.zeros(shape, dtype=dtype, device=device)
        return torch.empty(shape, dtype=dtype, device=device)
    if cache is None:
        cache = _current.get()
    return cache._get_empty(shape, dtype, device, cache_name, zero)
