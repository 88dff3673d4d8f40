"""The allocation tracer: factory ops seen at the dispatcher, `get_empty` requests seen by the runtime.

    with profile_allocations(device="any") as recorder:
        model(x)
    profile = recorder.profile()

Factory ops are caught by a `TorchDispatchMode`, below every Python-level alias or wrapper
(`import torch as th`, `alloc = torch.empty`, a helper function): whatever the spelling, a new
tensor comes from one of `FACTORY_OPS`. Each is charged to the first frame of user code on the
stack; frames of torch, of allocaudit and of the standard library are skipped, so an allocation
the runtime cache makes for a `get_empty` call is charged to that call's line.

The dispatch mode stack is per thread: allocations made by other threads are not seen, but
`get_empty` requests of every thread are (the runtime's observer hook is process-wide).

Lifetimes: an allocation is freed when its storage is, that is when the last tensor using its
memory dies (the tensor itself, any view of it, a tensor autograd saved). A weak reference to
the storage's Python object, which PyTorch keeps exactly as long as the storage, says when;
its callback only queues the free, which the next recorded event (or `Recorder.profile`) takes
in order, so nothing runs under the recorder's lock from a garbage collection. Allocations the
runtime cache makes for its own buffers are not tracked so: those buffers serve every cache
name, and the runtime reports the bytes it holds and hands out with each request (the cache
band of the timeline). CUDA graph captures are seen by wrapping `torch.cuda.CUDAGraph`'s
``capture_begin`` and ``capture_end`` for as long as a recorder is active. The recorder
attributes; what is alive and when is `lifetimes.Lifetimes`' bookkeeping.
"""

from __future__ import annotations

import contextlib
import os
import runpy
import site
import sys
import sysconfig
import threading
import time
from typing import Iterator, Optional

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import allocaudit.runtime as runtime
from allocaudit.auditor.profiling.lifetimes import Lifetimes
from allocaudit.auditor.profiling.profile import MAX_EVENTS, MAX_SHAPES, CacheCounts, Profile, Site
from allocaudit.auditor.version import VERSION

DEVICE_FILTERS = ("cuda", "cpu", "any")

# What torch.empty/zeros/ones/full/empty_strided, torch.*_like and Tensor.new_* dispatch to in
# torch 2.1 - 2.13 (checked by experiment: each reaches its own aten op, none decomposes before
# the Python dispatch modes see it). Their `.out` overloads write into an existing tensor and
# allocate nothing, so they are left out.
FACTORY_OPS = frozenset(
    getattr(torch.ops.aten, name)
    for name in (
        "empty", "empty_strided", "zeros", "ones", "full",
        "empty_like", "zeros_like", "ones_like", "full_like",
        "new_empty", "new_empty_strided", "new_zeros", "new_ones", "new_full",
    )
)

# runpy's frames: below them is whoever ran the profiled program, not the program.
_RUNPY = frozenset((runpy.__file__, "<frozen runpy>"))
_COUNTERS = {"hit": "hits", "miss": "misses", "growth": "growths", "fallback": "fallbacks"}

_AUDITOR_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_RUNTIME_DIR = os.path.dirname(os.path.abspath(runtime.__file__))
_REWRITES_DIR = os.path.join(os.path.dirname(_AUDITOR_DIR), "rewrites")
_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__))


def _stdlib_dirs() -> tuple[tuple[str, ...], tuple[str, ...]]:
    paths = sysconfig.get_paths()
    stdlib = {os.path.abspath(paths[k]) + os.sep for k in ("stdlib", "platstdlib") if k in paths}
    packages = {os.path.abspath(paths[k]) + os.sep for k in ("purelib", "platlib") if k in paths}
    try:
        packages.update(os.path.abspath(p) + os.sep for p in site.getsitepackages())
    except AttributeError:  # some embedded interpreters have no site.getsitepackages
        pass
    return tuple(stdlib), tuple(packages)


_STDLIB, _SITE_PACKAGES = _stdlib_dirs()
_LIBRARY = tuple(d + os.sep for d in (_TORCH_DIR, _AUDITOR_DIR, _REWRITES_DIR))

