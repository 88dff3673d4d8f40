"""The memory timeline's bookkeeping while a recording runs: what is alive and when.

The tracer attributes each allocation to a user site (`tracer.Recorder`); this keeps, per
site index, the bytes alive and their peak, the runtime caches' held and busy bytes, the
events of the timeline and the CUDA graph captures. It needs no torch: an allocation is
watched through a weak reference to whatever object lives exactly as long as its memory
(the tracer passes a tensor's storage).

Not thread-safe: the recorder calls every method under its lock, except the weak
references' callbacks, which only queue a free (deque.append is atomic); the next call
that takes the queue (`catch_up`, `claim`) records it, in order.
"""

from __future__ import annotations

import collections
import threading
import time
import weakref
from typing import Optional

from allocaudit.auditor.profiling.profile import ALLOC, CACHE, FREE, Capture, Timeline


class Lifetimes:
    def __init__(self, max_events: int) -> None:
        self.started = time.perf_counter()
        self.max_events = max_events
        # id(weak reference) -> (the reference, site index, bytes): the allocations that may be alive.
        self._live: dict[int, tuple[weakref.ref, int, int]] = {}
        self.site_live: list[int] = []
        self.site_peak: list[int] = []  # the most bytes of a site's allocations alive at once
        self._live_bytes = 0
        self._held: dict[tuple[str, str], tuple[int, int]] = {}  # (cache, device) -> (held, busy)
        self._held_bytes = self._busy_bytes = 0
        self.peak = self.peak_held = 0
        # A free is queued by the weak reference's callback, in whatever thread drops the last
        # tensor, and taken in order at the next event: deque.append is atomic.
        self._freed: collections.deque = collections.deque()
        clock, freed = time.perf_counter, self._freed
        self._on_free = lambda ref: freed.append((id(ref), clock()))
        # An allocation made inside the runtime, per thread, until the request's event says
        # whether it is a cache buffer (a miss or growth) or a plain hand-out (anything else).
        self._pending: dict[int, tuple[Optional[weakref.ref], int, int, float]] = {}
        self._events: list[tuple] = []  # tuples of ints: the garbage collector soon stops tracking them
        self._event_count = 0
        self._captures: list[Capture] = []
        self._open_captures: dict[int, tuple[int, float, str]] = {}  # id(graph) -> start

    def new_site(self) -> None:
        """A site was seen for the first time: it takes the next index."""
        self.site_live.append(0)
        self.site_peak.append(0)

    def watch(self, owner: object) -> Optional[weakref.ref]:
        try:
            return weakref.ref(owner, self._on_free)
        except TypeError:  # an object without weak references: never seen freed
            return None

    def t_us(self, when: float) -> int:
        return max(0, int((when - self.started) * 1e6))

    # The next three run for every allocation and free: written flat, without helper calls.

    def allocated(self, ref: Optional[weakref.ref], index: int, nbytes: int, when: float) -> None:
        if ref is not None:
            self._live[id(ref)] = (ref, index, nbytes)  # the reference lives as long as its entry
        live = self.site_live[index] = self.site_live[index] + nbytes
        self._live_bytes += nbytes
        if live > self.site_peak[index]:
            self.site_peak[index] = live
        if self._live_bytes + self._held_bytes > self.peak:
            self.peak = self._live_bytes + self._held_bytes
        if self._event_count < self.max_events:
            self._events.append((ALLOC, self.t_us(when), index, nbytes))
        self._event_count += 1

    def _drain_frees(self) -> None:
        while self._freed:
            key, when = self._freed.popleft()
            live = self._live.pop(key, None)
            if live is None:  # a cache buffer's, or one watched by an earlier recording
                continue
            _, index, nbytes = live
            self.site_live[index] -= nbytes
            self._live_bytes -= nbytes
            if self._event_count < self.max_events:
                self._events.append((FREE, self.t_us(when), index, nbytes))
            self._event_count += 1

    def catch_up(self, all_threads: bool = False) -> None:
        """Take the queued frees, and this thread's runtime allocation that no request claimed
        (``ALLOCAUDIT_RUNTIME=off``, tracing, devices the cache does not serve: plain tensors)."""
        if self._pending:
            if all_threads:
                pending = list(self._pending.values())
                self._pending.clear()
            else:
                pending = [self._pending.pop(threading.get_ident(), None)]
            for p in pending:
                if p is not None and p[2]:
                    self.allocated(*p)
        # After the pending allocation: its free may be queued already.
        if self._freed:
            self._drain_frees()

    def pend(self, ref: Optional[weakref.ref], index: int, nbytes: int, when: float) -> None:
        """An allocation made inside the runtime by this thread: `claim` says what it was."""
        self._pending[threading.get_ident()] = (ref, index, nbytes, when)

    def claim(self, request_kind: str) -> None:
        """A get_empty request of this thread is done. A miss or a growth allocated the cache's
        own buffer, which is the cache band's: its weak reference goes, unwatched. Any other
        request's allocation is a plain hand-out (a fallback), the site's like a torch.empty."""
        pending = self._pending.pop(threading.get_ident(), None)
        if pending is not None and request_kind not in ("miss", "growth") and pending[2]:
            self.allocated(*pending)
        self._drain_frees()

    def cache_state(self, cache: str, device: str, held: int, busy: int, index: Optional[int], when: float) -> None:
        """The runtime cache ``cache`` holds ``held`` bytes on ``device``, ``busy`` of them handed
        out, after a request of site ``index`` (None: no user site)."""
        key = (cache, device)
        old_held, old_busy = self._held.get(key, (0, 0))
        self._held[key] = (held, busy)
        self._held_bytes += held - old_held
        self._busy_bytes += busy - old_busy
        self.peak_held = max(self.peak_held, self._held_bytes)
        self.peak = max(self.peak, self._live_bytes + self._held_bytes)
        if self._event_count < self.max_events:
            self._events.append((CACHE, self.t_us(when), index, self._held_bytes, self._busy_bytes))
        self._event_count += 1

    def capture_began(self, graph: object, when: float, device: str) -> None:
        self._open_captures[id(graph)] = (self._event_count, when, device)

    def capture_ended(self, graph: object, when: float) -> None:
        started = self._open_captures.pop(id(graph), None)
        if started is not None:
            start, began, device = started
            self._captures.append(Capture(start, self._event_count, self.t_us(began), self.t_us(when), device))

    def stop(self) -> None:
        """What is still alive now stays alive in the timeline."""
        self.catch_up(all_threads=True)
        self._live.clear()  # the weak references go, and with them their callbacks

    def timeline(self, end: float) -> Timeline:
        """The events so far (a copy); a capture still open (the program stopped inside one)
        ends at ``end``."""
        open_captures = [
            Capture(start, self._event_count, self.t_us(began), self.t_us(end), device)
            for start, began, device in self._open_captures.values()
        ]
        return Timeline(
            events=list(self._events), total_events=self._event_count, max_events=self.max_events,
            captures=sorted(self._captures + open_captures, key=lambda c: (c.start, c.t_start_us)),
        )
