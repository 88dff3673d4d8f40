"""Observer hooks: let a profiler see every `get_empty` request without the runtime importing it."""

from __future__ import annotations

from typing import Callable, NamedTuple, Tuple

import torch

__all__ = ["CacheEvent", "add_observer", "remove_observer"]


class CacheEvent(NamedTuple):
    """One `get_empty` request as an observer sees it.

    ``kind`` is ``"hit"`` (served from the slot's buffer), ``"miss"`` (the slot had no buffer and
    allocated one), ``"growth"`` (the slot's buffer was too small and was replaced by a larger one)
    or ``"fallback"`` (a plain allocation, outside the cache: budget exceeded or cache frozen).
    ``nbytes`` is the size of the request in bytes.
    """

    cache: str
    name: str
    device: torch.device
    kind: str
    nbytes: int


# A tuple, replaced as a whole: the hit path reads it without a lock, and an empty tuple is the
# single falsy check that makes observation free when nobody observes.
observers: Tuple[Callable[[CacheEvent], None], ...] = ()


def add_observer(fn: Callable[[CacheEvent], None]) -> None:
    """Call ``fn(event)`` after every `get_empty` request, of every cache, in the requesting thread.

    ``fn`` runs outside the cache's lock, so it may itself call `get_empty`. Exceptions it raises
    propagate to the caller of `get_empty`. Adding the same function twice has no effect.
    """
    global observers
    if fn not in observers:
        observers = observers + (fn,)


def remove_observer(fn: Callable[[CacheEvent], None]) -> None:
    """Stop calling ``fn``; a function that was not added is ignored."""
    global observers
    observers = tuple(f for f in observers if f != fn)


def notify(event: CacheEvent) -> None:
    for fn in observers:
        fn(event)
