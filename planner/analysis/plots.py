"""Figures for the notebooks and the book: one style, one palette, one place figures are saved.

Notebooks stay thin by calling these helpers; every helper takes tidy frames (the results CSVs or
``planner.analysis.stats.describe`` output) and returns the matplotlib ``Figure`` so a notebook both shows it
and saves it under ``results/<preset>/figures/``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from planner.metrics import metric as _metric
from planner.plan import registry
from planner.paths import results_dir

# Methods are drawn in the registry's order, colour and marker wherever they appear (one place:
# planner.plan.registry); names the registry does not know follow, sorted, in the generic palette.
METHOD_ORDER = tuple(registry.METHODS)
# Colours and markers of numbered series (runtimes, ablation variants, ...); notebooks use series_style.
PALETTE: tuple[tuple[float, float, float], ...] = tuple(plt.get_cmap("tab10").colors)
MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


def apply_style() -> None:
    """Paper-like defaults: small serif-free fonts, light grid, tight layout, readable at column width."""
    plt.rcParams.update({
        "figure.dpi": 110, "savefig.dpi": 150, "savefig.bbox": "tight", "figure.figsize": (6.4, 3.6),
        "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False,
        "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
        "legend.frameon": False, "figure.constrained_layout.use": True,
    })


def figures_dir(preset: str) -> Path:
    """``results/<preset>/figures/``, created on demand."""
    path = results_dir(preset) / "figures"
    path.mkdir(parents=True, exist_ok=True)
    return path


def figure_path(name: str, preset: str) -> Path:
    """``results/<preset>/figures/<name>.png``; ``name`` must be a bare file stem."""
    if not name or "/" in name or name.endswith(".png"):
        raise ValueError(f"figure name must be a bare file stem, got {name!r}")
    return figures_dir(preset) / f"{name}.png"


# presets whose grids are one-valued by design (the quick smoke run: one load, one cascade threshold), so
# their figures may have single-valued axes; every other check applies to them as to the book's figures
SMOKE_PRESETS = frozenset({"quick"})


class FigureProblemError(ValueError):
    """A figure a reader could not read (see :func:`figure_problems`); it is not saved."""


def save(fig: Figure, name: str, preset: str) -> None:
    """Save ``fig`` as :func:`figure_path` once :func:`figure_problems` finds nothing wrong with it, so
    every figure the book shows has passed the figure check (a problem stops the notebook, naming it;
    a :data:`SMOKE_PRESETS` figure may have a single-valued axis).
    Crowded x tick labels are first turned until they fit (:func:`fit_xtick_labels`). Returns None so
    a notebook cell ending in it shows only the figure."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:  # the figure's final layout can crowd category labels that fitted when drawn
        if _labels_overlap(ax.get_xticklabels(), renderer):
            fit_xtick_labels(ax)
    problems = figure_problems(fig, single_valued=preset not in SMOKE_PRESETS)
    if problems:
        raise FigureProblemError(f"figure {name!r}: " + "; ".join(problems))
    fig.savefig(figure_path(name, preset))


def method_order(methods: Iterable[str]) -> list[str]:
    """Registered methods in registry order, then any others sorted, so legends are stable."""
    return registry.order(methods)


def method_style(method: str, methods: Sequence[str] = ()) -> dict:
    """Colour and marker of ``method``: the registry's own, the same in every figure; an unregistered
    name gets a palette entry by its position among the unregistered ones in ``methods``."""
    if method in registry.METHODS:
        entry = registry.METHODS[method]
        return {"color": entry.color, "marker": entry.marker}
    others = [m for m in method_order(methods) if m not in registry.METHODS]
    i = others.index(method) if method in others else len(others)
    return series_style(i + 7)


def method_label(method: str) -> str:
    """The registry's display label of ``method`` (the name itself when unregistered)."""
    return registry.METHODS[method].label if method in registry.METHODS else method


def series_style(i: int) -> dict:
    """Colour and marker of the ``i``-th series of a figure (cycling), for series that are not methods."""
    if i < 0:
        raise ValueError(f"series_style: series index must be non-negative, got {i!r}")
    return {"color": PALETTE[i % len(PALETTE)], "marker": MARKERS[i % len(MARKERS)]}


def metric_label(name: str) -> str:
    """Axis label from the metric registry, with its unit."""
    try:
        m = _metric(name)
    except KeyError:
        return name.replace("_", " ")
    return f"{m.label} ({m.unit})" if m.unit else m.label


