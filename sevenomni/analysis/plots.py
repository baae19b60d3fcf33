"""Figures (PNG, matplotlib's Agg canvas, no display needed): transfer matrix, parity plots,
task-embedding maps and training curves."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from sevenomni.analysis.embeddings import ALL_SITES
from sevenomni.analysis.history import RunHistory, read_history
from sevenomni.keys import ENERGY, FORCES

DPI = 120


def _save(figure: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=DPI)
    return path


def _ordered(values) -> list:
    return list(dict.fromkeys(values))


def transfer_matrix(rows: Sequence[dict], path: str | os.PathLike, title: str = "") -> Path:
    """Heatmap of force MAE, databases × channels, each cell annotated; own channels outlined."""
    databases = _ordered(row["database"] for row in rows)
    channels = _ordered(row["channel"] for row in rows)
    values = np.full((len(databases), len(channels)), np.nan)
    own = np.zeros_like(values, dtype=bool)
    for row in rows:
        i, j = databases.index(row["database"]), channels.index(row["channel"])
        values[i, j], own[i, j] = row["forces_mae"], row["own"]
    figure = Figure(figsize=(3.2 + 1.25 * len(channels), 1.6 + 0.5 * len(databases)), layout="constrained")
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
    axes.set_yticks(range(len(databases)), databases)
    axes.xaxis.tick_top()
    figure.colorbar(image, ax=axes, label="force MAE (eV/Å)")
    caption = "force MAE (eV/Å): databases (rows) × channels (columns); own channel outlined"
    axes.set_title(f"{title}\n{caption}" if title else caption, fontsize=10, pad=8)
    return _save(figure, path)


def _identity(axes, low: float, high: float) -> None:
    axes.plot([low, high], [low, high], color="0.4", linewidth=0.8, label="y = x")
    axes.set_xlim(low, high)
    axes.set_ylim(low, high)


def _limits(points: np.ndarray) -> tuple[float, float]:
    low, high = float(points.min()), float(points.max())
    pad = 0.05 * (high - low or 1.0)
    return low - pad, high + pad


def _boxed_note(axes, text: str) -> None:
    """A boxed note in the upper left corner of ``axes``."""
    axes.text(
        0.03, 0.97, text, transform=axes.transAxes, va="top", fontsize=9,
        bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "0.8"},
    )


def parity(
    database: str, channel: str, samples: dict[str, np.ndarray], metrics: dict, path: str | os.PathLike
) -> Path:
    """Predicted against reference energies (per atom) and force components of one database."""
    figure = Figure(figsize=(10, 4.6), layout="constrained")
    energy_axes, force_axes = figure.subplots(1, 2)
    figure.suptitle(f"{database} on channel {channel}")
    energy = samples[ENERGY]
    if len(energy):
        energy_axes.scatter(energy[:, 0], energy[:, 1], s=10, alpha=0.7, edgecolors="none")
        _identity(energy_axes, *_limits(energy))
        _boxed_note(
            energy_axes,
            f"MAE {metrics['energy_mae']:.1f} meV/atom\nRMSE {metrics['energy_rmse']:.1f} meV/atom\n"
            f"cMAE {metrics['energy_cmae']:.1f} meV/atom\n{len(energy)} structures",
        )
    else:
        energy_axes.text(0.5, 0.5, "no energy labels", ha="center", transform=energy_axes.transAxes)
    energy_axes.set_xlabel("reference energy (eV/atom)")
    energy_axes.set_ylabel("predicted energy (eV/atom)")
    forces = samples[FORCES]
    if len(forces):
        low, high = _limits(forces)
        if len(forces) > 4000:
            force_axes.hexbin(forces[:, 0], forces[:, 1], gridsize=70, mincnt=1, bins="log", cmap="viridis",
                              extent=(low, high, low, high))
        else:
            force_axes.scatter(forces[:, 0], forces[:, 1], s=4, alpha=0.4, edgecolors="none")
        _identity(force_axes, low, high)
        scale = metrics["softening_scale"]
        force_axes.plot([low, high], [scale * low, scale * high], "--", color="tab:red", linewidth=1.0,
                        label=f"slope {scale:.3f}")
        force_axes.legend(loc="lower right", fontsize=9)
        _boxed_note(
            force_axes,
            f"MAE {metrics['forces_mae']:.3f} eV/Å\nRMSE {metrics['forces_rmse']:.3f} eV/Å\n"
            f"softening scale {scale:.3f}\n{len(forces)} components shown",
        )
    else:
        force_axes.text(0.5, 0.5, "no force labels", ha="center", transform=force_axes.transAxes)
    force_axes.set_xlabel("reference force component (eV/Å)")
    force_axes.set_ylabel("predicted force component (eV/Å)")
    for axes in (energy_axes, force_axes):
        axes.set_aspect("equal", adjustable="box")
    return _save(figure, path)


def embedding_map(analysis: dict, path: str | os.PathLike, title: str = "") -> Path:
    """One panel per site (and all sites): tasks and the common PES in the 2-D PCA of θT."""
    sites = list(analysis["sites"])
    columns = min(3, len(sites))
    rows = math.ceil(len(sites) / columns)
    figure = Figure(figsize=(4.4 * columns, 4.0 * rows), layout="constrained")
    grid = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel()
    colours = [f"C{i % 10}" for i in range(len(analysis["tasks"]))]
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
    return _save(figure, path)


def _running_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last ``window`` finite values at each point (NaN-tolerant)."""
    finite = np.isfinite(values)
    sums = np.cumsum(np.where(finite, values, 0.0))
    counts = np.cumsum(finite)
    sums[window:] = sums[window:] - sums[:-window]
    counts[window:] = counts[window:] - counts[:-window]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.nan)


def _stage_lines(axes, history: RunHistory, label: bool) -> None:
    for step, stage in history.stage_starts[1:]:
        axes.axvline(step, color="0.35", linestyle="--", linewidth=0.9)
    if label:
        for step, stage in history.stage_starts:
            axes.annotate(stage, (step, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -12),
                          textcoords="offset points", fontsize=8, color="0.3")


def training_curves(history: RunHistory, path: str | os.PathLike, title: str = "") -> Path:
    """Loss terms, ‖θT‖ and learning rate per step; validation force and energy MAE per
    database and channel; stage boundaries dashed."""
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
    handles = []
    for (database, channel), series in history.validation.items():
        colour = f"C{databases.index(database) % 10}"
        own = history.own.get((database, channel), False)
        style = "-" if own else (":" if channel == "common" else "--")
        label = f"{database} · {channel}{' (own)' if own else ''}"
        for axes, metric in ((force_axes, "forces_mae"), (energy_axes, "energy_mae")):
            values = np.where(series[metric] > 0, series[metric], np.nan)
            axes.plot(series["step"], values, style, color=colour, linewidth=1.6 if own else 1.1,
                      marker="o" if len(series["step"]) < 30 else None, markersize=3)
        handles.append(Line2D([], [], color=colour, linestyle=style, label=label))
    force_axes.set_title("validation force MAE (eV/Å)")
    energy_axes.set_title("validation energy MAE (meV/atom)")
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
        _stage_lines(axes, history, label=axes in (loss_axes, force_axes))
        axes.grid(alpha=0.3)
    figure.suptitle(title or "training")
    return _save(figure, path)


def write_run_plot(run_dir: str | os.PathLike, path: str | os.PathLike | None = None) -> Path:
    """Draw a run directory's training curves to ``path`` (default ``RUN_DIR/training.png``)."""
    run_dir = Path(run_dir)
    return training_curves(read_history(run_dir), path or run_dir / "training.png", title=f"training: {run_dir}")
