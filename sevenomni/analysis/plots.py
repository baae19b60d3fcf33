"""Figures (matplotlib's Agg canvas, no display needed): transfer matrix, parity plots,
task-embedding maps and training curves.

Each ``*_figure`` function builds and returns a :class:`~matplotlib.figure.Figure`;
:func:`save_figure` writes one as PNG. Every channel has one colour (:func:`channel_colours`,
by the task's place in the model's task order), the same in every figure. Statistics are written
outside the axes, so they never cover data, and energies are drawn with the mean offset of each
composition removed, as cMAE counts them, so an offset between channels' energy references does
not swamp the panel.
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from sevenomni.analysis.embeddings import ALL_SITES
from sevenomni.analysis.history import RunHistory, read_history
from sevenomni.analysis.metrics import COMPOSITION, composition_centred
from sevenomni.core.keys import ENERGY, FORCES
from sevenomni.nn.task_names import COMMON_CHANNEL, is_common

DPI = 120
COMMON_COLOUR = "#000000"
DATABASE_LINESTYLES = ("-", "--", ":", "-.")
DATABASE_MARKERS = ("o", "s", "^", "D", "v", "P")


def save_figure(figure: Figure, path: str | os.PathLike) -> Path:
    """Write ``figure`` as PNG to ``path`` (parent folders made); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=DPI)
    return path


def _ordered(values) -> list:
    return list(dict.fromkeys(values))


def channel_colours(tasks: Iterable[str]) -> dict[str, str]:
    """A distinct colour (hex) for each task, by its place in ``tasks``, and black for the common
    channel. Pass the model's task order and a task has the same colour in every figure."""
    names = [name for name in _ordered(tasks) if not is_common(name)]
    if len(names) <= 10:
        palette = colormaps["tab10"]
    elif len(names) <= 20:
        palette = colormaps["tab20"]
    else:
        palette = colormaps["turbo"].resampled(len(names))
    return {**{name: to_hex(palette(index)) for index, name in enumerate(names)}, COMMON_CHANNEL: COMMON_COLOUR}


def _wrapped(text: str, width_inches: float, fontsize: float) -> str:
    """``text`` broken into lines that fit ``width_inches`` at ``fontsize`` (long words split too)."""
    characters = max(20, int(width_inches * 72 / (0.62 * fontsize)))
    return "\n".join(line for part in text.splitlines() for line in textwrap.wrap(part, characters) or [""])


def _statistics(axes, text: str) -> None:
    """Statistics as the title of ``axes``: above the data region, so never over points."""
    axes.set_title(text, fontsize=9, loc="left")


def transfer_matrix_figure(rows: Sequence[dict], title: str = "", tasks: Sequence[str] = ()) -> Figure:
    """Heatmap of force MAE, databases × channels, each cell annotated; own channels outlined;
    channel names in their colours (``tasks``: the model's task order). A long title is wrapped."""
    databases = _ordered(row["database"] for row in rows)
    channels = _ordered(row["channel"] for row in rows)
    values = np.full((len(databases), len(channels)), np.nan)
    own = np.zeros_like(values, dtype=bool)
    for row in rows:
        i, j = databases.index(row["database"]), channels.index(row["channel"])
        values[i, j], own[i, j] = row["forces_mae"], row["own"]
    width = 3.2 + 1.25 * len(channels)
    caption = "force MAE (eV/Å): databases (rows) × channels (columns); own channel outlined"
    heading = _wrapped(f"{title}\n{caption}" if title else caption, width, 10)
    height = 2.4 + 0.5 * len(databases) + 0.2 * heading.count("\n")  # room for the colour bar's label
    figure = Figure(figsize=(width, height), layout="constrained")
    axes = figure.subplots()
    finite = values[np.isfinite(values)]
    image = axes.imshow(
        np.ma.masked_invalid(values), cmap="YlOrRd", aspect="auto",
        vmin=0.0, vmax=float(finite.max()) if len(finite) else 1.0,
    )
    threshold = 0.6 * (float(finite.max()) if len(finite) else 1.0)
    for i in range(len(databases)):
        for j in range(len(channels)):
            text = "–" if not np.isfinite(values[i, j]) else f"{values[i, j]:.3f}"
            colour = "white" if np.isfinite(values[i, j]) and values[i, j] > threshold else "black"
            axes.text(j, i, text, ha="center", va="center", color=colour, fontsize=10,
                      fontweight="bold" if own[i, j] else "normal")
            if own[i, j]:
                axes.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=2.2))
    axes.set_xticks(range(len(channels)), channels)
    axes.xaxis.tick_top()
    colours = channel_colours([*tasks, *channels])
    for tick, channel in zip(axes.xaxis.get_major_ticks(), channels):
        tick.label2.set_color(colours[channel])
    axes.set_yticks(range(len(databases)), databases)
    figure.colorbar(image, ax=axes, label="force MAE (eV/Å)")
    axes.set_title(heading, fontsize=10, pad=8)
    return figure


