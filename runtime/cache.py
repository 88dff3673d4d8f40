"""Reusable workspaces: `get_empty`, `get_empty_like` and `WorkspaceCache`.

A `WorkspaceCache` keeps a pool of byte buffers per device. `get_empty` hands out a typed view
of an *idle* buffer of the pool, or allocates a new one. The rules that make a rewritten
``torch.empty`` never less safe than the original are the caching allocator's own:

* Idle means that no tensor uses the buffer: no hand-out, no view made from one, no tensor
  that autograd saved. The cache counts the tensors that share the buffer's storage
  (PyTorch's storage use count, as ``torch._inductor.cudagraph_trees`` does for graph outputs),
  so a request never returns memory that a live tensor still uses.
* A CUDA buffer belongs to the stream it was last handed out on. Another stream takes it only
  once an event recorded on that stream after the buffer went idle has completed, so no
  hand-out shares memory with work still pending on another stream.
* Buffers are shared across cache names: stages that run one after the other reuse one buffer,
  as the caching allocator reuses one block. Names are the unit of statistics and strict mode.
* A buffer handed out during CUDA graph capture is *pinned*: the graph replays into it, so
  nothing but `WorkspaceCache.release_pinned` or `WorkspaceCache.release` lets go of it.

This module imports only the standard library and torch, so that it can be vendored as one
file (``allocaudit vendor-runtime``).
"""

from __future__ import annotations

import contextlib
import contextvars
import operator
import os
import sys
import threading
import types
import warnings
import weakref
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch

__all__ = [
    "BufferInfo",
    "CacheEvent",
    "SlotStats",
    "WorkspaceAliasError",
    "WorkspaceCache",
    "WorkspaceGrowthError",
    "add_observer",
    "default_cache",
    "get_empty",
    "get_empty_like",
    "reload_env",
    "remove_observer",
    "use_cache",
]

RUNTIME_VERSION = "2"

ShapeLike = Union[int, Sequence[int], torch.Size]
DeviceLike = Union[str, int, torch.device, None]
PoisonLike = Union[bool, int, Callable[[str, str], Optional[int]], None]
# (bytes spanned in elements, sizes, strides): what `as_strided` needs over a buffer.
_Layout = Tuple[int, Tuple[int, ...], Tuple[int, ...]]


class WorkspaceGrowthError(RuntimeError):
    """A frozen cache was asked for more bytes than any of its buffers holds."""


class WorkspaceAliasError(RuntimeError):
    """Strict mode: a cache name was requested while its earlier hand-out was still alive."""


# Every capacity is a multiple of this, so that a buffer can be viewed whole as any dtype
# (itemsizes are at most 16) and every hand-out starts at the allocator's own alignment.
_ALIGN = 64
# An idle buffer serves another name's request only if it wastes at most this much more than
# the request, so a small request does not keep a large buffer busy (the allocator splits).
_MAX_WASTE = 1 << 20
# Idle buffers that no request used during a whole window of this many requests go back to
# PyTorch's caching allocator, so memory that a burst needed is not held forever.
_SWEEP_EVERY = 2048
# A home stream that matches no stream (CUDA streams are non-negative ids; CPU has None).
_NO_STREAM = -1


# ---------------------------------------------------------------------------------------------
# Observers: let a profiler see every request without the runtime importing it.


class CacheEvent(NamedTuple):
    """One `get_empty` request as an observer sees it.

    ``kind`` is ``"hit"`` (served from a buffer the cache held), ``"miss"`` (a new buffer was
    allocated), ``"growth"`` (a new buffer was allocated because the name asked for more than
    before) or ``"fallback"`` (a plain allocation outside the cache: budget, frozen, or a
    tracing mode). ``nbytes`` is the size of the request. ``held_bytes`` and ``busy_bytes``
    are the bytes of the cache's buffers on ``device`` after the request, all of them and those
    with a live hand-out. ``capturing`` is true during CUDA graph capture.
    """

    cache: str
    name: str
    device: torch.device
    kind: str
    nbytes: int
    held_bytes: int
    busy_bytes: int
    capturing: bool


# Every copy of this module in a process (allocaudit's own, and copies vendored into other
# packages by `allocaudit vendor-runtime`) shares one list of observers, kept in a registry
# module, so that one profiler sees them all. `observers` is a tuple, replaced as a whole: the
# hit path reads it without a lock, and an empty tuple makes observation free when nobody looks.
_registry = sys.modules.get("_allocaudit_runtime_registry")
if _registry is None:
    _registry = sys.modules["_allocaudit_runtime_registry"] = types.ModuleType("_allocaudit_runtime_registry")
    _registry.observers = ()
# Marks this module's frames as the runtime's, wherever it lives: the profiler charges what it
# allocates to the caller's line.
__allocaudit_runtime__ = RUNTIME_VERSION


def add_observer(fn: Callable[[CacheEvent], None]) -> None:
    """Call ``fn(event)`` after every request, of every cache, in the requesting thread.

    ``fn`` runs outside the cache's lock, so it may itself call `get_empty`. Exceptions it raises
    propagate to the caller of `get_empty`. Adding the same function twice has no effect.
    """
    if fn not in _registry.observers:
        _registry.observers = _registry.observers + (fn,)


def remove_observer(fn: Callable[[CacheEvent], None]) -> None:
    """Stop calling ``fn``; a function that was not added is ignored."""
    _registry.observers = tuple(f for f in _registry.observers if f != fn)


# ---------------------------------------------------------------------------------------------
# Argument normalisation. Each helper validates on first sight and remembers the result, so that
# a hit is a few dictionary look-ups rather than a loop over the shape and a device parse.

