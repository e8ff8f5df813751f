"""Shared plotting and HTML writing for the evaluation and catalog-profile reports (one look for both).

Figures are drawn with matplotlib's Agg backend (no display needed) and saved as PNG files next to the
HTML page, which links them by relative name, so a report folder can be copied or served as it is.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: reports are written on headless workers and CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

DPI = 110
PALETTE = (
    "#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3",
    "#937860", "#DA8BC3", "#8C8C8C", "#CCB974", "#64B5CD",
    "#1B9E77", "#7570B3", "#E7298A", "#66A61E",
)
STYLE = {
    "font.size": 9,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.fontsize": 8,
    "legend.frameon": False,
}


def color(i: int) -> str:
    """The i-th colour of the shared palette (cycles)."""
    return PALETTE[i % len(PALETTE)]


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Saves ``fig`` as PNG and closes it (figures are never reused; closing keeps memory flat)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, format="png")
    plt.close(fig)
    return path


def _empty_panel(ax: Any, message: str) -> None:
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", color="#666666", transform=ax.transAxes)


def bar_chart(
    path: str | Path,
    labels: Sequence[str],
    values: Sequence[float],
    *,
    title: str,
    xlabel: str = "",
    value_format: str = "{:,.3f}",
    xlim: tuple[float, float] | None = None,
    colors: Sequence[str] | None = None,
) -> Path:
    """Horizontal bars, one per label (top to bottom in the given order), each annotated with its value."""
    height = max(2.2, 0.35 * len(labels) + 1.2)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(7.0, height))
        if not labels:
            _empty_panel(ax, "no data")
        else:
            ypos = np.arange(len(labels))
            bar_colors = list(colors) if colors else [color(0)] * len(labels)
            ax.barh(ypos, values, color=bar_colors)
            ax.set_yticks(ypos, labels=list(labels))
            ax.invert_yaxis()
            ax.grid(axis="y", visible=False)
            top = max([v for v in values if not math.isnan(v)] or [0.0])
            if xlim:
                ax.set_xlim(*xlim)
                top = xlim[1]
            else:
                ax.set_xlim(0, top * 1.15 if top > 0 else 1)
            for y, v in zip(ypos, values, strict=True):
                ax.text(v + (top or 1) * 0.01, y, value_format.format(v), va="center", fontsize=8)
            ax.set_xlabel(xlabel)
        ax.set_title(title)
        return save_figure(fig, path)


def stacked_bars(
    path: str | Path,
    categories: Sequence[str],
    series: Mapping[str, Sequence[float]],
    *,
    title: str,
    xlabel: str = "",
    normalize: bool = False,
    series_colors: Mapping[str, str] | None = None,
) -> Path:
    """Horizontal stacked bars: one bar per category, one segment per series (legend below the plot).

    With ``normalize`` each bar is scaled to shares of its own total (the raw total is written at its end).
    """
    height = max(2.4, 0.4 * len(categories) + 1.8)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(8.0, height))
        if not categories or not series:
            _empty_panel(ax, "no data")
        else:
            data = np.array([list(v) for v in series.values()], dtype=float)  # series x categories
            totals = data.sum(axis=0)
            if normalize:
                data = np.divide(data, totals, out=np.zeros_like(data), where=totals > 0)
            ypos = np.arange(len(categories))
            left = np.zeros(len(categories))
            for i, (name, row) in enumerate(zip(series, data, strict=True)):
                segment_color = (series_colors or {}).get(name, color(i))
                ax.barh(ypos, row, left=left, color=segment_color, label=name)
                left += row
            ax.set_yticks(ypos, labels=list(categories))
            ax.invert_yaxis()
            ax.grid(axis="y", visible=False)
            end = float(left.max()) if len(left) else 1.0
            ax.set_xlim(0, end * 1.18 if end > 0 else 1)
            for y, total, stop in zip(ypos, totals, left, strict=True):
                ax.text(stop + end * 0.01, y, f"{int(total):,}", va="center", fontsize=8)
            ax.set_xlabel(xlabel or ("share of rows" if normalize else "rows"))
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=min(4, len(series)))
        ax.set_title(title)
        return save_figure(fig, path)


def heatmap(
    path: str | Path,
    matrix: Sequence[Sequence[float]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    *,
    title: str,
    xlabel: str = "",
    ylabel: str = "",
) -> Path:
    """A count matrix as a heat map (log colour scale: the diagonal would hide everything else), cells annotated.

    Empty cells stay white and grid lines separate the cells.
    """
    data = np.asarray(matrix, dtype=float)
    width = max(5.0, 0.75 * len(col_labels) + 2.5)
    height = max(3.0, 0.45 * len(row_labels) + 2.0)
    with plt.rc_context({**STYLE, "axes.grid": False}):
        fig, ax = plt.subplots(figsize=(width, height))
        if data.size == 0 or data.max() <= 0:
            _empty_panel(ax, "no data")
        else:
            shown = np.where(data > 0, data, np.nan)
            # vmin below 1 so a cell of one row is still visibly coloured; cells carry their counts, no colour bar
            ax.imshow(shown, cmap="Blues", norm=LogNorm(vmin=0.5, vmax=max(data.max(), 2)), aspect="auto")
            ax.set_xticks(np.arange(len(col_labels)), labels=list(col_labels), rotation=40, ha="right")
            ax.set_yticks(np.arange(len(row_labels)), labels=list(row_labels))
            ax.set_xticks(np.arange(-0.5, len(col_labels)), minor=True)
            ax.set_yticks(np.arange(-0.5, len(row_labels)), minor=True)
            ax.grid(which="minor", color="#dddddd", linewidth=0.6)
            ax.tick_params(which="minor", length=0)
            threshold = math.sqrt(data.max())
            for (r, c), value in np.ndenumerate(data):
                if value > 0:
                    ax.text(c, r, f"{int(value):,}", ha="center", va="center", fontsize=7,
                            color="white" if value > threshold else "black")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
        ax.set_title(title)
        return save_figure(fig, path)


def column_chart(
    path: str | Path,
    labels: Sequence[str],
    counts: Sequence[float],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    log_y: bool = True,
) -> Path:
    """Vertical bars over categories (e.g. images with 1, 2, 3 rows), each annotated with its count."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * len(labels) + 2.0), 3.6))
        if not labels:
            _empty_panel(ax, "no data")
        else:
            xpos = np.arange(len(labels))
            ax.bar(xpos, counts, color=color(0), width=0.75)
            ax.set_xticks(xpos, labels=list(labels), rotation=0 if len(labels) <= 10 else 35)
            ax.grid(axis="x", visible=False)
            if log_y:
                ax.set_yscale("log")
                ax.set_ylim(0.7, max(counts) * 4)
            else:
                ax.set_ylim(0, max(counts) * 1.15)
            for x, n in zip(xpos, counts, strict=True):
                if n > 0:
                    ax.text(x, n * (1.15 if log_y else 1.01), f"{n:,.0f}", ha="center", va="bottom", fontsize=8)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
        ax.set_title(title)
        return save_figure(fig, path)