def _identity(axes, low: float, high: float) -> None:
    axes.plot([low, high], [low, high], color="0.4", linewidth=0.8, label="y = x")
    axes.set_xlim(low, high)
    axes.set_ylim(low, high)


def _limits(points: np.ndarray) -> tuple[float, float]:
    low, high = float(points.min()), float(points.max())
    pad = 0.05 * (high - low or 1.0)
    return low - pad, high + pad


def parity_figure(
    database: str, channel: str, samples: dict[str, np.ndarray], metrics: dict, tasks: Sequence[str] = ()
) -> Figure:
    """Predicted against reference energies (per atom) and force components of one database on
    ``channel``, drawn in the channel's colour (``tasks``: the model's task order).

    Energies are drawn with the mean offset of each composition removed (as cMAE counts them):
    predicted − its composition's mean error, so the points' mean distance from the diagonal is
    the cMAE. Statistics stand above each panel.
    """
    colour = channel_colours([*tasks, channel])[channel]
    figure = Figure(figsize=(10, 5.2), layout="constrained")
    figure.get_layout_engine().set(h_pad=0.1)  # square panels: the default pad lets the x labels touch the edge
    energy_axes, force_axes = figure.subplots(1, 2)
    figure.suptitle(f"{database} on channel {channel}")
    energy = samples[ENERGY]
    energy_axes.set_xlabel("reference energy (eV/atom)")
    energy_axes.set_ylabel("predicted energy − mean offset (eV/atom)")
    if len(energy):
        reference = energy[:, 0]
        predicted = reference + composition_centred(energy[:, 1] - reference, list(samples[COMPOSITION]))
        energy_axes.scatter(reference, predicted, s=10, alpha=0.7, edgecolors="none", color=colour)
        _identity(energy_axes, *_limits(np.stack([reference, predicted], 1)))
        _statistics(
            energy_axes,
            f"cMAE {metrics['energy_cmae']:.1f} meV/atom (mean offset per composition removed)\n"
            f"raw MAE {metrics['energy_mae']:.1f}, RMSE {metrics['energy_rmse']:.1f} meV/atom; "
            f"{len(energy)} structures",
        )
    else:
        energy_axes.text(0.5, 0.5, "no energy labels", ha="center", transform=energy_axes.transAxes)
    forces = samples[FORCES]
    force_axes.set_xlabel("reference force component (eV/Å)")
    force_axes.set_ylabel("predicted force component (eV/Å)")
    if len(forces):
        low, high = _limits(forces)
        if len(forces) > 4000:
            force_axes.hexbin(forces[:, 0], forces[:, 1], gridsize=70, mincnt=1, bins="log", cmap="viridis",
                              extent=(low, high, low, high))
        else:
            force_axes.scatter(forces[:, 0], forces[:, 1], s=4, alpha=0.4, edgecolors="none", color=colour)
        _identity(force_axes, low, high)
        scale = metrics["softening_scale"]
        force_axes.plot([low, high], [scale * low, scale * high], "--", color="tab:red", linewidth=1.0)
        _statistics(
            force_axes,
            f"MAE {metrics['forces_mae']:.3f}, RMSE {metrics['forces_rmse']:.3f} eV/Å; "
            f"{len(forces)} components shown\n"
            f"grey: y = x; red dashed: softening scale {scale:.3f}",
        )
    else:
        force_axes.text(0.5, 0.5, "no force labels", ha="center", transform=force_axes.transAxes)
    for axes in (energy_axes, force_axes):
        axes.set_aspect("equal", adjustable="box")
    return figure