def _require(frame: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {missing}; have {list(frame.columns)}")


def metric_vs_x(summary: pd.DataFrame, metric: str, x: str = "deadline_ms", ax=None, logx: bool = True,
                hue: str = "method", title: str | None = None):
    """Mean and CI band of ``metric`` against ``x`` per ``hue`` (tidy ``stats.describe`` output)."""
    _require(summary, [x, hue, "metric", "mean", "ci_low", "ci_high"], "metric_vs_x")
    data = summary[summary["metric"] == metric]
    if data.empty:
        raise ValueError(f"metric_vs_x: no rows for metric {metric!r}")
    if ax is None:
        _, ax = plt.subplots()
    methods = data[hue].unique()
    for method in method_order(methods):
        part = data[data[hue] == method].sort_values(x)
        style = method_style(method, methods)
        ax.plot(part[x], part["mean"], label=method, color=style["color"], marker=style["marker"], ms=3.5, lw=1.2)
        ax.fill_between(part[x], part["ci_low"], part["ci_high"], color=style["color"], alpha=0.15, lw=0)
    if logx:
        ax.set_xscale("log")
        ticks = np.sort(data[x].unique())
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks], minor=False)
        ax.set_xticks([], minor=True)
    ax.set_xlabel(metric_label(x) if x != "deadline_ms" else "Deadline (ms)")
    ax.set_ylabel(metric_label(metric))
    if title:
        ax.set_title(title)
    return ax


def metric_grid(summary: pd.DataFrame, metrics: Sequence[str], facet: str, x: str = "deadline_ms",
                logx: bool = True, hue: str = "method") -> Figure:
    """One column per facet value (e.g. task), one row per metric, shared legend below."""
    _require(summary, [facet], "metric_grid")
    facets = list(dict.fromkeys(summary[facet]))
    fig, axes = plt.subplots(len(metrics), len(facets), figsize=(4.6 * len(facets), 3.0 * len(metrics) + 0.5),
                             squeeze=False)
    for c, value in enumerate(facets):
        for r, name in enumerate(metrics):
            metric_vs_x(summary[summary[facet] == value], name, x=x, ax=axes[r, c], logx=logx, hue=hue,
                        title=f"{value}: {metric_label(name)}")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 7))
    return fig


RUNTIME_ORDER = ("torch", "torch_compile", "onnxruntime", "onnxruntime_trt")
PRECISION_ORDER = ("fp32", "bf16", "fp16", "int8")


def _in_known_order(values: Iterable[str], known: Sequence[str]) -> list[str]:
    """``values`` in the order of ``known``, unknown ones after it, sorted."""
    values = set(values)
    return [v for v in known if v in values] + sorted(values - set(known))


def _known_index(value: str, known: Sequence[str], present: Sequence[str]) -> int:
    """A style index that depends on the value only (its place in ``known``), not on which others are present."""
    if value in known:
        return list(known).index(value)
    return len(known) + [v for v in present if v not in known].index(value)