# Frame classification, by file name: None for user code, else "runtime" or "library".
_kinds: dict[str, Optional[str]] = {}


def _kind(frame) -> Optional[str]:
    filename = frame.f_code.co_filename
    kind = _kinds.get(filename, False)
    if kind is not False:
        return kind
    if "__allocaudit_runtime__" in frame.f_globals:  # a copy vendored into the user's package
        kind = "runtime"
    elif filename.startswith("<frozen") or filename.startswith("<built-in"):
        kind = "library"
    else:
        path = os.path.abspath(filename)
        if path.startswith(_RUNTIME_DIR + os.sep):
            kind = "runtime"
        elif path.startswith(_LIBRARY):
            kind = "library"
        elif path.startswith(_STDLIB) and not path.startswith(_SITE_PACKAGES):
            kind = "library"
        else:
            kind = None
    _kinds[filename] = kind
    return kind


def _format_frame(frame) -> str:
    return f"{frame.f_code.co_filename}:{frame.f_lineno} in {_function_name(frame)}"


def _function_name(frame) -> str:
    code = frame.f_code
    return getattr(code, "co_qualname", code.co_name)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


class Recorder:
    """Accumulates allocations per user source site while a `profile_allocations` block runs:
    it attributes each to its site (calls, bytes, shapes, get_empty counts); what is alive
    and when is `Lifetimes`' bookkeeping, by the site's index."""

    def __init__(self, device: str = "cuda", stack_depth: int = 8, max_events: int = MAX_EVENTS) -> None:
        if device not in DEVICE_FILTERS:
            raise ValueError(f"device must be one of {', '.join(DEVICE_FILTERS)}, got {device!r}")
        if max_events < 0:
            raise ValueError(f"max_events must be >= 0, got {max_events}")
        self.device = device
        self.stack_depth = stack_depth
        self.sites: dict[tuple[str, int], Site] = {}
        # Sites in the order first seen, and each key's position there: the timeline's site numbers.
        self._ordered: list[Site] = []
        self._index: dict[tuple[str, int], int] = {}
        self._shape_keys: dict[tuple[str, int], set[str]] = {}
        self._devices_seen: set[str] = set()
        self._lock = threading.Lock()
        self._stopped: Optional[float] = None
        self._cuda = torch.cuda.is_available()
        self.lifetimes = Lifetimes(max_events)

    # -- attribution ------------------------------------------------------------------------

    def _site(self, frame) -> tuple[Optional[Site], bool]:
        """The user site of the current call, and whether the runtime cache was on the way."""
        through_runtime = False
        while frame is not None:
            kind = _kind(frame)
            if kind is None:
                break
            through_runtime = through_runtime or kind == "runtime"
            frame = frame.f_back
        if frame is None:
            return None, through_runtime
        key = (frame.f_code.co_filename, frame.f_lineno)
        found = self.sites.get(key)
        if found is None:
            stack = []
            f = frame
            while f is not None and len(stack) < self.stack_depth:
                if f.f_code.co_filename in _RUNPY:
                    break  # the profiled program's first frame is just below: the rest is ours
                if _kind(f) is None:
                    stack.append(_format_frame(f))
                f = f.f_back
            found = self.sites[key] = Site(
                path=key[0], line=key[1], function=_function_name(frame), stack=stack,
                function_line=frame.f_code.co_firstlineno,
            )
            self._shape_keys[key] = set()
            self._index[key] = len(self._ordered)
            self._ordered.append(found)
            self.lifetimes.new_site()
        return found, through_runtime

    def _keeps(self, device: torch.device) -> bool:
        return self.device == "any" or device.type == self.device

    # -- the two sources --------------------------------------------------------------------

    def record_allocation(self, op_name: str, out: torch.Tensor, frame) -> None:
        if not isinstance(out, torch.Tensor) or not self._keeps(out.device):
            return
        try:
            storage = out.untyped_storage()
            nbytes = storage.nbytes()
        except (RuntimeError, NotImplementedError):
            # A tensor subclass without storage: its own lifetime stands for its memory's.
            storage, nbytes = out, out.numel() * out.element_size()
        capturing = out.is_cuda and torch.cuda.is_current_stream_capturing()
        now = time.perf_counter()
        with self._lock:
            lifetimes = self.lifetimes
            lifetimes.catch_up()
            site_, through_runtime = self._site(frame)
            if site_ is None:
                return
            index = self._index[site_.key]
            ref = lifetimes.watch(storage) if nbytes else None
            if through_runtime:
                lifetimes.pend(ref, index, nbytes, now)
            elif nbytes:
                lifetimes.allocated(ref, index, nbytes, now)
            name = "allocaudit.runtime" if through_runtime else op_name
            site_.calls += 1
            site_.bytes += nbytes
            if through_runtime:
                site_.runtime_bytes += nbytes
            site_.ops[name] = site_.ops.get(name, 0) + 1
            if capturing:
                site_.captured_calls += 1
                site_.captured_bytes += nbytes
            self._note_shape(site_, tuple(out.shape), out.dtype, out.device)

    def record_cache_event(self, event: "runtime.CacheEvent") -> None:
        if not self._keeps(event.device):
            return
        now = time.perf_counter()
        with self._lock:
            self.lifetimes.claim(event.kind)
            site_, _ = self._site(sys._getframe(1))
            index = None if site_ is None else self._index[site_.key]
            self.lifetimes.cache_state(event.cache, str(event.device), event.held_bytes, event.busy_bytes, index, now)
            if site_ is None:
                return
            counts = site_.cache
            if counts is None:
                counts = site_.cache = CacheCounts()
            counts.requests += 1
            counts.requested_bytes += event.nbytes
            field = _COUNTERS[event.kind]
            setattr(counts, field, getattr(counts, field) + 1)
            if event.name not in counts.cache_names:
                counts.cache_names.append(event.name)
            device = str(event.device)
            if device not in site_.devices:
                site_.devices.append(device)
            self._devices_seen.add(device)

    def capture_began(self, graph: object) -> None:
        device = f"cuda:{torch.cuda.current_device()}" if self._cuda else "cuda"
        now = time.perf_counter()
        with self._lock:
            self.lifetimes.catch_up()
            self.lifetimes.capture_began(graph, now, device)

    def capture_ended(self, graph: object) -> None:
        now = time.perf_counter()
        with self._lock:
            self.lifetimes.catch_up()
            self.lifetimes.capture_ended(graph, now)

    def _note_shape(self, site_: Site, shape: tuple, dtype: torch.dtype, device: torch.device) -> None:
        key = f"{shape} {_dtype_name(dtype)}"
        seen = self._shape_keys[site_.key]
        if key not in seen:
            seen.add(key)
            if len(site_.shapes) < MAX_SHAPES:
                site_.shapes.append(key)
            else:
                site_.more_shapes += 1
        name = str(device)
        if name not in site_.devices:
            site_.devices.append(name)
        self._devices_seen.add(name)

    # -- the result -------------------------------------------------------------------------

    def stop(self) -> None:
        """End recording: what is still alive now stays alive in the profile."""
        with self._lock:
            if self._stopped is None:
                self._stopped = time.perf_counter()
                self.lifetimes.stop()

    def profile(
        self,
        command: tuple[str, ...] = (),
        exit_code: Optional[int] = None,
        exception: Optional[str] = None,
        memory_snapshot: Optional[str] = None,
        notes: tuple[str, ...] = (),
    ) -> Profile:
        """What was recorded so far, as a `Profile` (a copy: recording may go on)."""
        with self._lock:
            lifetimes = self.lifetimes
            if self._stopped is None:
                lifetimes.catch_up(all_threads=True)
            sites = [
                Site(**{
                    **s.to_dict(),
                    "peak_live_bytes": lifetimes.site_peak[i],
                    "cache": CacheCounts(**vars(s.cache)) if s.cache else None,
                })
                for i, s in enumerate(self._ordered)
            ]
            devices = sorted(self._devices_seen)
            end = self._stopped if self._stopped is not None else time.perf_counter()
            timeline = lifetimes.timeline(end)
            peak, peak_held = lifetimes.peak, lifetimes.peak_held
        notes = list(notes)
        if self.device == "cuda" and not self._cuda:
            notes.append("CUDA is not available here, so nothing was recorded with --device cuda; use --device cpu or any")
        if timeline.dropped:
            notes.append(
                f"the timeline keeps the first {timeline.max_events:,} of {timeline.total_events:,} events; "
                "counts, bytes and peaks cover the whole run"
            )
        return Profile(
            command=list(command),
            device_filter=self.device,
            torch_version=torch.__version__,
            devices_seen=devices,
            exit_code=exit_code,
            exception=exception,
            duration_s=end - lifetimes.started,
            sites=sites,
            memory_snapshot=memory_snapshot,
            notes=notes,
            tool_version=VERSION,
            peak_live_bytes=peak,
            peak_cache_held_bytes=peak_held,
            timeline=timeline,
        )