def embedding_figure(analysis: dict, title: str = "") -> Figure:
    """One panel per site (and all sites): tasks, in their colours, and the common PES in the 2-D PCA of θT."""
    sites = list(analysis["sites"])
    columns = min(3, len(sites))
    rows = math.ceil(len(sites) / columns)
    figure = Figure(figsize=(4.4 * columns, 4.0 * rows), layout="constrained")
    grid = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel()
    palette = channel_colours(analysis["tasks"])
    colours = [palette[task] for task in analysis["tasks"]]
    for axes, site in zip(grid, sites):
        pca = analysis["sites"][site]["pca"]
        points = np.vstack([pca["tasks"], pca["origin"][None]])
        axes.scatter(pca["tasks"][:, 0], pca["tasks"][:, 1], c=colours, s=60, zorder=3)
        axes.scatter(*pca["origin"], marker="x", color="black", s=60, zorder=3)
        for task, (x, y) in zip(analysis["tasks"], pca["tasks"]):
            axes.annotate(task, (x, y), xytext=(6, 6), textcoords="offset points", fontsize=10)
        axes.annotate("common (θT = 0)", tuple(pca["origin"]), xytext=(6, -12), textcoords="offset points",
                      fontsize=9, color="0.3")
        span = float(np.ptp(points, axis=0).max()) or 1.0
        centre = (points.max(axis=0) + points.min(axis=0)) / 2
        axes.set_xlim(centre[0] - 0.75 * span, centre[0] + 0.75 * span)
        axes.set_ylim(centre[1] - 0.75 * span, centre[1] + 0.75 * span)
        axes.set_aspect("equal", adjustable="box")
        explained = pca["explained"]
        axes.set_xlabel(f"PC1 ({100 * explained[0]:.0f} %)")
        axes.set_ylabel(f"PC2 ({100 * explained[1]:.0f} %)")
        norms = analysis["sites"][site]["norms"]
        label = "all sites" if site == ALL_SITES else site
        axes.set_title(f"{label} (dim {analysis['sites'][site]['matrix'].shape[1]}, "
                       f"max ‖θT‖ {float(np.max(norms)):.3g})", fontsize=10)
        axes.grid(alpha=0.3)
    for axes in grid[len(sites):]:
        axes.set_visible(False)
    figure.suptitle(title or "task embeddings θT: PCA per site")
    return figure


