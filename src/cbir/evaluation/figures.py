"""The report's figures, drawn with matplotlib and saved as PNG.

Figures are built as `matplotlib.figure.Figure` objects and saved through the Agg canvas, never
through pyplot: no global state, no display, safe in threads and on a machine with no screen.
Each run keeps one colour in every figure (`run_colour`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

_PALETTE = (
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip
_DPI = 110


def run_colour(position: int) -> str:
    return _PALETTE[position % len(_PALETTE)]


@dataclass
class Series:
    """One run's values in a figure."""

    name: str
    colour: str
    x: Sequence[float]
    y: Sequence[float]


def precision_recall(curves: Sequence[Series], path: Path, title: str) -> Path:
    """11-point interpolated precision against recall, one line per run."""
    figure = Figure(figsize=(6.4, 4.2), dpi=_DPI, layout="constrained")
    axes = figure.add_subplot()
    for curve in curves:
        axes.plot(curve.x, curve.y, marker="o", markersize=4, color=curve.colour, label=curve.name)
    axes.set(xlabel="recall", ylabel="interpolated precision", xlim=(0, 1), ylim=(0, 1.02))
    axes.set_title(title, fontsize=11)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=9, loc="upper right")
    return _save(figure, path)


def per_class_bars(
    classes: Sequence[str], panels: Sequence[tuple[str, Sequence[Series]]], path: Path
) -> Path:
    """Horizontal bars per class, one panel per measure (its title, then one `Series` per run,
    `y` following `classes`, `x` unused), side by side on a shared class axis, one legend on
    top. Horizontal, so long class names and many classes stay readable."""
    n_runs = max((len(bars) for _, bars in panels), default=1)
    height = min(1.4 + 0.16 * len(classes) * n_runs, 40.0)
    figure = Figure(figsize=(4.0 * len(panels) + 1.2, height), dpi=_DPI, layout="constrained")
    axes_row = figure.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    width = 0.8 / n_runs
    for axes, (measure, bars) in zip(axes_row, panels, strict=True):
        for i, series in enumerate(bars):
            # Top-to-bottom in class order, runs in their given order within a group.
            positions = [
                len(classes) - 1 - c + 0.4 - width * (i + 0.5) for c in range(len(classes))
            ]
            axes.barh(positions, series.y, height=width, color=series.colour, label=series.name)
        axes.set_xlim(0, max([1e-9, *(v for s in bars for v in s.y)]) * 1.08)
        axes.set_title(measure, fontsize=10)
        axes.grid(axis="x", alpha=0.3)
    axes_row[0].set_yticks(range(len(classes)), list(reversed(classes)), fontsize=9)
    handles, labels = axes_row[0].get_legend_handles_labels()
    # The legend takes the top edge (a suptitle there would collide with it); the report's
    # heading and caption name the figure.
    figure.legend(handles, labels, loc="outside upper center", ncols=min(n_runs, 4), fontsize=9)
    figure.supxlabel("mean over each class's queries", fontsize=9)
    return _save(figure, path)


def vocabulary_sweep(sweeps: Sequence[Series], path: Path) -> Path:
    """Davies-Bouldin index against vocabulary size (log scale), the lowest marked."""
    figure = Figure(figsize=(6.4, 4.0), dpi=_DPI, layout="constrained")
    axes = figure.add_subplot()
    for sweep in sweeps:
        axes.plot(sweep.x, sweep.y, marker="o", color=sweep.colour, label=sweep.name)
        best = min(range(len(sweep.y)), key=sweep.y.__getitem__)
        axes.annotate(
            f"lowest: {sweep.x[best]:g}", (sweep.x[best], sweep.y[best]),
            textcoords="offset points", xytext=(0, 8), ha="center", fontsize=8,
            color=sweep.colour,
        )  # fmt: skip
    axes.set_xscale("log", base=2)
    sizes = sorted({size for sweep in sweeps for size in sweep.x})
    axes.set_xticks(sizes, [f"{size:g}" for size in sizes])
    axes.minorticks_off()
    axes.margins(y=0.15)  # room for the annotation above the lowest point
    axes.set(
        xlabel="vocabulary size (visual words)", ylabel="Davies-Bouldin index (lower is better)"
    )
    axes.set_title("Visual vocabulary size sweep", fontsize=11)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=9)
    return _save(figure, path)


def _save(figure: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure).print_png(str(path))
    return path