def pareto_scatter(profiles: pd.DataFrame, front_ids: Iterable[str] = (), ax=None,
                   latency: str = "lat_p95_ms", title: str | None = None):
    """Every configuration in (latency, accuracy), coloured by runtime, shaped by precision; front as steps."""
    _require(profiles, ["config_id", latency, "accuracy", "runtime", "precision"], "pareto_scatter")
    data = profiles[profiles["accuracy"].notna()]
    if ax is None:
        _, ax = plt.subplots()
    # colour by runtime, marker by precision, from fixed orders: the same pair looks the same in every panel
    runtimes = _in_known_order(data["runtime"].unique(), RUNTIME_ORDER)
    precisions = _in_known_order(data["precision"].unique(), PRECISION_ORDER)
    for runtime in runtimes:
        for precision in precisions:
            part = data[(data["runtime"] == runtime) & (data["precision"] == precision)]
            if not part.empty:
                ax.scatter(part[latency], part["accuracy"], s=14,
                           color=series_style(_known_index(runtime, RUNTIME_ORDER, runtimes))["color"],
                           marker=series_style(_known_index(precision, PRECISION_ORDER, precisions))["marker"],
                           alpha=0.75, label=f"{runtime}/{precision}")
    front = data[data["config_id"].isin(set(front_ids))].sort_values(latency)
    if not front.empty:
        ax.step(front[latency], front["accuracy"], where="post", color="black", lw=1.0, label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel(metric_label(latency))
    ax.set_ylabel("Accuracy")
    if title:
        ax.set_title(title)
    ax.legend(ncol=2)
    return ax


def latency_ecdf(samples: pd.DataFrame, config_ids: Sequence[str], ax=None, title: str | None = None):
    """Empirical CDF of the per-call latency samples of a few configurations (shows tails and bimodality)."""
    _require(samples, ["config_id", "latency_ms"], "latency_ecdf")
    if ax is None:
        _, ax = plt.subplots()
    for i, cid in enumerate(config_ids):
        values = np.sort(samples.loc[samples["config_id"] == cid, "latency_ms"].to_numpy())
        if values.size == 0:
            raise ValueError(f"latency_ecdf: no samples for {cid!r}")
        ax.step(values, np.arange(1, values.size + 1) / values.size, where="post", color=series_style(i)["color"],
                label=cid, lw=1.1)
    ax.axhline(0.95, color="grey", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("Latency per call (ms)")
    ax.set_ylabel("Fraction of calls")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=7)
    return ax


def grouped_bars(frame: pd.DataFrame, x: str, y: str, hue: str, ax=None, err: tuple[str, str] | None = None,
                 title: str | None = None, ylabel: str | None = None, log: bool = False, legend: bool = True,
                 hue_order: Sequence[str] | None = None):
    """Bars of ``y`` per ``x`` category, one bar per ``hue`` value; optional (low, high) error columns."""
    _require(frame, [x, y, hue, *(err or ())], "grouped_bars")
    if ax is None:
        _, ax = plt.subplots()
    xs = list(dict.fromkeys(frame[x]))
    if hue_order is not None:
        hues = list(hue_order)
    else:
        hues = method_order(frame[hue]) if hue == "method" else list(dict.fromkeys(frame[hue]))
    width = 0.8 / max(len(hues), 1)
    for k, value in enumerate(hues):
        part = frame[frame[hue] == value].set_index(x).reindex(xs)
        pos = np.arange(len(xs)) + (k - (len(hues) - 1) / 2) * width
        yerr = None
        if err is not None:
            yerr = np.vstack([part[y] - part[err[0]], part[err[1]] - part[y]])
        color = method_style(value, hues)["color"] if hue == "method" else series_style(k)["color"]
        ax.bar(pos, part[y], width=width, label=str(value), color=color, yerr=yerr, capsize=2,
               error_kw={"lw": 0.8})
    ax.set_xticks(np.arange(len(xs)), [str(v) for v in xs])
    ax.set_ylabel(ylabel or metric_label(y))
    if log:
        ax.set_yscale("log")
        # plain numbers ("40", not "4×10¹") on the major and the labelled minor ticks of a short log axis
        ax.yaxis.set_major_formatter(mticker.LogFormatter())
        ax.yaxis.set_minor_formatter(mticker.LogFormatter(minor_thresholds=(1, 0.4)))
    if title:
        ax.set_title(title)
    if legend:
        ax.legend(ncol=min(len(hues), 3), fontsize=7)
    fit_xtick_labels(ax)
    return ax


def cell_heatmap(frame: pd.DataFrame, value: str, row: str, col: str, ax=None, fmt: str = "{:+.3f}",
                 cmap: str = "RdBu", center: float | None = 0.0, title: str | None = None):
    """One value per (row, col) cell as an annotated heatmap (rows and columns in first-seen order);
    with ``center`` the colour scale is symmetric around it, so sign reads as colour."""
    _require(frame, [value, row, col], "cell_heatmap")
    grid = frame.pivot_table(index=row, columns=col, values=value, sort=False)
    if ax is None:
        _, ax = plt.subplots()
    data = grid.to_numpy(dtype=float)
    finite = data[np.isfinite(data)]
    if center is not None and finite.size:
        span = float(np.max(np.abs(finite - center))) or 1.0
        vmin, vmax = center - span, center + span
    else:
        vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    image = ax.imshow(data, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.grid(False)
    for (i, j), v in np.ndenumerate(data):
        if np.isfinite(v):
            r, g, b, _ = image.cmap(image.norm(v))
            dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5  # white text on dark cells
            ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=6.5, color="white" if dark else "black")
    ax.set_xticks(range(grid.shape[1]), [f"{c:g}" if isinstance(c, float) else str(c) for c in grid.columns])
    ax.set_yticks(range(grid.shape[0]), [str(r) for r in grid.index])
    ax.set_xlabel(col)
    if title:
        ax.set_title(title)
    return image


def shared_legend(fig: Figure, ax, ncol: int = 4) -> None:
    """One legend for a multi-panel figure, below the panels, from the handles of ``ax``."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(ncol, max(len(labels), 1)))


def identity_scatter(frame: pd.DataFrame, x: str, y: str, ax=None, label: str | None = None,
                     band: float | None = None, relative: bool = False, title: str | None = None):
    """``y`` against ``x`` with the identity line and an optional tolerance band (absolute or relative)."""
    _require(frame, [x, y], "identity_scatter")
    if ax is None:
        _, ax = plt.subplots()
    ax.scatter(frame[x], frame[y], s=18, color=PALETTE[0], label=label)
    lo = float(np.nanmin(frame[[x, y]].to_numpy()))
    hi = float(np.nanmax(frame[[x, y]].to_numpy()))
    grid = np.linspace(lo, hi, 50)
    ax.plot(grid, grid, color="black", lw=0.8, label="y = x")
    if band is not None:
        low, high = (grid * (1 - band), grid * (1 + band)) if relative else (grid - band, grid + band)
        ax.fill_between(grid, low, high, color="grey", alpha=0.2, lw=0, label="tolerance")
    ax.set_xlabel(x.replace("_", " "))
    ax.set_ylabel(y.replace("_", " "))
    if title:
        ax.set_title(title)
    ax.legend()
    return ax


# Stages of the pipeline and the artefacts that connect them, drawn by workflow_diagram.
WORKFLOW_STAGES: tuple[tuple[str, str], ...] = (
    ("data", "SST-2, CIFAR-10\nchecksummed"),
    ("models", "train, ONNX export,\nprecision variants"),
    ("profile", "latency samples,\nper-example accuracy"),
    ("plan", "planner +\nbaselines"),
    ("simulate", "traces, DES,\nlive replay"),
    ("analyze", "Pareto, stats,\ntheory"),
    ("notebooks", "papermill,\nfigures, tables"),
    ("book", "Jupyter Book\n(this report)"),
)
WORKFLOW_ARTEFACTS: tuple[str, ...] = (
    "data/*.npz, *.tsv", "checkpoints, .onnx", "profiles.csv,\n*.parquet", "Decision",
    "eval/*.csv", "tidy tables", "*.ipynb, *.png",
)


def workflow_diagram() -> Figure:
    """The one-way data flow of the project, drawn from :data:`WORKFLOW_STAGES` (no hand-drawn image)."""
    n = len(WORKFLOW_STAGES)
    fig, ax = plt.subplots(figsize=(10, 2.6))
    ax.set_xlim(0, n)
    ax.set_ylim(0, 1)
    ax.axis("off")
    width, height, y0 = 0.78, 0.46, 0.38
    for i, (name, detail) in enumerate(WORKFLOW_STAGES):
        x0 = i + (1 - width) / 2
        ax.add_patch(FancyBboxPatch((x0, y0), width, height, boxstyle="round,pad=0.02,rounding_size=0.06",
                                    facecolor=series_style(i)["color"], alpha=0.18,
                                    edgecolor=series_style(i)["color"], lw=1.2))
        ax.text(i + 0.5, y0 + height * 0.72, name, ha="center", va="center", fontsize=9, fontweight="bold")
        ax.text(i + 0.5, y0 + height * 0.32, detail, ha="center", va="center", fontsize=6.5)
        if i < n - 1:
            ax.add_patch(FancyArrowPatch((x0 + width + 0.01, y0 + height / 2),
                                         (i + 1 + (1 - width) / 2 - 0.01, y0 + height / 2),
                                         arrowstyle="-|>", mutation_scale=10, color="black", lw=0.9))
            ax.text(i + 1, y0 - 0.14, WORKFLOW_ARTEFACTS[i], ha="center", va="top", fontsize=6, color="dimgray")
    ax.set_title("Workflow: each stage reads only the artefacts of the stages before it", fontsize=9)
    return fig


apply_style()


def attainment_over_time(timeline: pd.DataFrame, fault_s: tuple[float, float] | None = None, ax=None,
                         title: str | None = None, window_s: float | None = None):
    """Rolling deadline attainment per method against trace time (``method, t_s, hit_rate``, e.g.
    :func:`planner.evaluation.live_fault.attainment_timeline`), with the fault window shaded."""
    _require(timeline, ["method", "t_s", "hit_rate"], "attainment_over_time")
    if ax is None:
        _, ax = plt.subplots()
    if fault_s is not None and all(np.isfinite(fault_s)):
        ax.axvspan(*fault_s, color="0.5", alpha=0.2, lw=0, label="CPU hog (one core)")
    methods = timeline["method"].unique()
    for method in method_order(methods):
        part = timeline[timeline["method"] == method].sort_values("t_s")
        ax.plot(part["t_s"], part["hit_rate"], color=method_style(method, methods)["color"], lw=1.2,
                label=method_label(method))
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("Trace time (s)")
    ax.set_ylabel("Deadline attainment" + (f" (last {window_s:g} s)" if window_s else ""))
    if title:
        ax.set_title(title)
    return ax


# ---------------------------------------------------------------- figures of the paper review
# Kept in one block: the roofline, a log-scale identity plot, distinguishable numbered curves, method
# fronts with the proposed method on top, and an accuracy axis that does not exaggerate small gaps.

LINESTYLES: tuple[str, ...] = ("-", "--", "-.", ":")


def line_style(i: int) -> dict:
    """Colour, marker and line style of the ``i``-th curve, so curves differ even in greyscale."""
    return {**series_style(i), "linestyle": LINESTYLES[i % len(LINESTYLES)]}


def roofline(points: pd.DataFrame, peaks: dict[str, float], ax=None, title: str | None = None):
    """Log-log roofline: achieved GFLOP/s against arithmetic intensity (FLOPs per byte), one colour per
    precision shared by its points and its measured compute ceiling (a horizontal line), one marker
    per runtime. ``points`` needs ``arithmetic_intensity``, ``achieved_gflops``, ``precision``, ``runtime``."""
    _require(points, ["arithmetic_intensity", "achieved_gflops", "precision", "runtime"], "roofline")
    data = points.dropna(subset=["arithmetic_intensity", "achieved_gflops"])
    if data.empty:
        raise ValueError("roofline: no point has both an arithmetic intensity and an achieved rate")
    if ax is None:
        _, ax = plt.subplots()
    precisions = sorted(set(data["precision"]) | set(peaks))
    runtimes = sorted(data["runtime"].unique())
    colour = {p: series_style(i)["color"] for i, p in enumerate(precisions)}
    for j, runtime in enumerate(runtimes):
        for p in precisions:
            part = data[(data["runtime"] == runtime) & (data["precision"] == p)]
            if not part.empty:
                ax.scatter(part["arithmetic_intensity"], part["achieved_gflops"], s=18, color=colour[p],
                           marker=series_style(j)["marker"], alpha=0.8, label=f"{runtime}/{p}", zorder=3)
    lo, hi = data["arithmetic_intensity"].min() / 2, data["arithmetic_intensity"].max() * 2
    for p, peak in sorted(peaks.items(), key=lambda kv: -kv[1]):
        gflops = peak / 1e9
        ax.hlines(gflops, lo, hi, color=colour[p], lw=1.2, ls="--", zorder=2)
        ax.text(hi, gflops, f" {p} peak {gflops:.0f}", color=colour[p], fontsize=7, va="center", ha="left")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_xlabel("Arithmetic intensity (FLOPs per byte moved, estimated)")
    ax.set_ylabel("Achieved GFLOP/s")
    if title:
        ax.set_title(title)
    ax.legend(ncol=2, fontsize=7, loc="lower right")
    return ax


def identity_scatter_log(frame: pd.DataFrame, x: str, y: str, band: float, ax=None, label: str | None = None,
                         annotate: str | None = None, title: str | None = None):
    """``y`` against ``x`` on log-log axes with the identity and a relative tolerance band, so one
    large point does not squash the rest; the point farthest from the identity is labelled by
    ``annotate`` (a column) with its values."""
    _require(frame, [x, y, *([annotate] if annotate else [])], "identity_scatter_log")
    data = frame[(frame[x] > 0) & (frame[y] > 0)]
    if data.empty:
        raise ValueError(f"identity_scatter_log: no positive ({x}, {y}) pairs to draw on log axes")
    if ax is None:
        _, ax = plt.subplots()
    ax.scatter(data[x], data[y], s=18, color=PALETTE[0], label=label, zorder=3)
    lo = float(data[[x, y]].min().min()) / 1.5
    hi = float(data[[x, y]].max().max()) * 1.5
    grid = np.geomspace(lo, hi, 50)
    ax.plot(grid, grid, color="black", lw=0.8, label="y = x")
    ax.fill_between(grid, grid * (1 - band), grid * (1 + band), color="grey", alpha=0.2, lw=0, label="tolerance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    if annotate:
        far = (np.log(data[y]) - np.log(data[x])).abs().idxmax()
        row = data.loc[far]
        ax.annotate(f"{row[annotate]}\n{row[x]:.0f} vs {row[y]:.0f}", (row[x], row[y]), xytext=(8, -4),
                    textcoords="offset points", fontsize=6.5, va="top")
    ax.set_xlabel(x.replace("_", " "))
    ax.set_ylabel(y.replace("_", " "))
    if title:
        ax.set_title(title)
    ax.legend(fontsize=7)
    return ax


def method_fronts(points: pd.DataFrame, ax=None, latency: str = "lat_p95_ms", accuracy: str = "effective_accuracy",
                  fronts: dict[str, pd.DataFrame] | None = None, title: str | None = None):
    """Each method's points and Pareto front (steps) in its registry style; the proposed method is
    drawn last, on top, with a thicker line and larger marker, so no baseline hides it. ``fronts``
    maps a method to its front (``planner.analysis.pareto.pareto_front``); without it the points
    are joined in latency order."""
    _require(points, ["method", latency, accuracy], "method_fronts")
    if ax is None:
        _, ax = plt.subplots()
    methods = list(points["method"].unique())
    proposed = [m for m in methods if m in registry.METHODS and registry.METHODS[m].role == "proposed"]
    order = [m for m in method_order(methods) if m not in proposed] + proposed
    for k, method in enumerate(order):
        pts = points[points["method"] == method]
        front = (fronts or {}).get(method, pts.sort_values(latency))
        style = method_style(method, methods)
        top = method in proposed
        z = 10 + k + (100 if top else 0)
        ax.scatter(pts[latency], pts[accuracy], s=26 if top else 10, color=style["color"], marker=style["marker"],
                   alpha=0.9 if top else 0.45, zorder=z, edgecolors="black" if top else "none", linewidths=0.5)
        ax.step(front[latency], front[accuracy], where="post", color=style["color"], lw=2.2 if top else 1.0,
                zorder=z, label=method_label(method))
    if title:
        ax.set_title(title)
    return ax


def honest_accuracy_axis(ax, values: Iterable[float], step: float = 0.1, annotate: bool = True) -> tuple[float, float]:
    """Set a y range from a round value below ``values`` to one above (multiples of ``step``), so a
    gap of a few points is drawn at its size, and note the actual spread in points. Returns the limits."""
    vals = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    if vals.size == 0:
        raise ValueError("honest_accuracy_axis: no finite values")
    if step <= 0:
        raise ValueError(f"honest_accuracy_axis: step must be positive, got {step!r}")
    low = np.floor(vals.min() / step - 1e-9) * step
    high = min(np.ceil(vals.max() / step + 1e-9) * step, 1.0 if vals.max() <= 1.0 else np.inf)
    if high <= low:
        high = low + step
    ax.set_ylim(low, high)
    if annotate:
        ax.annotate(f"range {vals.min():.3f}–{vals.max():.3f} ({100 * (vals.max() - vals.min()):.1f} points)",
                    xy=(0.02, 0.03), xycoords="axes fraction", fontsize=7, color="dimgray")
    return float(low), float(high)


def _labels_overlap(labels, renderer) -> bool:
    boxes = [t.get_window_extent(renderer) for t in labels if t.get_visible() and t.get_text()]
    return any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def fit_xtick_labels(ax, rotations: Sequence[int] = (0, 30, 45, 90)) -> None:
    """Turn the x tick labels by the first angle of ``rotations`` at which none overlaps another (the
    last one if none works): long category names stay level when they fit, and never collide."""
    fig = ax.figure
    for rotation in rotations:
        for label in ax.get_xticklabels():
            label.set_rotation(rotation)
            label.set_ha("center" if rotation in (0, 90) else "right")
            label.set_rotation_mode("anchor" if rotation not in (0, 90) else "default")
        fig.canvas.draw()
        if not _labels_overlap(ax.get_xticklabels(), fig.canvas.get_renderer()):
            return


def figure_problems(fig: Figure, single_valued: bool = True) -> list[str]:
    """What a reader could not read off ``fig``: an axis whose data take a single value (unless
    ``single_valued`` is False), several labelled series without a legend (on the axes or the figure),
    or tick labels that overlap."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None] + list(fig.legends)
    legend_texts = {t.get_text() for leg in legends for t in leg.get_texts()}
    problems = []
    for n, ax in enumerate(fig.axes):
        name = ax.get_title() or f"axes {n}"
        xs, ys = [], []
        for line in ax.get_lines():
            if not line.get_label().startswith("_"):
                xs.extend(np.asarray(line.get_xdata(), dtype=float))
                ys.extend(np.asarray(line.get_ydata(), dtype=float))
        for coll in ax.collections:
            offsets = np.asarray(coll.get_offsets(), dtype=float)
            if offsets.ndim == 2 and len(offsets) and not coll.get_label().startswith("_"):
                xs.extend(offsets[:, 0]); ys.extend(offsets[:, 1])
        for axis, values in (("x", xs), ("y", ys)):
            finite = np.asarray(values, dtype=float)
            finite = finite[np.isfinite(finite)]
            if single_valued and finite.size > 1 and np.unique(finite).size == 1:
                problems.append(f"{name}: every point has the same {axis} value ({finite[0]:g})")
        labelled = set(ax.get_legend_handles_labels()[1])
        if len(labelled) > 1 and not labelled <= legend_texts:  # a legend anywhere in the figure may name them
            problems.append(f"{name}: {len(labelled)} labelled series and no legend")
        for axis in (ax.xaxis, ax.yaxis):
            if _labels_overlap(axis.get_ticklabels(), renderer):
                problems.append(f"{name}: overlapping {axis.axis_name} tick labels")
    return problems


# ---------------------------------------------------------------- serving over the network
# The live server experiment (planner/evaluation/live_server.py): server overhead, the simulator checked
# on the server's rows, and attainment over time through each injected fault.

def server_overhead(overhead: pd.DataFrame, ax=None, title: str | None = None):
    """In-process replay against the HTTP server on the same trace: p50 and p95 latency per task."""
    _require(overhead, ["task", "inproc_lat_p50_ms", "inproc_lat_p95_ms", "http_lat_p50_ms", "http_lat_p95_ms"],
             "server_overhead")
    if ax is None:
        _, ax = plt.subplots()
    x = np.arange(len(overhead))
    bars = [("inproc_lat_p50_ms", "in-process p50"), ("http_lat_p50_ms", "HTTP p50"),
            ("inproc_lat_p95_ms", "in-process p95"), ("http_lat_p95_ms", "HTTP p95")]
    width = 0.8 / len(bars)
    for i, (column, label) in enumerate(bars):
        ax.bar(x + (i - (len(bars) - 1) / 2) * width, overhead[column], width, label=label,
               color=PALETTE[i // 2], alpha=1.0 if i % 2 else 0.45)
    ax.set_xticks(x, overhead["task"])
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(plt.NullFormatter())
    ax.set_ylabel("Latency (ms, log)")
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title)
    return ax


def server_validation(validation: pd.DataFrame, ax=None, title: str | None = None):
    """Live (server) hit-rate against the simulated one per run, for each of the three simulated sides."""
    _require(validation, ["live_hit_rate"], "server_validation")
    if ax is None:
        _, ax = plt.subplots()
    sides = [(s, f"{s}_sim_hit_rate") for s in ("profiled", "fresh", "served") if f"{s}_sim_hit_rate" in validation]
    for i, (side, column) in enumerate(sides):
        ax.scatter(validation[column], validation["live_hit_rate"], marker=("o", "s", "^")[i % 3],
                   color=PALETTE[i], label=f"simulated on {side} service times")
    ax.plot([0, 1], [0, 1], color="0.5", lw=0.8, ls="--", label="_identity")
    ax.set_xlim(-0.02, 1.02); ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("Simulated hit-rate"); ax.set_ylabel("Server hit-rate (client side)")
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title)
    return ax


def loadgen_sweep(runs: pd.DataFrame, axes, task: str) -> None:
    """One task's LoadGen sweep on two axes: p99 latency against the target rate with the latency
    target drawn (filled markers: VALID, hollow: INVALID), and the effective accuracy each method
    delivered at that rate (a shed answer keeps latency low but is not a correct one)."""
    _require(runs, ["task", "method", "target_qps", "lat_p99_ms", "target_latency_ms", "result",
                    "effective_accuracy"], "loadgen_sweep")
    part = runs[runs["task"] == task]
    left, right = axes
    for method in method_order(part["method"].unique()):
        rows = part[part["method"] == method].sort_values("target_qps")
        style = method_style(method, part["method"].unique())
        for ax, column in ((left, "lat_p99_ms"), (right, "effective_accuracy")):
            ax.plot(rows["target_qps"], rows[column], color=style["color"], lw=1.2, label=method)
            valid = rows["result"] == "VALID"
            ax.scatter(rows.loc[valid, "target_qps"], rows.loc[valid, column], color=style["color"],
                       marker=style["marker"], zorder=3, label="_valid")
            ax.scatter(rows.loc[~valid, "target_qps"], rows.loc[~valid, column], facecolors="white", s=36,
                       edgecolors=style["color"], marker=style["marker"], zorder=3, label="_invalid")
    for target in part["target_latency_ms"].unique():
        left.axhline(target, color="0.4", ls="--", lw=0.8, label="_target")
    left.set_yscale("log")
    # plain milliseconds (12, 15, 20), not 1.2x10^1, on the minor ticks a narrow range shows
    left.yaxis.set_major_formatter(mticker.LogFormatter())
    left.yaxis.set_minor_formatter(mticker.LogFormatter(minor_thresholds=(1, 0.4)))
    left.set_ylabel("p99 latency at the client (ms)"); right.set_ylabel("Effective accuracy (client clock)")
    right.set_ylim(0, 1)
    for ax in (left, right):
        ax.set_xlabel("LoadGen target rate (queries/s)")
        ax.legend(fontsize=7, title="filled marker: VALID, hollow: INVALID", title_fontsize=7)
    left.set_title(f"{task}: p99 against the target (dashed)")
    right.set_title(f"{task}: what was delivered")


def fault_attainment(timeline: pd.DataFrame, windows: dict[str, tuple[float, float]], ax=None,
                     title: str | None = None, window_s: float | None = None):
    """Rolling deadline attainment through each injected fault (``fault, t_s, hit_rate``), the windows
    drawn as bars under the curves in the faults' colours."""
    _require(timeline, ["fault", "t_s", "hit_rate"], "fault_attainment")
    if ax is None:
        _, ax = plt.subplots()
    for i, fault in enumerate(timeline["fault"].unique()):
        part = timeline[timeline["fault"] == fault].sort_values("t_s")
        style = line_style(i)
        ax.plot(part["t_s"], part["hit_rate"], color=style["color"], linestyle=style["linestyle"], lw=1.2, label=fault)
        start, end = windows.get(fault, (np.nan, np.nan))
        if np.isfinite(start) and np.isfinite(end):
            ax.hlines(-0.05 - 0.04 * i, start, end, color=style["color"], lw=4)
    ax.set_ylim(-0.05 - 0.04 * len(windows) - 0.02, 1.02)
    ax.set_xlabel("Trace time (s)")
    ax.set_ylabel("Deadline attainment" + (f" (last {window_s:g} s)" if window_s else ""))
    ax.legend(fontsize=7, title="fault (bar: its window)", title_fontsize=7)
    if title:
        ax.set_title(title)
    return ax


def training_curves(curves: pd.DataFrame, axes=None) -> Figure:
    """Evaluation accuracy (left) and mean training loss (right) after each epoch, one line per model."""
    _require(curves, ("model", "epoch", "mean_loss", "eval_accuracy"), "training curves")
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    fig = axes[0].figure
    for i, (model, rows) in enumerate(curves.sort_values("epoch").groupby("model", sort=True)):
        style = series_style(i)
        scored = rows.dropna(subset=["eval_accuracy"])
        axes[0].plot(scored["epoch"] + 1, scored["eval_accuracy"], label=model, **style)
        axes[1].plot(rows["epoch"] + 1, rows["mean_loss"], label=model, **style)
    axes[0].set(xlabel="epoch", ylabel="evaluation accuracy", title="accuracy after each epoch")
    axes[1].set(xlabel="epoch", ylabel="mean training loss", title="training loss")
    for ax in axes:
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0].legend(fontsize=8)
    return fig
