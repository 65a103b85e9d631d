"""Draw a check's plot data as an embedded PNG (base64 data URI).

Figures are drawn at the size the page shows them (``WIDTH`` inches at ``DPI``, the
page never enlarges an image), so a font of ``SMALL`` points is ``SMALL * DPI / 72``
pixels on screen: 12 px for the smallest text.
"""

from __future__ import annotations

import base64
import io
import math
import textwrap
from collections.abc import Iterable

from ..results import GateResult, Plot

DPI = 110
WIDTH = 5.6  # inches: 616 px, half of a before/after page
FONT = 9  # points: axis labels and ticks
SMALL = 8  # points: legends, tick labels of many categories, numbers in heat-map cells
MIN_BIN = 10  # a point of a series with counts rests on fewer samples: drawn hollow
MARKERS_UP_TO = 15  # points per series; denser curves are drawn without markers
_PASS, _FAIL, _REFERENCE = "#1a7f37", "#cf222e", "#6e7781"


def plot_png_data_uri(plot: Plot, *, gates: Iterable[GateResult] = (),
                      limits: tuple[float, float] | None = None) -> str:
    """The plot as a PNG data URI; ``gates`` whose metric is a point of the plot
    (``plot.points``) are drawn at their thresholds; ``limits`` fixes the y range (the
    colour range of a heat map), e.g. shared by the two halves of a before/after page."""
    return _encode(plot_figure(plot, gates=gates, limits=limits))


def plot_figure(plot: Plot, *, gates: Iterable[GateResult] = (),
                limits: tuple[float, float] | None = None):
    """The matplotlib Figure of :func:`plot_png_data_uri` (not yet encoded)."""
    from matplotlib.figure import Figure

    if plot.kind == "heatmap":
        return _heatmap(plot, limits)
    counts = plot.kind == "line" and any(plot.counts.values())
    figure = Figure(figsize=(WIDTH, 4.3 if counts else 3.5), dpi=DPI, layout="constrained")
    if counts:
        axes, below = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    else:
        axes, below = figure.add_subplot(), None
    positions = _bars(axes, plot) if plot.kind == "bar" else _lines(axes, plot)
    if below is not None:
        _counts(below, plot)
    drawn = _gates(axes, plot, positions, [g for g in gates if g.metric in plot.points])
    axes.set_title(_wrapped(plot.title), fontsize=FONT + 1)
    (below or axes).set_xlabel(plot.x_label, fontsize=FONT)
    axes.set_ylabel(plot.y_label, fontsize=FONT)
    axes.tick_params(labelsize=FONT)
    axes.grid(alpha=0.3)
    if limits is not None:
        axes.set_ylim(*_padded(limits, bars=plot.kind == "bar"))
    handles, labels = axes.get_legend_handles_labels()
    if len(labels) > 1 or (labels and (plot.kind == "line" or drawn)):
        # below the axes, so that it never hides a bar or a point
        figure.legend(handles, labels, loc="outside lower center", fontsize=SMALL,
                      ncol=_columns(labels), frameon=False)
    return figure