def _running_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last ``window`` finite values at each point (NaN-tolerant)."""
    finite = np.isfinite(values)
    sums = np.cumsum(np.where(finite, values, 0.0))
    counts = np.cumsum(finite)
    sums[window:] = sums[window:] - sums[:-window]
    counts[window:] = counts[window:] - counts[:-window]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.nan)


def _stage_lines(axes, history: RunHistory) -> None:
    """Stage boundaries dashed."""
    for step, _ in history.stage_starts[1:]:
        axes.axvline(step, color="0.35", linestyle="--", linewidth=0.9)


def _stage_axis(axes, history: RunHistory) -> None:
    """Stage names on a secondary top axis, a tick where each stage starts: outside the curves."""
    if not history.stage_starts:
        return
    top = axes.secondary_xaxis("top")
    steps, names = zip(*history.stage_starts)
    top.set_xticks(steps, [str(name) for name in names], fontsize=8, color="0.3", ha="left")
    top.tick_params(axis="x", direction="out", length=4, color="0.35")


def _energy_metric(history: RunHistory) -> str:
    """cMAE, the energy error the library reports, where the logs have it above 0; else the MAE
    (older logs have no cMAE; validation sets whose compositions are each seen once have cMAE 0)."""
    measured = any((series["energy_cmae"] > 0).any() for series in history.validation.values())
    return "energy_cmae" if measured else "energy_mae"


def training_figure(history: RunHistory, title: str = "", tasks: Sequence[str] = ()) -> Figure:
    """Loss terms, ‖θT‖ and learning rate per step; validation force MAE and energy cMAE per
    database and channel (colour: channel, by ``tasks``, the model's task order, else the order
    the logs name them; line style: database; own channel thick); stage names on a top axis,
    boundaries dashed."""
    figure = Figure(figsize=(15, 11), layout="constrained")
    grid = figure.add_gridspec(3, 3, height_ratios=[1, 1.2, 1.2])
    loss_axes, norm_axes, lr_axes = (figure.add_subplot(grid[0, i]) for i in range(3))
    force_axes = figure.add_subplot(grid[1, :])
    energy_axes = figure.add_subplot(grid[2, :], sharex=force_axes)
    train = history.train
    steps = train["step"]
    window = max(1, len(steps) // 40)
    for index, column in enumerate([c for c in train if c.startswith("loss")] + (["penalty"] if "penalty" in train else [])):
        values = np.where(train[column] > 0, train[column], np.nan)
        if not np.isfinite(values).any():
            continue
        colour = f"C{index % 10}"
        loss_axes.plot(steps, values, linewidth=0.5, alpha=0.3, color=colour)
        loss_axes.plot(steps, _running_mean(values, window), linewidth=1.3, color=colour,
                       label=column.removeprefix("loss_") if column != "loss" else "total")
    loss_axes.set_yscale("log")
    loss_axes.set_title(f"loss terms (faint: per step; line: mean of {window})", fontsize=10)
    loss_axes.legend(fontsize=8)
    for axes, column, label in ((norm_axes, "theta_t_norm", "‖θT‖"), (lr_axes, "lr", "learning rate")):
        if column in train:
            axes.plot(steps, train[column], linewidth=1.0)
        axes.set_title(label)
    databases = _ordered(database for database, _ in history.validation)
    colours = channel_colours([*tasks, *(channel for _, channel in history.validation)])
    energy_metric = _energy_metric(history)
    handles = []
    for (database, channel), series in history.validation.items():
        colour = colours[channel]
        index = databases.index(database)
        style = DATABASE_LINESTYLES[index % len(DATABASE_LINESTYLES)]
        own = history.own.get((database, channel), False)
        label = f"{database} · {channel}{' (own)' if own else ''}"
        marker = DATABASE_MARKERS[index % len(DATABASE_MARKERS)] if len(series["step"]) < 30 else None
        for axes, metric in ((force_axes, "forces_mae"), (energy_axes, energy_metric)):
            values = np.where(series[metric] > 0, series[metric], np.nan)
            axes.plot(series["step"], values, linestyle=style, color=colour, linewidth=2.4 if own else 1.2,
                      marker=marker, markersize=4, label=label)
        handles.append(Line2D([], [], color=colour, linestyle=style, marker=marker,
                              linewidth=2.4 if own else 1.2, label=label))
    force_axes.set_title("validation force MAE (eV/Å)")
    energy_axes.set_title(
        "validation energy cMAE (meV/atom): energy − mean offset per composition"
        if energy_metric == "energy_cmae"
        else "validation energy MAE (meV/atom; no cMAE above 0 logged: each composition seen once, or an older log)"
    )
    energy_axes.set_yscale("log")
    energy_axes.set_xlabel("step")
    for axes in (norm_axes, lr_axes, loss_axes):
        axes.set_xlabel("step")
    if handles:
        force_axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8,
                          title="database · channel", title_fontsize=8)
    else:
        force_axes.text(0.5, 0.5, "no validation rows", ha="center", transform=force_axes.transAxes)
    if len(steps):
        force_axes.set_xlim(0, float(steps.max()) * 1.01)
    for axes in (loss_axes, norm_axes, lr_axes, force_axes, energy_axes):
        _stage_lines(axes, history)
        axes.grid(alpha=0.3)
    for axes in (loss_axes, force_axes):
        _stage_axis(axes, history)
    figure.suptitle(title or "training")
    return figure


def write_run_plot(
    run_dir: str | os.PathLike, path: str | os.PathLike | None = None, tasks: Sequence[str] = ()
) -> Path:
    """Draw a run directory's training curves to ``path`` (default ``RUN_DIR/training.png``);
    ``tasks``, the model's task order, gives each channel its colour."""
    run_dir = Path(run_dir)
    figure = training_figure(read_history(run_dir), title=f"training: {run_dir}", tasks=tasks)
    return save_figure(figure, path or run_dir / "training.png")