_LAYOUTS: Dict[object, _Layout] = {}
_LIKE_LAYOUTS: Dict[object, _Layout] = {}
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
    numel = stride = 1
    for s in reversed(sizes):
        strides.append(stride)
        stride *= max(s, 1)  # as torch does: a size-0 dimension strides like a size-1 one
        numel *= s
    layout = (numel, tuple(sizes), tuple(reversed(strides)))
    # Remember only plain-int keys: other index types (numpy ints, 0-dim tensors) are normalised
    # on every call (the hit path checks that a key it found was asked for with plain ints).
    if type(shape) is int or all(type(s) is int for s in items):
        if len(_LAYOUTS) >= _MAX_LAYOUTS:
            _LAYOUTS.clear()
        _LAYOUTS[shape if type(shape) is int else tuple(items)] = layout
    return layout


def _like_layout(input: torch.Tensor) -> _Layout:
    """The layout `torch.empty_like(input)` has.

    torch keeps the strides of a dense, non-overlapping input and otherwise picks a contiguous
    (or channels-last) layout, from the input's sizes and strides alone; asking torch itself,
    for a meta tensor, gets every case right.
    """
    sizes, strides = input.shape, input.stride()
    out_strides = torch.empty_like(input, device="meta").stride()
    span = 0 if input.numel() == 0 else 1 + sum((s - 1) * st for s, st in zip(sizes, out_strides))
    layout = (span, tuple(sizes), tuple(out_strides))
    if len(_LIKE_LAYOUTS) >= _MAX_LAYOUTS:
        _LIKE_LAYOUTS.clear()
    _LIKE_LAYOUTS[(sizes, strides)] = layout
    return layout


class _Dev:
    """A device as the cache keys it: one object per device, so that look-ups hash by identity,
    with what the hit path asks of it computed once (torch.device's attributes are slow)."""

    __slots__ = ("device", "cuda", "index", "cached")

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.index = device.index
        # CPU work is synchronous and meta memory is no memory; CUDA streams are tracked. Other
        # accelerators get plain allocations: their streams are not.
        self.cached = device.type in ("cuda", "cpu", "meta")


_DEVS: Dict[torch.device, _Dev] = {}


def _dev_of(device: torch.device) -> _Dev:
    d = _DEVS.get(device)
    if d is None:
        d = _DEVS[device] = _Dev(device)
    return d


_CPU = _dev_of(torch.device("cpu"))
_CURRENT_CUDA = object()  # 'cuda' without an index: the current CUDA device, read at each call
_DEFAULT_DEVICE = object()  # None: torch's default device, read at each call
_DEVICES: Dict[object, object] = {None: _DEFAULT_DEVICE}  # what callers pass -> _Dev or the above
_CUDA_DEVICES: Dict[int, _Dev] = {}


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
    resolved = _CURRENT_CUDA if parsed.type == "cuda" and parsed.index is None else _dev_of(parsed)
    _DEVICES[device] = resolved
    return resolved


def _cuda_device(index: int) -> _Dev:
    d = _CUDA_DEVICES.get(index)
    if d is None:
        d = _CUDA_DEVICES[index] = _dev_of(torch.device("cuda", index))
    return d


def _default_device() -> _Dev:
    # torch.get_default_device() costs microseconds; without any torch function mode active
    # (torch.set_default_device installs one) the default is the CPU.
    if not torch._C._is_torch_function_mode_enabled():
        return _CPU
    device = torch.get_default_device()
    if device.type == "cuda" and device.index is None:
        return _cuda_device(torch.cuda.current_device())
    return _dev_of(device)


def _resolve_device(device: object, cache_name: object) -> _Dev:
    try:
        d = _DEVICES[device]
    except (KeyError, TypeError):
        d = _learn_device(device, cache_name)
    if d is _CURRENT_CUDA:
        return _cuda_device(torch.cuda.current_device())
    if d is _DEFAULT_DEVICE:
        return _default_device()
    return d


def _check_name(cache_name: object) -> None:
    if not isinstance(cache_name, str) or not cache_name:
        raise ValueError(f"get_empty: cache_name must be a non-empty str, got {cache_name!r}")


# The current stream of a CUDA device as an int (0: the default stream, which never captures).
_raw_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None) or (
    lambda index: torch.cuda.current_stream(index).cuda_stream
)
_is_capturing = torch.cuda.is_current_stream_capturing
# The number of tensors (views and autograd's saved tensors included) that share a storage,
# plus references PyTorch itself keeps; _Buffer.own is this count when the buffer is idle.
_use_count = torch._C._storage_Use_Count


def _capturing(dev: _Dev) -> bool:
    return dev.cuda and _is_capturing()


def _tracing_mode_active() -> bool:
    """A dispatch mode that is not a mere observer (fake tensors, make_fx, functionalization) is
    active: cached real memory must not leak into it, so requests are plain allocations."""
    from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

    return not all(getattr(m, "allocaudit_observer", False) for m in _get_current_dispatch_mode_stack())


def _call_site() -> str:
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back
    if frame is None:
        return "<unknown>"
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


def _poisons(poison: PoisonLike) -> bool:
    return poison is True or type(poison) is int or callable(poison)  # 0 is a byte, False is not


def _poison_byte(poison: PoisonLike, name: str, device: torch.device) -> Optional[int]:
    if poison is True:
        return 0xFF
    if callable(poison):
        return poison(name, str(device))
    return poison if type(poison) is int else None


def _graphs_shared_from_env() -> bool:
    value = os.environ.get("ALLOCAUDIT_RUNTIME_GRAPHS", "private").strip().lower()
    if value not in ("shared", "private"):
        warnings.warn(
            f"ALLOCAUDIT_RUNTIME_GRAPHS: ignoring {value!r}; known: shared, private",
            RuntimeWarning,
            stacklevel=3,
        )
    return value == "shared"