def line_chart(
    path: str | Path,
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    xlim: tuple[float, float] | None = None,
    ylim: tuple[float, float] | None = None,
    hlines: Sequence[float] = (),
    emphasis: str | None = None,
) -> Path:
    """One line per series (x, y); ``emphasis`` names a series drawn thicker and black (e.g. "all"),
    ``hlines`` are dotted reference levels (e.g. target precisions)."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(7.0, 4.4))
        drawn = [(name, xy) for name, xy in series.items() if len(xy[0])]
        if not drawn:
            _empty_panel(ax, "no data")
        else:
            for i, (name, (xs, ys)) in enumerate(drawn):
                main = name == emphasis
                ax.plot(list(xs), list(ys), marker="." if len(xs) < 200 else None, label=name,
                        color="#222222" if main else color(i), linewidth=2.2 if main else 1.2, zorder=3 if main else 2)
            for level in hlines:
                ax.axhline(level, color="#888888", linestyle=":", linewidth=1.0)
            if xlim:
                ax.set_xlim(*xlim)
            if ylim:
                ax.set_ylim(*ylim)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.legend(loc="lower left", ncol=2)
        ax.set_title(title)
        return save_figure(fig, path)


def reliability_diagram(path: str | Path, bins: Sequence[Mapping[str, float]], *, title: str) -> Path:
    """Observed accuracy per confidence bin (bars, with each bin's row count) against the diagonal a
    calibrated confidence follows; ``bins`` as :func:`imagequant.core.metrics.reliability` gives them."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(5.6, 4.4))
        filled = [b for b in bins if b["rows"]]
        if not filled:
            _empty_panel(ax, "no rows with a confidence")
        else:
            width = filled[0]["high"] - filled[0]["low"]
            centres = [(b["low"] + b["high"]) / 2 for b in filled]
            ax.bar(centres, [b["accuracy"] for b in filled], width=width * 0.9, color=color(0),
                   label="observed share right")
            ax.plot([0, 1], [0, 1], color="#888888", linestyle=":", label="calibrated")
            ax.plot(centres, [b["confidence"] for b in filled], "o", color="#222222", markersize=3,
                    label="mean confidence")
            for x, b in zip(centres, filled, strict=True):
                ax.text(x, min(b["accuracy"], 0.93) + 0.02, f"{b['rows']:,}", ha="center", va="bottom", fontsize=7)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.05)
            ax.set_xlabel("confidence")
            ax.set_ylabel("share right")
            ax.legend(loc="upper left")
        ax.set_title(title)
        return save_figure(fig, path)