def _columns(labels: list[str]) -> int:
    """Legend entries in one row when they fit the width (about 80 characters), else as
    many columns as the longest entry allows (at most 3)."""
    if sum(len(t) + 6 for t in labels) <= 80:
        return len(labels)
    return max(1, min(len(labels), 3, 80 // (max(len(t) for t in labels) + 6)))


def value_range(plot: Plot, gates: Iterable[GateResult] = ()) -> tuple[float, float] | None:
    """The smallest and largest finite value the plot shows (series, references, intervals
    and the thresholds of its gates), or None when it has none."""
    values: list[float | None] = [
        v for series in (*plot.series.values(), *plot.reference.values()) for v in series]
    values += [end for series in plot.intervals.values() for pair in series for end in pair]
    values += [g.threshold for g in gates if g.metric in plot.points]
    finite = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return (min(finite), max(finite)) if finite else None


def _numeric(x: list) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in x)


def _lines(axes, plot: Plot) -> dict[str, dict]:
    """Draw the series; return {series: {x value: position}} for the gate markers."""
    from matplotlib.ticker import MaxNLocator

    numeric = _numeric(plot.x)
    xs = _floats(plot.x) if numeric else [float(i) for i in range(len(plot.x))]
    marker = "o" if len(xs) <= MARKERS_UP_TO else None
    thin_drawn = False
    for label, values in plot.reference.items():
        axes.plot(xs, _floats(values), linestyle="--", color=_REFERENCE, linewidth=1.2,
                  label=label)
    for label, values in plot.series.items():
        counts = plot.counts.get(label)
        if counts:  # points, not a curve: a bin of 2 samples says little about its neighbour
            line, = axes.plot(xs, _floats(values), linestyle="none", marker="o", label=label)
            thin = [(x, v) for x, v, c in zip(xs, _floats(values), counts, strict=True)
                    if 0 < c < MIN_BIN]
            if thin:
                axes.plot(*zip(*thin, strict=True), linestyle="none", marker="o",
                          markerfacecolor="white", color=line.get_color())
                thin_drawn = True
        else:
            line, = axes.plot(xs, _floats(values), marker=marker, label=label)
        _error_bars(axes, xs, values, plot.intervals.get(label), line.get_color())
    if thin_drawn:  # a legend entry that explains the hollow points
        axes.plot([], [], linestyle="none", marker="o", markerfacecolor="white",
                  color=_REFERENCE, label=f"hollow: under {MIN_BIN} samples")
    if numeric:
        # few ticks: long labels such as 0.10025 must not run together
        axes.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=all(
            float(v).is_integer() for v in xs)))
    else:
        axes.set_xticks(xs)
        _category_labels(axes, [str(v) for v in plot.x])
    return {label: {_key(v): p for v, p in zip(plot.x, xs, strict=True)} for label in plot.series}


def _counts(axes, plot: Plot) -> None:
    """The samples behind each point, one bar per series, under the main axes."""
    xs = _floats(plot.x) if _numeric(plot.x) else [float(i) for i in range(len(plot.x))]
    step = min((b - a for a, b in zip(xs, xs[1:], strict=False) if b > a), default=1.0)
    series = [label for label in plot.series if plot.counts.get(label)]
    width = 0.8 * step / max(len(series), 1)
    for index, label in enumerate(series):
        offset = (index - (len(series) - 1) / 2) * width
        axes.bar([x + offset for x in xs], plot.counts[label], width=width,
                 color=f"C{list(plot.series).index(label)}")
    axes.set_yscale("symlog", linthresh=10)
    axes.set_ylabel("samples", fontsize=FONT)
    axes.tick_params(labelsize=SMALL)
    axes.axhline(MIN_BIN, color=_REFERENCE, linewidth=0.8, linestyle=":")
    axes.grid(alpha=0.3)


def _bars(axes, plot: Plot) -> dict[str, dict]:
    labels = [str(v) for v in plot.x]
    width = 0.8 / max(len(plot.series), 1)
    positions = {}
    for index, (label, values) in enumerate(plot.series.items()):
        xs = [i + index * width for i in range(len(labels))]
        axes.bar(xs, [v if v is not None and math.isfinite(v) else 0 for v in values],
                 width=width, label=label)
        _error_bars(axes, xs, values, plot.intervals.get(label), "#222222")
        positions[label] = {_key(v): p for v, p in zip(plot.x, xs, strict=True)}
    centres = [i + width * (len(plot.series) - 1) / 2 for i in range(len(labels))]
    for label, values in plot.reference.items():  # a level to compare every bar with
        axes.plot(centres, _floats(values), linestyle="--", color=_REFERENCE, linewidth=1.2,
                  label=label, marker="_" if len(centres) == 1 else None, markersize=40)
    axes.set_xticks(centres)
    _category_labels(axes, labels)
    return positions