def _format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.2f} GiB"


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


# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlotStats:
    """Counters of one cache name on one device.

    Each request is exactly one of a hit, a miss, a growth or a fallback; an overlap is also
    one of those. ``bytes_held`` / ``bytes_pinned`` are the size of the buffer that last served
    the name, if the cache still holds it (a buffer shared by several names counts for each:
    `WorkspaceCache.buffers` has the totals).
    """

    hits: int  # served from a buffer the cache held
    misses: int  # a new buffer was allocated: no idle buffer fitted
    growths: int  # a new buffer was allocated because the name asked for more than ever before
    fallbacks: int  # a plain allocation: budget exceeded, frozen with "fallback", tracing mode
    overlaps: int  # requested while the name's earlier hand-out was alive: served elsewhere
    zeroed_bytes: int
    largest_request: int  # bytes
    bytes_held: int
    bytes_pinned: int


@dataclass(frozen=True)
class BufferInfo:
    """One buffer of a cache, as `WorkspaceCache.buffers` reports it."""

    device: str
    stream: Optional[int]  # the CUDA stream it was last handed out on (0: default stream)
    address: int  # data_ptr() of its memory
    nbytes: int
    pinned: bool  # a captured CUDA graph replays into it
    busy: bool  # a hand-out (or a view of one, or a tensor saved for backward) is alive
    names: Tuple[str, ...]  # the cache names it served


class _Buffer:
    __slots__ = (
        "data", "device", "capacity", "cdata", "own", "views", "stream", "stream_obj", "pinned",
        "home", "eager", "event", "names", "last_name", "last_site", "tick",
    )

    def __init__(self, data: torch.Tensor, stream: Optional[int], tick: int) -> None:
        self.data = data  # uint8, 1-D, `capacity` bytes
        self.device = data.device
        self.capacity = data.numel()
        self.cdata = data.untyped_storage()._cdata
        self.own = _use_count(self.cdata)  # the count while idle: the cache's own references
        self.views: Dict[torch.dtype, torch.Tensor] = {}  # the whole buffer, per dtype
        self.stream = stream
        self.stream_obj: Optional[torch.cuda.Stream] = None
        self.pinned = False
        self.home: Optional[int] = _NO_STREAM  # pinned: the only stream that may use it eagerly
        self.eager = True  # its last hand-out was not made during graph capture
        self.event: Optional[torch.cuda.Event] = None  # recorded on `stream` once it went idle
        self.names: Dict[str, None] = {}  # the names it served, in order
        self.last_name = ""
        self.last_site = "<unknown>"
        self.tick = tick

    def idle(self) -> bool:
        return _use_count(self.cdata) == self.own

    def view(self, dtype: torch.dtype, cache_name: str) -> torch.Tensor:
        view = self.views.get(dtype)
        if view is None:
            try:
                view = self.data.view(dtype)
            except RuntimeError as e:
                raise TypeError(
                    f"get_empty(cache_name={cache_name!r}): unsupported dtype {dtype}: {e}"
                ) from None
            self.views[dtype] = view
            self.own += 1
        return view


class _Name:
    """Per (cache name, device): counters, and the view of its last hand-out, kept private so
    that nothing a caller does to its tensor's metadata reaches the next one."""

    __slots__ = (
        "name", "device", "buffer", "view", "layout", "dtype", "hits", "misses", "growths",
        "fallbacks", "overlaps", "zeroed_bytes", "largest",
    )

    def __init__(self, name: str, device: torch.device) -> None:
        self.name = name
        self.device = device
        self.buffer: Optional[_Buffer] = None  # served the last hand-out; tried first
        self.view: Optional[torch.Tensor] = None  # over `buffer`, of `layout` and `dtype`
        self.layout: Optional[_Layout] = None
        self.dtype: Optional[torch.dtype] = None
        self.hits = self.misses = self.growths = self.fallbacks = self.overlaps = 0
        self.zeroed_bytes = self.largest = 0

    def forget_view(self) -> None:
        if self.view is not None:
            self.buffer.own -= 1
        self.view = self.layout = self.dtype = None


