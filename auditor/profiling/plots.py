"""The pictures: memory over a run, and a run before against after a change. PNG, via matplotlib.

matplotlib is an optional extra (``pip install 'allocaudit[plot]'``): importing this module
needs it not, `require_matplotlib` says how to get it. Everything drawn comes from the plain
numbers of `timeline.MemorySeries` and `compare.CompareChart`: this module computes nothing.
No pyplot: a `Figure` on the Agg canvas, so no global backend is chosen for the caller.
"""

from __future__ import annotations

from typing import Optional, Sequence

from allocaudit.auditor.profiling.compare import CompareChart
from allocaudit.auditor.profiling.timeline import MemorySeries

INSTALL_HINT = "pip install 'allocaudit[plot]'"
MIB = 2**20
DPI = 100

# Cache bands in slate, the ungrouped rest in grey, sites in a qualitative palette without them.
CACHE_COLORS = {"cache busy": "#3b4a5a", "cache idle": "#9aa9b8"}
OTHER_COLOR = "#d0d0d0"
SITE_COLORS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#7f3b08",
)
CAPTURE_COLOR = "#f2b134"
BEFORE_COLOR, AFTER_COLOR = "#9e9e9e", "#1f77b4"


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def require_matplotlib() -> None:
    """Raise `PlotUnavailable`, naming the extra to install, when matplotlib cannot be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotUnavailable(f"pictures need matplotlib, which is not installed here: {INSTALL_HINT}") from None


def _figure(width: float, height: float, constrained: bool = False):
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, constrained_layout=constrained)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: str) -> None:
    # No timestamp or version in the PNG: the same profile draws the same bytes.
    figure.savefig(path, format="png", dpi=DPI, metadata={"Software": None}, pil_kwargs={"optimize": True})


def site_colors(labels: Sequence[str]) -> dict[str, str]:
    """A color per site label, the same for a label wherever it is drawn."""
    return {label: SITE_COLORS[i % len(SITE_COLORS)] for i, label in enumerate(labels)}


def _color(band, colors: dict[str, str]) -> str:
    if band.kind in CACHE_COLORS:
        return CACHE_COLORS[band.kind]
    if band.kind == "other":
        return OTHER_COLOR
    return colors.get(band.label, OTHER_COLOR)


def _draw_series(ax, series: MemorySeries, colors: dict[str, str], legend: bool = True) -> None:
    """Stacked step areas, capture spans shaded, the peak marked."""
    if not series.x:
        ax.text(0.5, 0.5, "no events recorded", ha="center", va="center", transform=ax.transAxes)
    else:
        # One more x so that the last event's step has a width.
        xs = list(series.x) + [series.x[-1] + 1]
        lower = [0.0] * len(xs)
        for band in series.bands:
            values = [v / MIB for v in band.values]
            values.append(values[-1])
            upper = [a + b for a, b in zip(lower, values)]
            ax.fill_between(xs, lower, upper, step="post", color=_color(band, colors), label=band.label, linewidth=0)
            lower = upper
        for i, (start, end) in enumerate(series.captures):
            ax.axvspan(
                start - 0.5, max(end, start + 1) - 0.5, color=CAPTURE_COLOR, alpha=0.25, linewidth=0, zorder=0,
                label="CUDA graph capture" if i == 0 else None,
            )
        peak = series.peak_bytes / MIB
        ax.axhline(peak, color="black", linewidth=0.8, linestyle="--")
        ax.annotate(
            f"peak {peak:.1f} MiB", xy=(series.peak_x, peak), xytext=(4, 4), textcoords="offset points", fontsize=8,
        )
        ax.set_xlim(xs[0], xs[-1])
        ax.set_ylim(0, max(peak * 1.15, 1e-3))
    ax.set_xlabel("event (allocations, frees and get_empty requests, in order)")
    ax.set_ylabel("live MiB")
    ax.grid(axis="y", alpha=0.3)
    if legend:
        handles, labels = ax.get_legend_handles_labels()
        # Top of the stack first, as the bands are seen; the capture span last.
        order = sorted(range(len(labels)), key=lambda i: (labels[i] == "CUDA graph capture", -i))
        ax.legend([handles[i] for i in order], [labels[i] for i in order], loc="upper left",
                  bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)


def _series_caption(series: MemorySeries) -> str:
    seconds = series.t_us[-1] / 1e6 if series.t_us else 0.0
    events = f"{series.kept_events:,} events over {seconds:.2f} s"
    if series.total_events > series.kept_events:
        events = f"the first {series.kept_events:,} of {series.total_events:,} events"
    captures = f", {len(series.captures)} CUDA graph capture{'s' if len(series.captures) != 1 else ''}" if series.captures else ""
    cache = "; get_empty bands: as the runtime reported at each request" if any(b.kind in CACHE_COLORS for b in series.bands) else ""
    return f"device {series.device}; {events}{captures}{cache}"


def plot_memory(series: MemorySeries, path: str, title: Optional[str] = None) -> None:
    """Write the memory picture of one run: live MiB per site over the run's events."""
    figure = _figure(12, 5.5)
    ax = figure.add_subplot(1, 1, 1)
    colors = site_colors([b.label for b in series.bands if b.kind == "site"])
    _draw_series(ax, series, colors)
    command = " ".join(series.command) or "the recorded block"
    figure.suptitle(title or f"Live memory by allocation site: {command}", fontsize=12, x=0.01, ha="left")
    ax.set_title(_series_caption(series), fontsize=8, loc="left", color="#444444")
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    _save(figure, path)


