"""Live bytes over a profiled run, per site, as plain numbers: what the memory picture draws.

A pure function of a `Profile` that has a timeline (no torch, no matplotlib). The run is
replayed event by event: a site's allocation adds its bytes to that site's band until it is
freed; a get_empty request sets the runtime caches' bands to the bytes they held and handed
out just after it (the runtime reports them only then, so between two requests the bands
keep the last report). The top sites by their largest live bytes are named, the rest grouped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Sequence

from allocaudit.auditor.profiling.profile import ALLOC, CACHE, FREE, Profile, Site

# The runtime reports its buffers only at requests: "in use" is as the last request found it
# (a hand-out that dies later shows as in use until the next request).
CACHE_BUSY = "get_empty buffers in use (at the last request)"
CACHE_IDLE = "get_empty buffers held idle"
OTHER = "other sites"
MAX_POINTS = 2000  # points drawn; more events are sampled, keeping each stretch's highest point


@dataclass(frozen=True)
class Band:
    """One layer of the stacked picture: its label and bytes at each point."""

    label: str
    kind: str  # "site", "other", "cache busy" or "cache idle"
    values: tuple[int, ...]
    site: Optional[Site] = None  # the site a "site" band is


@dataclass(frozen=True)
class MemorySeries:
    """The numbers behind the memory picture.

    ``x[i]`` is a position in the run's event stream and every band's ``values[i]`` the bytes
    just after that event. ``bands`` stack bottom to top: the cache bands, the named sites
    (largest first), the other sites.
    """

    x: tuple[int, ...]
    t_us: tuple[int, ...]
    bands: tuple[Band, ...]
    captures: tuple[tuple[int, int], ...]  # (start, end) event positions, end exclusive
    peak_bytes: int  # the highest stack over every kept event, sampled or not
    peak_x: int
    kept_events: int
    total_events: int
    device: str
    command: tuple[str, ...]

    def totals(self) -> tuple[int, ...]:
        return tuple(sum(column) for column in zip(*(b.values for b in self.bands))) if self.bands else ()

    def band(self, label: str) -> Band:
        return next(b for b in self.bands if b.label == label)


class NoTimeline(ValueError):
    """The profile was written without a timeline (an allocaudit before lifetimes were recorded)."""


def short_path(path: str) -> str:
    """The last two parts of ``path`` (``examples/moe_layer.py``): a label, read at a glance."""
    return "/".join(path.replace(os.sep, "/").split("/")[-2:])


def site_label(site: Site) -> str:
    return f"{short_path(site.path)}:{site.line} {site.function}"


def memory_series(
    profile: Profile,
    top: int = 8,
    named: Optional[Sequence[tuple[Site, str]]] = None,
    max_points: int = MAX_POINTS,
) -> MemorySeries:
    """Replay ``profile``'s timeline into stacked bands.

    ``top``: how many sites get their own band (by their largest live bytes in the timeline).
    ``named``: instead, these sites of ``profile`` with these labels, in this order (`compare`
    names the same sites in both of its pictures). Raises `NoTimeline` without a timeline.
    """
    timeline = profile.timeline
    if timeline is None:
        raise NoTimeline("this profile has no timeline: profile the program again with this allocaudit")
    events = timeline.events
    n_sites = len(profile.sites)

    # First pass: the stack's height after each event, and each site's largest live bytes.
    live = [0] * n_sites
    peak_live = [0] * n_sites
    held = 0
    heights = []
    sites_bytes = 0
    for event in events:
        kind = event[0]
        if kind == ALLOC:
            live[event[2]] += event[3]
            sites_bytes += event[3]
            if live[event[2]] > peak_live[event[2]]:
                peak_live[event[2]] = live[event[2]]
        elif kind == FREE:
            live[event[2]] -= event[3]
            sites_bytes -= event[3]
        elif kind == CACHE:
            held = event[3]
        heights.append(sites_bytes + held)

    if named is not None:
        index = {id(s): i for i, s in enumerate(profile.sites)}
        chosen = [(index[id(site)], label) for site, label in named if id(site) in index]
    else:
        ranked = sorted((i for i in range(n_sites) if peak_live[i]), key=lambda i: (-peak_live[i], i))
        chosen = [(i, site_label(profile.sites[i])) for i in ranked[:top]]
    band_of = {i: k for k, (i, _) in enumerate(chosen)}
    others = sum(1 for i in range(n_sites) if peak_live[i] and i not in band_of)

    # Which events become points: all, or the highest of each stretch of equal length.
    if len(events) <= max_points:
        picked = list(range(len(events)))
    else:
        stride = -(-len(events) // max_points)
        picked = [
            max(range(start, min(start + stride, len(events))), key=heights.__getitem__)
            for start in range(0, len(events), stride)
        ]

    # Second pass: the bands' values at the picked events.
    live = [0] * n_sites
    held = busy = 0
    columns = {"busy": [], "idle": [], "other": [], "sites": [[] for _ in chosen]}
    other_bytes = 0
    want = iter(picked)
    next_pick = next(want, None)
    for position, event in enumerate(events):
        kind = event[0]
        if kind == ALLOC or kind == FREE:
            delta = event[3] if kind == ALLOC else -event[3]
            live[event[2]] += delta
            if event[2] not in band_of:
                other_bytes += delta
        elif kind == CACHE:
            held, busy = event[3], event[4]
        if position == next_pick:
            columns["busy"].append(busy)
            columns["idle"].append(held - busy)
            columns["other"].append(other_bytes)
            for k, (i, _) in enumerate(chosen):
                columns["sites"][k].append(live[i])
            next_pick = next(want, None)

    bands = []
    if any(columns["busy"]) or any(columns["idle"]):
        bands.append(Band(CACHE_BUSY, "cache busy", tuple(columns["busy"])))
        bands.append(Band(CACHE_IDLE, "cache idle", tuple(columns["idle"])))
    for k, (i, label) in enumerate(chosen):
        bands.append(Band(label, "site", tuple(columns["sites"][k]), profile.sites[i]))
    if others:
        bands.append(Band(OTHER, "other", tuple(columns["other"])))

    peak_x = max(range(len(heights)), key=heights.__getitem__) if heights else 0
    return MemorySeries(
        x=tuple(picked),
        t_us=tuple(events[i][1] for i in picked),
        bands=tuple(bands),
        captures=tuple((c.start, c.end) for c in timeline.captures if c.start < max(len(events), 1)),
        peak_bytes=heights[peak_x] if heights else 0,
        peak_x=peak_x,
        kept_events=len(events),
        total_events=timeline.total_events,
        device=profile.device_filter,
        command=tuple(profile.command),
    )