class WorkspaceCache:
    """Reusable workspace buffers, shared by cache names, safe across streams, threads and graphs.

    Args:
        label: names this cache in errors, warnings and `report()`.
        growth: ``"exact"`` allocates buffers of the requested size (rounded up to 64 bytes);
            ``"pow2"`` rounds up to the next power of two, for fewer allocations when sizes creep.
        max_bytes: budget for all buffers of the cache, pinned ones included. A request that
            would exceed it (after idle buffers were let go) is served by a plain allocation,
            counted as a fallback, with one `ResourceWarning` per cache.
        poison: fill every hand-out that is not zeroed, to expose reads of stale data:
            ``True`` with all-ones bytes (NaN in float dtypes, -1 in integers), an int with that
            byte, a callable ``(cache_name, device) -> byte or None`` to choose per name.
            ``None`` reads ``ALLOCAUDIT_RUNTIME_DEBUG``.
        strict: raise `WorkspaceAliasError` when a name is requested while its earlier hand-out,
            or a view made from it, is still alive. ``None`` reads ``ALLOCAUDIT_RUNTIME_DEBUG``.
            Without it such a request is served from other memory and counted as an overlap.
        share_with_graphs: whether eager work reuses the buffers CUDA graphs replay into. If
            false (the default), a buffer that a graph captured serves only later captures: no
            eager hand-out can ever be overwritten by a replay, as with plain `torch.empty`. A
            capture may still take an idle eager buffer of about its size (``torch.cuda.graph``
            synchronises the device first), which then belongs to the graphs. If true, eager
            requests on the stream that used a buffer before the capture reuse it after, for the
            memory plain allocations cannot share (the seed's "reuse the graph pool's memory");
            then an eager hand-out must never live across a replay. ``None`` reads
            ``ALLOCAUDIT_RUNTIME_GRAPHS`` (``shared`` or ``private``).
        owner: an object whose collection releases the cache (`release`), such as the model
            or engine that owns the graphs captured through it.

    All methods are thread-safe.
    """

    def __init__(
        self,
        label: str = "workspaces",
        *,
        growth: str = "exact",
        max_bytes: Optional[int] = None,
        poison: PoisonLike = None,
        strict: Optional[bool] = None,
        share_with_graphs: Optional[bool] = None,
        owner: object = None,
    ) -> None:
        if growth not in ("exact", "pow2"):
            raise ValueError(f"WorkspaceCache({label!r}): growth must be 'exact' or 'pow2', got {growth!r}")
        if max_bytes is not None and (type(max_bytes) is not int or max_bytes < 0):
            raise ValueError(
                f"WorkspaceCache({label!r}): max_bytes must be a non-negative int or None, got {max_bytes!r}"
            )
        if not (poison is None or type(poison) is bool or callable(poison)
                or (type(poison) is int and 0 <= poison <= 0xFF)):
            raise ValueError(
                f"WorkspaceCache({label!r}): poison must be a bool, a byte (0-255), a callable "
                f"or None, got {poison!r}"
            )
        self.label = label
        self.growth = growth
        self.max_bytes = max_bytes
        self.share_with_graphs = _graphs_shared_from_env() if share_with_graphs is None else bool(share_with_graphs)
        env_poison, env_strict = _debug_modes_from_env()
        self._poison: PoisonLike = env_poison if poison is None else poison
        self._strict = env_strict if strict is None else bool(strict)
        self._debug = _poisons(self._poison) or self._strict
        self._lock = threading.Lock()
        self._names: Dict[Tuple[str, _Dev], _Name] = {}
        self._buffers: Dict[_Dev, List[_Buffer]] = {}
        self._held = 0
        self._frozen: Optional[str] = None
        self._warned_budget = False
        self._tick = 0  # requests served so far: the clock of the idle sweep
        self._next_sweep = _SWEEP_EVERY
        self._last_sweep = 0
        if owner is not None:
            # Not at interpreter exit: the process is going, and torch may be half torn down.
            weakref.finalize(owner, self.release).atexit = False

    # -- debug modes, settable after creation -----------------------------------------------

    @property
    def poison(self) -> PoisonLike:
        return self._poison

    @poison.setter
    def poison(self, value: PoisonLike) -> None:
        with self._lock:
            self._poison = value
            self._debug = _poisons(self._poison) or self._strict

    @property
    def strict(self) -> bool:
        return self._strict

    @strict.setter
    def strict(self, value: bool) -> None:
        with self._lock:
            self._strict = bool(value)
            self._debug = _poisons(self._poison) or self._strict

    # -- requests ---------------------------------------------------------------------------

    def _request(
        self,
        layout: _Layout,
        dtype: torch.dtype,
        dev: "_Dev",
        cache_name: str,
        zero: bool,
    ) -> torch.Tensor:
        """The hit path, inline; everything else in `_acquire`."""
        nbytes = layout[0] * dtype.itemsize
        if not nbytes:
            return self._nothing(layout, dtype, dev, cache_name)
        stream = _raw_stream(dev.index) if dev.cuda else None
        key = (cache_name, dev)
        with self._lock:
            try:
                st = self._names.get(key)
            except TypeError:  # an unhashable cache_name: report it as a bad name
                _check_name(cache_name)
                raise
            self._tick += 1
            b = st.buffer if st is not None else None
            if (
                b is not None
                and nbytes <= b.capacity
                and b.stream == stream
                and not self._debug
                and self._tick < self._next_sweep
                # A pinned buffer serves eager work only on its home stream. An unpinned one on a
                # stream that may be capturing goes the slow way, which pins it.
                and (b.home == stream if b.pinned else not stream or not _is_capturing())
                and _use_count(b.cdata) == b.own  # idle: no live tensor uses its memory
            ):
                st.hits += 1
                b.tick = self._tick
                b.last_name = cache_name
                b.event = None  # new work on its stream: an earlier idle event says nothing
                if st.layout is layout and st.dtype is dtype:
                    # The same request as last time (the same memoised layout object): detach()
                    # makes a new tensor with the same sizes, strides and memory, at half the
                    # cost of as_strided.
                    out = st.view.detach()
                else:
                    out = self._new_view(st, b, layout, dtype)
                if zero:
                    out.zero_()  # under capture this kernel is captured too: replays re-zero
                    st.zeroed_bytes += nbytes
                kind = "hit"
                event = self._event(cache_name, dev, kind, nbytes) if _registry.observers else None
            else:
                out, kind = self._acquire(key, st, layout, nbytes, dtype, stream, zero)
                event = self._event(cache_name, dev, kind, nbytes) if _registry.observers else None
        if event is not None:
            for fn in _registry.observers:
                fn(event)
        return out

    def _nothing(self, layout: _Layout, dtype: torch.dtype, dev: _Dev, cache_name: str) -> torch.Tensor:
        """A request of no bytes: torch.empty allocates nothing for it, so neither does the cache
        (a buffer would stay busy as long as the empty tensor lives)."""
        with self._lock:
            st = self._names.get((cache_name, dev))
            if st is None:
                _check_name(cache_name)
                st = self._names[(cache_name, dev)] = _Name(cache_name, dev.device)
            st.hits += 1
            event = self._event(cache_name, dev, "hit", 0) if _registry.observers else None
        if event is not None:
            for fn in _registry.observers:
                fn(event)
        return torch.empty_strided(layout[1], layout[2], dtype=dtype, device=dev.device)

    def _new_view(self, st: _Name, b: _Buffer, layout: _Layout, dtype: torch.dtype) -> torch.Tensor:
        """A new tensor of ``layout`` and ``dtype`` over the start of ``b``, memoised for ``st``."""
        if st.buffer is not b:
            if st.buffer is not None:
                st.forget_view()
            st.buffer = b
        view = b.view(dtype, st.name).as_strided(layout[1], layout[2])
        if st.view is None:
            b.own += 1
        st.view, st.layout, st.dtype = view, layout, dtype
        return view.detach()

    def _acquire(
        self,
        key: Tuple[str, _Dev],
        st: Optional[_Name],
        layout: _Layout,
        nbytes: int,
        dtype: torch.dtype,
        stream: Optional[int],
        zero: bool,
    ) -> Tuple[torch.Tensor, str]:
        """Everything but the plain hit: choosing a buffer, allocating, debug modes, sweeps."""
        cache_name, dev = key
        if st is None:
            _check_name(cache_name)
            st = self._names[key] = _Name(cache_name, dev.device)
        capturing = _capturing(dev)
        if not capturing and self._tick >= self._next_sweep:
            self._sweep()
        prev = st.buffer
        if prev is not None and prev.last_name == cache_name and not prev.idle():
            # The earlier hand-out of this name, or a view of it, is still alive: it keeps its
            # memory and this request is served from other memory.
            if self._strict:
                raise WorkspaceAliasError(
                    f"{self.label}: cache name {cache_name!r} on {dev.device} requested at {_call_site()} "
                    f"while its hand-out from {prev.last_site} (or a view of it) is still alive"
                )
            st.overlaps += 1
        if nbytes > st.largest:
            grew, st.largest = st.largest > 0, nbytes
        else:
            grew = False
        b = self._find(dev, stream, capturing, nbytes, prev, cache_name)
        if b is not None:
            kind = "hit"
            st.hits += 1
        else:
            b, kind = self._allocate(st, dev, stream, capturing, nbytes, grew)
            if b is None:
                st.fallbacks += 1
                raw = torch.empty(nbytes, dtype=torch.uint8, device=dev.device)
                out = raw.view(dtype).as_strided(layout[1], layout[2])
                return self._finish(out, raw, st, nbytes, zero), kind
        # The buffer now belongs to this stream, this capture or eager work, and this name.
        if capturing and not b.pinned:
            b.pinned = True  # the graph being captured will replay into this buffer
            b.home = b.stream if b.eager and self.share_with_graphs else _NO_STREAM
        if b.stream != stream:
            b.stream = stream
            b.stream_obj = torch.cuda.current_stream(dev.device) if stream is not None else None
        b.eager = not capturing
        b.event = None
        b.tick = self._tick
        b.last_name = cache_name
        if cache_name not in b.names:
            b.names[cache_name] = None
        if self._strict:
            b.last_site = _call_site()
        if st.layout is layout and st.dtype is dtype and st.buffer is b:
            out = st.view.detach()
        else:
            out = self._new_view(st, b, layout, dtype)
        return self._finish(out, b.data, st, nbytes, zero), kind

    def _finish(self, out: torch.Tensor, raw: torch.Tensor, st: _Name, nbytes: int, zero: bool) -> torch.Tensor:
        """Zero or poison a hand-out; ``raw`` is the uint8 memory it starts at."""
        if zero:
            out.zero_()
            st.zeroed_bytes += nbytes
        elif nbytes and _poisons(self._poison):
            byte = _poison_byte(self._poison, st.name, st.device)
            if byte is not None:
                # bool must hold 0 or 1 to be a valid value.
                raw[:nbytes].fill_((byte & 1) if out.dtype is torch.bool else byte)
        return out

    def _usable(self, b: _Buffer, stream: Optional[int], capturing: bool) -> bool:
        """Whether ``b`` may serve a request on ``stream`` now (idleness checked by the caller)."""
        if capturing:
            if b.pinned:
                # The same capture stream is ordered after every earlier use in a capture. A
                # buffer used during capture on another stream is not: within one capture the
                # two streams' kernels may run concurrently.
                return b.stream == stream or (b.eager and self.share_with_graphs)
            # Only eager work used it, all of it done: torch.cuda.graph synchronises the device
            # before it captures. From now on it belongs to the graphs.
            return True
        if b.pinned:
            # Graphs replay into it: eager work may use it only on its home stream, the stream
            # that used it before the capture, which is assumed ordered with the replays.
            return b.home == stream
        if b.stream == stream:
            return True  # ordered after everything that used it
        # Another stream: only once the work pending there when it went idle is done. Every
        # use was enqueued before its last reference died, so an event recorded now follows it.
        if b.event is None:
            b.event = torch.cuda.Event()
            b.event.record(b.stream_obj)
        return b.event.query()

    def _find(
        self,
        dev: "_Dev",
        stream: Optional[int],
        capturing: bool,
        nbytes: int,
        prev: Optional[_Buffer],
        cache_name: str,
    ) -> Optional[_Buffer]:
        """An idle buffer that may serve the request, or None.

        Buffers of this stream come first (others need an event to move), then the name's own
        previous buffer (the same address as before), then the smallest. A buffer of another
        name serves only if it wastes little: a small request must not keep a large buffer busy.
        """
        def fits(b: _Buffer) -> bool:
            if b.capacity < nbytes:
                return False
            if capturing and not b.pinned and not self.share_with_graphs:
                # The capture would take it from eager work for good: only about the size the
                # graph needs, which its pool would allocate anyway (torch.cuda.graph has just
                # emptied the allocator's cache), or eager work would have to allocate it again.
                return b.capacity - nbytes <= max(_MAX_WASTE, nbytes >> 3)
            # A buffer that served this name before may be larger: it has the name's sizes.
            return b.capacity <= 2 * nbytes + _MAX_WASTE or cache_name in b.names

        candidates = [b for b in self._buffers.get(dev, ()) if fits(b)]
        candidates.sort(key=lambda b: (
            not (b.stream == stream or (b.pinned and b.home == stream)), b is not prev, b.capacity
        ))
        for b in candidates:
            if b.idle() and self._usable(b, stream, capturing):
                return b
        return None

    def _allocate(
        self,
        st: _Name,
        dev: "_Dev",
        stream: Optional[int],
        capturing: bool,
        nbytes: int,
        grew: bool,
    ) -> Tuple[Optional[_Buffer], str]:
        """A new buffer for ``st``'s request; (None, "fallback") when frozen or over budget."""
        buffers = self._buffers.setdefault(dev, [])
        if self._frozen is not None:
            largest = max((b.capacity for b in buffers), default=0)
            if nbytes <= largest or self._frozen == "fallback":
                # Fits a buffer that is busy (or on another stream): never an error, since plain
                # torch.empty would have served it.
                return None, "fallback"
            raise WorkspaceGrowthError(
                f"{self.label} is frozen: cache name {st.name!r} on {dev.device} asked for {nbytes} "
                f"bytes and its largest buffer holds {largest}; warm up with the largest batch "
                "before freeze(), or freeze(on_growth='fallback')"
            )
        capacity = nbytes if self.growth == "exact" else 1 << max(nbytes - 1, 0).bit_length()
        capacity = max(-(-capacity // _ALIGN) * _ALIGN, _ALIGN)
        if not capturing:
            # Let the caching allocator reuse the memory of idle buffers too small for this
            # request, as it would reuse the blocks of freed torch.empty tensors. Under capture
            # the new buffer comes from the graph's pool: nothing to gain there.
            self._drop(b for b in buffers if b.capacity < capacity and b.stream == stream and not b.pinned and b.idle())
        if self.max_bytes is not None and self._held + capacity > self.max_bytes and not capturing:
            self._drop(b for bs in self._buffers.values() for b in bs if not b.pinned and b.idle())
        if self.max_bytes is not None and self._held + capacity > self.max_bytes:
            if not self._warned_budget:
                self._warned_budget = True
                warnings.warn(
                    f"{self.label}: budget of {self.max_bytes} bytes reached; cache name "
                    f"{st.name!r} on {dev.device} asked for {capacity} more. Requests beyond the budget "
                    "are served by plain allocations (see stats().fallbacks).",
                    ResourceWarning,
                    stacklevel=5,
                )
            return None, "fallback"
        # Under capture this allocation lands in the graph's private memory pool, which is what
        # the graph needs: its replays write here.
        data = torch.empty(capacity, dtype=torch.uint8, device=dev.device)
        b = _Buffer(data, stream, self._tick)
        b.eager = not capturing  # a buffer born in a capture has no home stream
        b.stream_obj = torch.cuda.current_stream(dev.device) if stream is not None else None
        buffers.append(b)
        self._held += capacity
        if grew:
            st.growths += 1
            return b, "growth"
        st.misses += 1
        return b, "miss"

    def _drop(self, victims) -> None:
        """Let go of buffers (never pinned ones): the names that point at them forget them."""
        victims = [b for b in victims if not b.pinned]
        if not victims:
            return
        gone = set(map(id, victims))
        for st in self._names.values():
            if st.buffer is not None and id(st.buffer) in gone:
                st.forget_view()
                st.buffer = None
        for buffers in self._buffers.values():
            buffers[:] = [b for b in buffers if id(b) not in gone]  # in place: callers hold the list
        for b in victims:
            self._held -= b.capacity
            b.capacity = -1  # a stale reference can no longer fit any request

    def _sweep(self) -> None:
        """Let go of idle buffers that no request used since the previous sweep."""
        self._drop(
            b for bs in self._buffers.values() for b in bs
            if b.tick <= self._last_sweep and not b.pinned and b.idle()
        )
        self._last_sweep = self._tick
        self._next_sweep = self._tick + _SWEEP_EVERY

    def _event(self, name: str, dev: _Dev, kind: str, nbytes: int) -> CacheEvent:
        buffers = self._buffers.get(dev, ())
        held = sum(b.capacity for b in buffers)
        busy = sum(b.capacity for b in buffers if not b.idle())
        return CacheEvent(self.label, name, dev.device, kind, nbytes, held, busy, _capturing(dev))

    # -- lifetime ---------------------------------------------------------------------------

    def freeze(self, on_growth: str = "error") -> None:
        """Forbid new buffers, typically after warm-up and graph capture.

        A later request larger than every buffer of its device raises `WorkspaceGrowthError`
        (naming the cache name, the bytes asked and the largest buffer) with
        ``on_growth="error"``, or is served by a plain allocation, counted as a fallback, with
        ``on_growth="fallback"``. A request that fits a buffer that is busy is always a counted
        fallback: plain `torch.empty` would have served it.
        """
        if on_growth not in ("error", "fallback"):
            raise ValueError(
                f"{self.label}.freeze: on_growth must be 'error' or 'fallback', got {on_growth!r}"
            )
        with self._lock:
            self._frozen = on_growth

    def unfreeze(self) -> None:
        """Allow new buffers again."""
        with self._lock:
            self._frozen = None

    @property
    def frozen(self) -> bool:
        return self._frozen is not None

    def clear(self) -> None:
        """Let go of every buffer that no captured CUDA graph uses.

        Tensors already handed out stay valid: they keep their memory alive. Counters are kept.
        The memory goes back to PyTorch's caching allocator (`torch.cuda.empty_cache()` returns
        it to the device).
        """
        with self._lock:
            self._drop(b for bs in self._buffers.values() for b in bs)

    def release_pinned(self) -> None:
        """Let go of the buffers that CUDA graphs captured through this cache replay into.

        Call it only once every graph captured with this cache has been destroyed: a replay
        after this call may write into memory that belongs to other tensors.
        """
        self._refuse_during_capture("release_pinned")
        with self._lock:
            pinned = [b for bs in self._buffers.values() for b in bs if b.pinned]
            for b in pinned:
                b.pinned, b.home = False, _NO_STREAM
            self._drop(b for b in pinned if b.idle())

    def release(self) -> None:
        """Let go of every buffer, pinned ones included, and reset the cache's state.

        For the end of the cache's owner (``WorkspaceCache(owner=...)`` calls it when the owner
        is collected): every graph captured through the cache must be gone. Counters are kept.
        """
        self._refuse_during_capture("release")
        with self._lock:
            for bs in self._buffers.values():
                for b in bs:
                    b.pinned = False
            self._drop(b for bs in self._buffers.values() for b in bs)

    def _refuse_during_capture(self, what: str) -> None:
        if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
            raise RuntimeError(f"{self.label}.{what}() called during CUDA graph capture")

    # -- reporting --------------------------------------------------------------------------

    def bytes_held(self) -> int:
        """Bytes of every buffer the cache holds, pinned ones included."""
        with self._lock:
            return self._held

    def buffers(self) -> List[BufferInfo]:
        """The buffers the cache holds: device, stream, size, pinned, busy, names served."""
        with self._lock:
            return [
                BufferInfo(str(b.device), b.stream, b.data.data_ptr(), b.capacity, b.pinned, not b.idle(), tuple(b.names))
                for bs in self._buffers.values() for b in bs
            ]

    def stats(self) -> Dict[Tuple[str, str], SlotStats]:
        """Counters per cache name and device, keyed by (name, device string such as ``'cuda:0'``)."""
        with self._lock:
            out = {}
            for s in self._names.values():
                held = s.buffer.capacity if s.buffer is not None else 0
                out[(s.name, str(s.device))] = SlotStats(
                    hits=s.hits, misses=s.misses, growths=s.growths, fallbacks=s.fallbacks,
                    overlaps=s.overlaps, zeroed_bytes=s.zeroed_bytes, largest_request=s.largest,
                    bytes_held=held, bytes_pinned=held if held and s.buffer.pinned else 0,
                )
            return out

    def report(self) -> str:
        """`stats()` and `buffers()` as text tables, with the names that shared memory."""
        stats = self.stats()
        buffers = self.buffers()
        pinned = sum(b.nbytes for b in buffers if b.pinned)
        lines = [
            f"WorkspaceCache {self.label!r}" + (" (frozen)" if self.frozen else "")
            + f": {len(buffers)} buffer{'s' if len(buffers) != 1 else ''}, "
            f"{_format_bytes(sum(b.nbytes for b in buffers))} held, "
            f"{_format_bytes(pinned)} pinned by CUDA graphs"
        ]
        header = ("cache name", "device", "hits", "misses", "growths", "overlaps", "fallbacks",
                  "zeroed", "largest")
        rows = [header] + [
            (name, device, str(s.hits), str(s.misses), str(s.growths), str(s.overlaps),
             str(s.fallbacks), _format_bytes(s.zeroed_bytes), _format_bytes(s.largest_request))
            for (name, device), s in sorted(stats.items())
        ]
        lines += _table(rows, left=2)
        if buffers:
            rows = [("buffer", "device", "stream", "size", "state", "cache names served")] + [
                (str(i), b.device, "-" if b.stream is None else str(b.stream), _format_bytes(b.nbytes),
                 ("busy" if b.busy else "idle") + (", pinned" if b.pinned else ""), ", ".join(b.names))
                for i, b in enumerate(buffers)
            ]
            lines += [""] + _table(rows, left=2)
        shared = [b for b in buffers if len(b.names) > 1]
        if shared:
            lines.append(
                f"{len(shared)} buffer{'s' if len(shared) != 1 else ''} served several cache names "
                "one after another (memory shared across names)"
            )
        for (name, device), s in sorted(stats.items()):
            if s.overlaps:
                lines.append(
                    f"overlap: {name!r} on {device} was requested {s.overlaps} time"
                    f"{'s' if s.overlaps != 1 else ''} while its earlier hand-out was still alive "
                    "(served from other memory; strict mode raises here)"
                )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"WorkspaceCache({self.label!r}, buffers={sum(map(len, self._buffers.values()))}, bytes_held={self._held})"


def _table(rows: List[Tuple[str, ...]], left: int) -> List[str]:
    """Rows as aligned text: the first ``left`` columns left-aligned, the rest right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(c.ljust(w) if i < left or i == len(r) - 1 else c.rjust(w)
                  for i, (c, w) in enumerate(zip(r, widths))).rstrip()
        for r in rows
    ]


# ---------------------------------------------------------------------------------------------
# The module default cache, the kill switch, and the two entry points.


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
    list of ``poison`` and ``strict``) sets the debug modes, and ``ALLOCAUDIT_RUNTIME_GRAPHS``
    (``shared`` or ``private``) the graph sharing, of the module default cache; caches created
    later without explicit settings read them as well.
    """
    global _disabled
    _disabled = _runtime_disabled()
    _default.poison, _default.strict = _debug_modes_from_env()
    _default.share_with_graphs = _graphs_shared_from_env()


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
    an idle buffer of ``cache``, or of a new one. It never shares memory with a tensor that is
    still alive (an earlier hand-out, a view of one, a tensor autograd saved), nor with work
    still pending on another CUDA stream: what `torch.empty` guarantees, it guarantees too.

    Args:
        shape: an int, or a sequence of ints (``torch.Size``, tuple, list), each ``>= 0``.
        dtype: the element type; any `torch.dtype` that a byte buffer can be viewed as.
        device: a str, int or `torch.device`; ``None`` means the current default device, as
            for `torch.empty`. ``'cuda'`` means the current CUDA device at the call.
        cache_name: names the call site, for statistics, reports and strict mode. Names share
            buffers: an idle buffer serves any name on its device and stream.
        zero: if ``True``, every element of the result is zero (exactly the requested bytes are
            zeroed, on every call). If ``False``, the contents are unspecified and no kernel runs.
        cache: the `WorkspaceCache` to use; by default `default_cache()`.

    Not covered, as for any memory that outlives its tensors: a raw pointer (``data_ptr()``)
    used after its tensor died, and a tensor used on another stream after its last Python
    reference is gone (``record_stream`` is not honoured: keep a reference, or synchronise).

    CUDA graphs: a buffer handed out during capture is pinned, kept until
    `WorkspaceCache.release_pinned`, so replays never write into freed memory; zeroing under
    capture is replayed; a capture may allocate (in the graph's pool). Graphs captured through
    one cache share its pinned buffers, as graphs captured into one memory pool share memory:
    replay them one at a time (or give each concurrently replayed graph its own cache). By
    default graphs and eager work never share a buffer; see ``share_with_graphs`` of
    `WorkspaceCache` for the mode that lets them.

    Under ``torch.compile`` (dynamo tracing) and other tracing modes this is exactly
    ``torch.zeros(shape, dtype=dtype, device=device)`` if ``zero`` else ``torch.empty(...)``;
    so it is with ``ALLOCAUDIT_RUNTIME=off`` set at import (or before `reload_env()`).
    """
    # First, before anything dynamo cannot trace: inductor plans the memory of compiled code.
    if torch.compiler.is_dynamo_compiling() or _disabled:
        if zero:
            return torch.zeros(shape, dtype=dtype, device=device)
        return torch.empty(shape, dtype=dtype, device=device)
    if cache is None:
        cache = _current.get()
    try:
        layout = _LAYOUTS[shape]
    except (KeyError, TypeError):  # TypeError: unhashable, a bad shape that _layout reports
        layout = None
    # Only plain ints are remembered, but 2.0 == 2 and numpy ints equal ints as dict keys: those
    # must go through _layout, which rejects floats as torch.empty does. (A sum of ints is an
    # int; any float or numpy int makes it something else. It is the cheapest test.)
    if layout is not None and type(shape) is not int and type(sum(shape)) is not int:
        layout = None
    if layout is None:
        layout = _layout(shape, cache_name)
    if type(dtype) is not torch.dtype:
        raise TypeError(f"get_empty(cache_name={cache_name!r}): dtype must be a torch.dtype, got {dtype!r}")
    dev = _resolve_device(device, cache_name)
    if not dev.cached or (torch._C._len_torch_dispatch_stack() and _tracing_mode_active()):
        _check_name(cache_name)
        if zero:
            return torch.zeros(layout[1], dtype=dtype, device=dev.device)
        return torch.empty(layout[1], dtype=dtype, device=dev.device)
    return cache._request(layout, dtype, dev, cache_name, zero)


def get_empty_like(
    input: torch.Tensor,
    *,
    cache_name: str,
    zero: bool = False,
    dtype: Optional[torch.dtype] = None,
    device: DeviceLike = None,
    cache: Optional[WorkspaceCache] = None,
) -> torch.Tensor:
    r"""Returns a workspace tensor like `torch.empty_like(input)` (or `torch.zeros_like`), reused.

    The result has ``input``'s size and, as ``memory_format=torch.preserve_format`` gives: the
    strides of ``input`` when it is dense and non-overlapping, else contiguous (channels-last
    where torch suggests it); ``dtype`` and ``device`` default to ``input``'s. Everything else
    is as for `get_empty`. A sparse or subclass (``DTensor``, quantised wrappers) ``input`` gets
    the plain `torch.empty_like`.
    """
    if torch.compiler.is_dynamo_compiling() or _disabled:
        if zero:
            return torch.zeros_like(input, dtype=dtype, device=device)
        return torch.empty_like(input, dtype=dtype, device=device)
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"get_empty_like(cache_name={cache_name!r}): input must be a Tensor, got {input!r}")
    if (type(input) is not torch.Tensor and type(input) is not torch.nn.Parameter) or input.layout is not torch.strided:
        _check_name(cache_name)
        if zero:
            return torch.zeros_like(input, dtype=dtype, device=device)
        return torch.empty_like(input, dtype=dtype, device=device)
    layout = _LIKE_LAYOUTS.get((input.shape, input.stride())) or _like_layout(input)
    if dtype is None:
        dtype = input.dtype
    elif type(dtype) is not torch.dtype:
        raise TypeError(f"get_empty_like(cache_name={cache_name!r}): dtype must be a torch.dtype, got {dtype!r}")
    dev = _dev_of(input.device) if device is None else _resolve_device(device, cache_name)
    if not dev.cached or (torch._C._len_torch_dispatch_stack() and _tracing_mode_active()):
        _check_name(cache_name)
        if zero:
            return torch.zeros_like(input, dtype=dtype, device=dev.device)
        return torch.empty_like(input, dtype=dtype, device=dev.device)
    return (cache if cache is not None else _current.get())._request(layout, dtype, dev, cache_name, zero)