def _error_bars(axes, xs: list[float], values: list, intervals: list | None,
                color: str) -> None:
    """The ``[low, high]`` interval of each value as an error bar (none where missing)."""
    if not intervals:
        return
    drawn = [(x, float(v), float(lo), float(hi))
             for x, v, (lo, hi) in zip(xs, values, intervals, strict=True)
             if None not in (v, lo, hi) and all(math.isfinite(float(t)) for t in (v, lo, hi))]
    if drawn:
        x, v, lo, hi = zip(*drawn, strict=True)
        below = [max(mid - low, 0.0) for mid, low in zip(v, lo, strict=True)]
        above = [max(high - mid, 0.0) for mid, high in zip(v, hi, strict=True)]
        axes.errorbar(x, v, yerr=[below, above], fmt="none", ecolor=color, capsize=3,
                      linewidth=1)


def _category_labels(axes, labels: list[str]) -> None:
    crowded = sum(len(label) + 2 for label in labels) > 60  # characters that fit in a row
    axes.set_xticklabels(labels, rotation=30 if crowded else 0,
                         ha="right" if crowded else "center",
                         fontsize=SMALL if crowded else FONT)


def _gates(axes, plot: Plot, positions: dict[str, dict], gates: list[GateResult]) -> bool:
    """A short bar at each gate's threshold, on the point its metric is: green when the
    gate passed, red when it failed, with the requirement written beside it."""
    drawn = False
    for gate in gates:
        series, x = plot.points[gate.metric]
        position = positions.get(series, {}).get(_key(x))
        if position is None:
            continue
        color = _PASS if gate.passed else _FAIL
        axes.plot([position], [gate.threshold], marker="_", markersize=22, markeredgewidth=3,
                  color=color, linestyle="none", label=None if drawn else "gate threshold")
        axes.annotate(f"{gate.op} {gate.threshold:g}", (position, gate.threshold),
                      xytext=(0, 5), textcoords="offset points", ha="center", va="bottom",
                      fontsize=SMALL, color=color)
        drawn = True
    return drawn


def _heatmap(plot: Plot, limits: tuple[float, float] | None):
    from matplotlib.figure import Figure

    rows = list(plot.series)
    values = [_floats(plot.series[r]) for r in rows]
    low, high = limits or value_range(plot) or (0.0, 1.0)
    if 0.0 <= low and high <= 1.0:
        low, high = 0.0, 1.0  # shares and accuracies: the full scale
    figure = Figure(figsize=(WIDTH, 1.3 + 0.3 * len(rows)), dpi=DPI, layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(values, aspect="auto", cmap="viridis", vmin=low, vmax=high)
    axes.set_xticks(range(len(plot.x)))
    axes.set_xticklabels([str(v) for v in plot.x], fontsize=FONT)
    axes.set_yticks(range(len(rows)))
    axes.set_yticklabels(rows, fontsize=FONT)
    for i, row in enumerate(values):
        for j, value in enumerate(row):
            if math.isfinite(value):
                dark = (value - low) / ((high - low) or 1.0) < 0.6  # viridis is dark below
                axes.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=SMALL,
                          color="white" if dark else "black")
    axes.set_title(_wrapped(plot.title), fontsize=FONT + 1)
    axes.set_xlabel(plot.x_label, fontsize=FONT)
    colorbar = figure.colorbar(image, ax=axes)
    colorbar.set_label(plot.y_label, fontsize=FONT)
    colorbar.ax.tick_params(labelsize=FONT)
    return figure


def _floats(values) -> list[float]:
    return [float("nan") if v is None else float(v) for v in values]


def _key(value) -> str:
    """Match x values read back from JSON (0.3 vs "0.3", 3 vs 3.0)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{float(value):g}"
    return str(value)


def _padded(limits: tuple[float, float], *, bars: bool) -> tuple[float, float]:
    low, high = limits
    if bars:
        low = min(low, 0.0)
    pad = 0.05 * ((high - low) or abs(high) or 1.0)
    return (low if bars and low == 0.0 else low - pad), high + pad


def _wrapped(title: str) -> str:
    """A title on lines short enough for the figure's width."""
    return textwrap.fill(title, width=64)


def _encode(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
