"""Draw a check's plot data as an embedded PNG (base64 data URI)."""

from __future__ import annotations

import base64
import io

from ..checks.base import Plot


def plot_png_data_uri(plot: Plot) -> str:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

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
    axes.set_title(plot.title, fontsize=10)
    axes.set_xlabel(plot.x_label)
    axes.set_ylabel(plot.y_label)
    axes.grid(alpha=0.3)
    if len(plot.series) > 1 or plot.kind == "line":
        axes.legend(fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