class _FactoryMode(TorchDispatchMode):
    # Only observes: the runtime keeps serving cached workspaces under this mode (it serves
    # plain allocations under modes that trace or fake tensors).
    allocaudit_observer = True

    def __init__(self, recorder: Recorder) -> None:
        super().__init__()
        self.recorder = recorder

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket in FACTORY_OPS and "out" not in func._overloadname:
            self.recorder.record_allocation(str(func.overloadpacket), out, sys._getframe(1))
        return out


# CUDA graph captures. torch has no hook for them, so `CUDAGraph.capture_begin`/`capture_end`
# (which `torch.cuda.graph` and `make_graphed_callables` call) are wrapped while any recorder
# is active, and put back when the last one stops.
_capture_lock = threading.Lock()
_capture_recorders: list[Recorder] = []
_capture_originals: dict[str, object] = {}


def _capture_begin(graph, *args, **kwargs):
    _capture_originals["capture_begin"](graph, *args, **kwargs)
    for recorder in tuple(_capture_recorders):
        recorder.capture_began(graph)


def _capture_end(graph, *args, **kwargs):
    try:
        return _capture_originals["capture_end"](graph, *args, **kwargs)
    finally:
        for recorder in tuple(_capture_recorders):
            recorder.capture_ended(graph)