def _paired_bars(ax, labels, before, after, xlabel: str, show_labels: bool) -> None:
    ys = range(len(labels))
    height = 0.38
    ax.barh([y - height / 2 for y in ys], before, height, color=BEFORE_COLOR, label="before")
    ax.barh([y + height / 2 for y in ys], after, height, color=AFTER_COLOR, label="after")
    ax.set_yticks(list(ys))
    ax.set_yticklabels(labels, fontsize=8)
    ax.tick_params(axis="y", labelleft=show_labels)
    ax.set_ylim(len(labels) - 0.5, -0.5)  # the largest site on top
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)


def plot_compare(
    chart: CompareChart,
    path: str,
    before: Optional[MemorySeries] = None,
    after: Optional[MemorySeries] = None,
) -> None:
    """Write the before/after picture: per site, MiB allocated and calls, paired; the totals and
    peaks; and, when both profiles have timelines, their memory over the run on one scale."""
    timelines = before is not None and after is not None
    bars_height = 1.4 + 0.3 * max(len(chart.labels), 1)
    figure = _figure(15, bars_height + (4.4 if timelines else 0) + 0.8, constrained=True)
    figure.suptitle(f"{chart.title}\n{chart.subtitle}", fontsize=10, x=0.01, ha="left", linespacing=1.6)
    if timelines:
        top, bottom = figure.subfigures(2, 1, height_ratios=(4.4, bars_height))
        ax_before, ax_after, ax_legend = top.subplots(1, 3, gridspec_kw={"width_ratios": (5, 5, 2.6)})
        ax_after.sharey(ax_before)
        labels = [b.label for s in (before, after) for b in s.bands if b.kind == "site"]
        colors = site_colors(list(dict.fromkeys(labels)))
        _draw_series(ax_before, before, colors, legend=False)
        _draw_series(ax_after, after, colors, legend=False)
        ax_before.set_title("before: live MiB over the run", fontsize=10, loc="left")
        ax_after.set_title("after: live MiB over the run", fontsize=10, loc="left")
        ax_before.set_ylim(0, max(before.peak_bytes, after.peak_bytes) / MIB * 1.15 or 1e-3)
        ax_after.set_ylabel("")
        # One legend for both, beside them: every band of either, each label once, top first.
        handles = {}
        for ax in (ax_after, ax_before):
            pairs = list(zip(*ax.get_legend_handles_labels()))
            for handle, label in pairs[::-1]:
                handles.setdefault(label, handle)
        ax_legend.axis("off")
        ax_legend.legend(list(handles.values()), list(handles), loc="upper left", fontsize=7, frameon=False)
    else:
        bottom = figure
    ax_bytes, ax_calls, ax_totals = bottom.subplots(1, 3, gridspec_kw={"width_ratios": (6, 3, 3)})
    _paired_bars(ax_bytes, chart.labels, chart.mib_before, chart.mib_after, "MiB allocated per site", True)
    _paired_bars(ax_calls, chart.labels, chart.calls_before, chart.calls_after, "allocations per site (calls)", False)
    ax_bytes.legend(loc="lower right", fontsize=8)
    totals = [("allocated", chart.total_mib)]
    if chart.peak_mib[0] is not None and chart.peak_mib[1] is not None:
        totals.append(("peak live", chart.peak_mib))
    _paired_bars(ax_totals, [name for name, _ in totals], [v[0] for _, v in totals], [v[1] for _, v in totals], "MiB, whole run", True)
    for y, (_, (b, a)) in enumerate(totals):
        ax_totals.annotate(f"{b:.1f}", (b, y - 0.19), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
        ax_totals.annotate(f"{a:.1f}", (a, y + 0.19), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
    ax_totals.set_xlim(0, max(max(v) for _, v in totals) * 1.3 or 1)
    _save(figure, path)
