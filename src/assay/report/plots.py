"""Draw a check's plot data as an embedded PNG (base64 data URI)."""

from __future__ import annotations

import base64
import io
import textwrap

from ..checks.base import Plot


def plot_png_data_uri(plot: Plot) -> str:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    if plot.kind == "heatmap":
        return _heatmap(plot)
    figure = Figure(figsize=(5.2, 3.2), dpi=110)
    axes = figure.add_subplot()
    if plot.kind == "bar":
        labels = [str(v) for v in plot.x]
        width = 0.8 / max(len(plot.series), 1)
        for index, (label, values) in enumerate(plot.series.items()):
            positions = [i + index * width for i in range(len(labels))]
            axes.bar(positions, [v if v is not None else 0 for v in values], width=width,
                     label=label)
        axes.set_xticks([i + width * (len(plot.series) - 1) / 2 for i in range(len(labels))])
        axes.set_xticklabels(labels, rotation=45 if len(labels) > 6 else 0, ha="right"
                             if len(labels) > 6 else "center", fontsize=8)
    else:
        for label, values in plot.series.items():
            axes.plot(plot.x, values, marker="o", label=label)
    axes.set_title(_wrapped(plot.title), fontsize=10)
    axes.set_xlabel(plot.x_label)
    axes.set_ylabel(plot.y_label)
    axes.grid(alpha=0.3)
    if len(plot.series) > 1 or plot.kind == "line":
        axes.legend(fontsize=8)
    return _encode(figure)


def _heatmap(plot: Plot) -> str:
    from matplotlib.figure import Figure

    rows = list(plot.series)
    values = [[float("nan") if v is None else v for v in plot.series[r]] for r in rows]
    figure = Figure(figsize=(5.2, 1.2 + 0.28 * len(rows)), dpi=110)
    axes = figure.add_subplot()
    image = axes.imshow(values, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0)
    axes.set_xticks(range(len(plot.x)))
    axes.set_xticklabels([str(v) for v in plot.x], fontsize=8)
    axes.set_yticks(range(len(rows)))
    axes.set_yticklabels(rows, fontsize=8)
    for i, row in enumerate(values):
        for j, value in enumerate(row):
            if value == value:  # not NaN
                axes.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6,
                          color="white" if value < 0.6 else "black")
    axes.set_title(_wrapped(plot.title), fontsize=10)
    axes.set_xlabel(plot.x_label)
    figure.colorbar(image, ax=axes, label=plot.y_label)
    return _encode(figure)


def _wrapped(title: str) -> str:
    """A title on lines short enough for the figure's width (10 pt, 5.2 inches)."""
    return textwrap.fill(title, width=60)


def _encode(figure) -> str:
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