_CAPTURE_WRAPPERS = {"capture_begin": _capture_begin, "capture_end": _capture_end}


def _watch_captures(recorder: Recorder) -> None:
    graph_class = getattr(torch.cuda, "CUDAGraph", None)
    with _capture_lock:
        if not _capture_recorders and graph_class is not None:
            for name, wrapper in _CAPTURE_WRAPPERS.items():
                _capture_originals[name] = getattr(graph_class, name)
                setattr(graph_class, name, wrapper)
        _capture_recorders.append(recorder)


def _unwatch_captures(recorder: Recorder) -> None:
    graph_class = getattr(torch.cuda, "CUDAGraph", None)
    with _capture_lock:
        _capture_recorders.remove(recorder)
        if not _capture_recorders and graph_class is not None:
            for name in _CAPTURE_WRAPPERS:
                setattr(graph_class, name, _capture_originals.pop(name))


@contextlib.contextmanager
def profile_allocations(device: str = "cuda", stack_depth: int = 8, max_events: int = MAX_EVENTS) -> Iterator[Recorder]:
    """Record every factory allocation and `get_empty` request made inside the block, and when
    each allocation is freed.

    Args:
        device: ``"cuda"``, ``"cpu"`` or ``"any"``: the device type of the tensors kept.
        stack_depth: user frames kept per site (at its first allocation), innermost first.
        max_events: timeline events kept (allocations, frees, get_empty requests); later ones
            are counted only. Counts, bytes and peaks always cover the whole block.

    Yields a `Recorder`; ``recorder.profile()`` gives the `Profile`, also after an exception.
    Allocations in graph capture are flagged, and captures recorded as spans of the timeline;
    graph replays allocate nothing and are not seen.
    """
    recorder = Recorder(device, stack_depth, max_events)
    runtime.add_observer(recorder.record_cache_event)
    _watch_captures(recorder)
    try:
        with _FactoryMode(recorder):
            yield recorder
    finally:
        _unwatch_captures(recorder)
        runtime.remove_observer(recorder.record_cache_event)
        recorder.stop()