def bar_grid(
    path: str | Path,
    panels: Sequence[tuple[str, Sequence[str], Sequence[float]]],
    *,
    title: str,
    columns: int = 2,
    value_format: str = "{:.0%}",
    xlabel: str = "",
) -> Path:
    """Small multiples: one horizontal bar panel per (title, labels, values), e.g. the unit shares per entity."""
    rows = max(1, math.ceil(len(panels) / columns))
    # each grid row is as tall as its longest panel needs, so bars have one height everywhere
    row_bars = [max([len(p[1]) for p in panels[r * columns:(r + 1) * columns]] or [1]) for r in range(rows)]
    heights = [0.24 * n + 1.0 for n in row_bars]
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, sum(heights) + 0.4), squeeze=False,
                                 gridspec_kw={"height_ratios": heights})
        for ax in axes.flat[len(panels):]:
            ax.axis("off")
        if not panels:
            _empty_panel(axes.flat[0], "no data")
        for i, (ax, (name, labels, values)) in enumerate(zip(axes.flat, panels, strict=False)):
            tallest = row_bars[i // columns]
            if not labels:
                _empty_panel(ax, "no data")
                ax.set_title(name, fontsize=10)
                continue
            ypos = np.arange(len(labels))
            ax.barh(ypos, values, color=[color(i) for i in range(len(labels))])
            ax.set_yticks(ypos, labels=list(labels))
            ax.set_ylim(tallest - 0.5, -0.5)  # same bar height in every panel, first label on top
            ax.grid(axis="y", visible=False)
            top = max(values) if len(values) else 1.0
            ax.set_xlim(0, top * 1.25 if top > 0 else 1)
            for y, v in zip(ypos, values, strict=True):
                ax.text(v + top * 0.01, y, value_format.format(v), va="center", fontsize=7.5)
            ax.set_title(name, fontsize=10)
            ax.set_xlabel(xlabel)
        fig.suptitle(title, fontsize=12, fontweight="bold")
        return save_figure(fig, path)


@dataclass
class HistogramPanel:
    """One panel of log-scale histograms: per series (e.g. a unit), counts over log10 bins of the value."""

    title: str
    # name -> (left bin edges in log10 of the value, counts); every bin has width ``bin_width`` decades
    series: dict[str, tuple[list[float], list[int]]] = field(default_factory=dict)
    bin_width: float = 0.25


def log_histogram_grid(
    path: str | Path, panels: Sequence[HistogramPanel], *, title: str, columns: int = 2, max_series: int = 6
) -> Path:
    """Step histograms with a log10 value axis, one panel per entity; the ``max_series`` largest series each."""
    rows = max(1, math.ceil(len(panels) / columns))
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 2.9 * rows), squeeze=False)
        for ax in axes.flat[len(panels):]:
            ax.axis("off")
        if not panels:
            _empty_panel(axes.flat[0], "no values")
        for ax, panel in zip(axes.flat, panels, strict=False):
            ranked = sorted(panel.series.items(), key=lambda kv: -sum(kv[1][1]))[:max_series]
            if not ranked:
                _empty_panel(ax, "no plain labels")
            for i, (name, (edges, counts)) in enumerate(ranked):
                lefts = np.power(10.0, np.asarray(edges, dtype=float))
                rights = np.power(10.0, np.asarray(edges, dtype=float) + panel.bin_width)
                # A step outline per series: overlapping filled bars would hide the smaller units.
                xs = np.ravel(np.column_stack([lefts, rights]))
                ys = np.repeat(np.asarray(counts, dtype=float), 2)
                ax.plot(xs, ys, color=color(i), label=f"{name} ({sum(counts):,})", linewidth=1.3)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(panel.title, fontsize=10)
            ax.set_xlabel("value (log scale)")
            ax.set_ylabel("labels")
            if ranked:
                ax.legend(loc="upper right")
        fig.suptitle(title, fontsize=12, fontweight="bold")
        return save_figure(fig, path)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:,.4f}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return html.escape("" if value is None else str(value))


CSS = """
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { font-size: 1.25em; margin-top: 1.8em;
     border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
.sub { color: #666; margin-top: 0; } .note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 0.5em 0.8em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f5f8; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; } figcaption { color: #555; font-size: 0.85em; } img.plot { max-width: 100%; }
.cards { display: flex; flex-wrap: wrap; gap: 1em; } .card { border: 1px solid #ddd; border-radius: 6px;
        padding: 0.6em; width: 330px; font-size: 0.82em; } .card img { max-width: 100%; max-height: 260px; }
.card pre { white-space: pre-wrap; max-height: 9em; overflow: auto; background: #f7f7f7; padding: 0.3em; }
.kind { font-weight: bold; color: #C44E52; }
"""


class HtmlReport:
    """A one-page HTML report built from headings, paragraphs, tables and PNG figures, in call order."""

    def __init__(self, title: str, subtitle: str = "") -> None:
        self.title = title
        self.parts: list[str] = [f"<h1>{html.escape(title)}</h1>"]
        if subtitle:
            self.parts.append(f'<p class="sub">{html.escape(subtitle)}</p>')

    def heading(self, text: str) -> None:
        self.parts.append(f"<h2>{html.escape(text)}</h2>")

    def paragraph(self, text: str) -> None:
        self.parts.append(f"<p>{html.escape(text)}</p>")

    def note(self, text: str) -> None:
        """A highlighted remark (what the report could not show, and why)."""
        self.parts.append(f'<p class="note">{html.escape(text)}</p>')

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
        body = []
        for row in rows:
            cells = "".join(
                f'<td class="num">{_cell(v)}</td>' if isinstance(v, (int, float)) and not isinstance(v, bool)
                else f"<td>{_cell(v)}</td>"
                for v in row
            )
            body.append(f"<tr>{cells}</tr>")
        self.parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")

    def key_values(self, items: Mapping[str, Any]) -> None:
        self.table(["", "value"], [[k, v] for k, v in items.items()])

    def figure(self, png: str | Path, caption: str = "", relative_to: str | Path | None = None) -> None:
        """Embeds a PNG by its path relative to the report folder (``relative_to``), else by its file name."""
        png = Path(png)
        src = png.relative_to(relative_to).as_posix() if relative_to else png.name
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self.parts.append(
            f'<figure><img class="plot" src="{html.escape(src)}" alt="{html.escape(caption or png.stem)}">{cap}</figure>'
        )

    def raw(self, fragment: str) -> None:
        """Adds an HTML fragment the caller has escaped itself (e.g. cards of worst errors)."""
        self.parts.append(fragment)

    def html(self) -> str:
        return (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(self.title)}</title><style>{CSS}</style></head><body>\n"
            + "\n".join(self.parts)
            + "\n</body></html>\n"
        )

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.html(), encoding="utf-8")
        return path


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return None if math.isnan(float(value)) else float(value)
    if isinstance(value, (Path, set)):
        return str(value) if isinstance(value, Path) else sorted(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_json(path: str | Path, data: Any) -> Path:
    """Writes ``data`` as indented JSON (numpy scalars converted; NaN as null, infinities as strings)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_nan_to_none(data), indent=2, sort_keys=False, default=_json_default, allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def _nan_to_none(data: Any) -> Any:
    """NaN -> null; infinities -> "inf"/"-inf" (JSON has no such numbers; the model's files do the same)."""
    if isinstance(data, float) and math.isnan(data):
        return None
    if isinstance(data, float) and math.isinf(data):
        return "inf" if data > 0 else "-inf"
    if isinstance(data, Mapping):
        return {str(k): _nan_to_none(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_nan_to_none(v) for v in data]
    return data
