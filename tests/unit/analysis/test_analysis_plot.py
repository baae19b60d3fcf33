"""`sevenomni plot`, the plot written at the end of `sevenomni train`, and what the figures show:
statistics outside the data, energies without their mean offset, a colour per channel, stage
names off the curves, titles inside the figure."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase.build import molecule
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PathCollection
from matplotlib.colors import to_hex
from matplotlib.text import Text
from test_analysis_metrics import labelled_batch
from training_helpers import make_run, write_config

from sevenomni.analysis import plots
from sevenomni.analysis.history import RunHistory, read_history
from sevenomni.analysis.metrics import ErrorAccumulator
from sevenomni.cli import main


def test_train_writes_training_curves_and_plot_redraws_them(tmp_path, capsys):
    raw = make_run(tmp_path, count=8, overrides={"train.validation_channels": "all"})
    raw["stages"] = [
        {"name": "crystals", "databases": ["crystal"], "steps": 3},
        {"name": "both", "databases": ["crystal", "molecule"], "steps": 3},
    ]
    assert main(["train", str(write_config(raw, tmp_path / "run.yaml"))]) == 0
    run_dir = tmp_path / "run"
    assert f"training curves: {run_dir / 'training.png'}" in capsys.readouterr().out
    assert (run_dir / "training.png").stat().st_size > 30_000
    history = read_history(run_dir)
    assert history.stage_starts == [(1, "crystals"), (4, "both")]
    np.testing.assert_array_equal(history.train["step"], np.arange(1, 7))
    assert {"loss", "theta_t_norm", "lr"} <= set(history.train)
    assert history.own[("crystal", "gfn1")] and not history.own[("crystal", "common")]
    assert history.validation[("crystal", "gfn1")]["step"][0] == 0  # initial.jsonl: before the first step
    assert ("molecule", "gfn2") in history.validation
    assert main(["plot", str(run_dir), "--out", str(tmp_path / "again.png")]) == 0
    assert (tmp_path / "again.png").stat().st_size > 30_000


def test_history_keeps_rows_aligned_and_the_last_of_a_repeated_step(tmp_path):
    rows = [
        {"step": 1, "stage": "a", "loss_energy": 1.0, "loss_stress": 0.5, "loss": 2.0},
        {"step": 2, "stage": "a", "loss_energy": 0.9, "loss": 1.8},  # a batch without stress labels
        {"step": 3, "stage": "b", "loss_energy": 0.8, "loss_stress": 0.4, "loss": 1.6},
        {"step": 3, "stage": "b", "loss_energy": 0.7, "loss_stress": 0.3, "loss": 1.4},  # resumed, logged again
    ]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    history = read_history(tmp_path)
    np.testing.assert_array_equal(history.train["loss"], [2.0, 1.8, 1.4])
    np.testing.assert_array_equal(history.train["loss_stress"], [0.5, np.nan, 0.3])
    assert history.stage_starts == [(1, "a"), (3, "b")]
    assert history.validation == {}


def test_plot_of_a_directory_without_logs_is_a_clear_error(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 2
    assert "train.jsonl: no training log" in capsys.readouterr().err


def drawn(figure):
    """The figure laid out and drawn (Agg), with its renderer."""
    FigureCanvasAgg(figure)
    figure.draw_without_rendering()
    return figure.canvas.get_renderer()


def offset_samples(offset_ev: float = 10.0, noise_ev: float = 0.02):
    """Parity samples of water and ammonia whose predictions lie ``offset_ev`` per atom off (one
    offset per composition) plus noise, with the summary the accumulator reports for them."""
    rng = np.random.default_rng(0)
    structures = [molecule("H2O"), molecule("NH3")] * 6
    reference = [-10.0 - 0.1 * i for i in range(len(structures))]
    per_atom = [offset_ev + (0.5 if len(a) == 4 else 0.0) + rng.normal(0, noise_ev) for a in structures]
    forces = [rng.normal(size=(len(a), 3)) for a in structures]
    batch = labelled_batch(structures, reference, forces)
    predicted = {
        "energy": torch.tensor([e + o * len(a) for e, o, a in zip(reference, per_atom, structures)]),
        "forces": 0.9 * torch.cat([torch.as_tensor(f) for f in forces]),
    }
    errors = ErrorAccumulator(sample_every=1)
    errors.add(batch, predicted)
    return errors.samples, errors.summary()


def test_parity_statistics_stand_outside_the_data_region():
    samples, summary = offset_samples()
    figure = plots.parity_figure("molecules", "gfn2", samples, summary, tasks=["gfn1", "gfn2"])
    renderer = drawn(figure)
    inside = figure.bbox
    for axes, statistic in zip(figure.axes, ("cMAE", "softening scale")):
        data_region = axes.get_window_extent(renderer)
        shown = [text for text in axes.get_children() if isinstance(text, Text) and text.get_text()]
        assert any(statistic in text.get_text() for text in shown)
        for text in shown:
            extent = text.get_window_extent(renderer)
            assert not extent.overlaps(data_region), text.get_text()
            assert inside.x0 <= extent.x0 and extent.x1 <= inside.x1 and extent.y1 <= inside.y1
        label = axes.xaxis.label.get_window_extent(renderer)
        assert label.y0 >= inside.y0  # the x label is not cut off either


def test_parity_energies_lie_on_the_diagonal_after_a_10_ev_offset_is_removed():
    samples, summary = offset_samples(offset_ev=10.0)
    assert summary["energy_mae"] > 9_000  # meV/atom: the offset is there
    figure = plots.parity_figure("molecules", "gfn2", samples, summary)
    energy_axes = figure.axes[0]
    (points,) = [c for c in energy_axes.collections if isinstance(c, PathCollection)]
    x, y = points.get_offsets().T
    np.testing.assert_allclose(x, samples["energy"][:, 0])
    assert np.abs(y - x).max() < 0.1  # eV/atom: on the diagonal, the 10 eV gone
    assert 1000 * np.abs(y - x).mean() == pytest.approx(summary["energy_cmae"])  # what cMAE counts
    low, high = energy_axes.get_ylim()
    assert high - low < 1.2 * np.ptp(x) < 2.0  # limits fit the references, not the 10 eV offset
    assert "mean offset" in energy_axes.get_ylabel()


def four_task_history(cmae: str = "logged") -> RunHistory:
    """A run of four tasks validated on one database; ``cmae``: "logged", "zero" or "absent"."""
    tasks = ["pbe", "r2scan", "gfn1", "gfn2"]
    steps = np.arange(0.0, 50.0, 10.0)
    cmae_values = {"logged": 10 + steps / 10, "zero": np.zeros(len(steps)), "absent": np.full(len(steps), np.nan)}
    validation, own = {}, {}
    for channel in [*tasks, "common"]:
        series = {"step": steps, "energy_mae": 1e4 + steps, "forces_mae": 0.1 + steps / 1e3,
                  "energy_cmae": cmae_values[cmae]}
        validation[("bulk", channel)] = series
        own[("bulk", channel)] = channel == "pbe"
    train = {"step": np.arange(1.0, 41.0), "loss": 1 / np.arange(1.0, 41.0)}
    return RunHistory(train, validation, own, [(1, "warm-up"), (21, "all four")])


def test_every_channel_has_its_own_colour_the_same_in_every_figure():
    tasks = ["pbe", "r2scan", "gfn1", "gfn2"]
    colours = plots.channel_colours(tasks)
    assert len({colours[task] for task in tasks} | {colours["common"]}) == 5
    figure = plots.training_figure(four_task_history(), tasks=tasks)
    force_axes = figure.axes[3]
    drawn_colours = {
        line.get_label(): to_hex(line.get_color()) for line in force_axes.get_lines() if "·" in line.get_label()
    }
    foreign = [drawn_colours[f"bulk · {task}"] for task in tasks[1:]]
    assert len(set(foreign)) == 3 and drawn_colours["bulk · pbe (own)"] not in foreign
    parity = plots.parity_figure("bulk", "gfn1", *offset_samples(), tasks=tasks)
    (points,) = [c for c in parity.axes[0].collections if isinstance(c, PathCollection)]
    assert to_hex(points.get_facecolor()[0]) == drawn_colours["bulk · gfn1"] == colours["gfn1"]


@pytest.mark.parametrize("cmae, metric", [("logged", "energy_cmae"), ("zero", "energy_mae"), ("absent", "energy_mae")])
def test_training_energy_panel_shows_cmae_where_it_measures_something(cmae, metric):
    history = four_task_history(cmae)
    energy_axes = plots.training_figure(history).axes[4]
    line = next(line for line in energy_axes.get_lines() if line.get_label() == "bulk · gfn2")
    np.testing.assert_allclose(line.get_ydata(), history.validation[("bulk", "gfn2")][metric])
    assert energy_axes.get_title().startswith("validation energy cMAE" if cmae == "logged" else "validation energy MAE")


def test_stage_names_stand_on_a_top_axis_not_over_the_curves():
    figure = plots.training_figure(four_task_history())
    drawn(figure)
    for axes in figure.axes:
        assert not {"warm-up", "all four"} & {text.get_text() for text in axes.texts}
    labelled = [axes for axes in figure.axes[:5] if axes.child_axes]
    assert len(labelled) == 2  # the loss panel and the validation panel
    for axes in labelled:
        (top,) = axes.child_axes
        assert [t.get_text() for t in top.xaxis.get_ticklabels()] == ["warm-up", "all four"]
        np.testing.assert_array_equal(top.get_xticks(), [1, 21])
        assert top.xaxis.get_ticks_position() == "top"


def test_a_long_transfer_matrix_title_is_wrapped_inside_the_figure():
    rows = [{"database": "bulk", "channel": channel, "forces_mae": 0.1, "own": channel == "pbe"}
            for channel in ("pbe", "common")]
    title = "/a/very/long/path/to/a/fine-tuned/model/" * 6 + "model.pt"
    figure = plots.transfer_matrix_figure(rows, title=title, tasks=["pbe"])
    renderer = drawn(figure)
    (axes, _colour_bar) = figure.axes
    extent = axes.title.get_window_extent(renderer)
    box = figure.bbox
    assert box.x0 <= extent.x0 and extent.x1 <= box.x1 and box.y0 <= extent.y0 and extent.y1 <= box.y1
    assert axes.title.get_text().replace("\n", "").startswith(title)
    assert [to_hex(tick.label2.get_color()) for tick in axes.xaxis.get_major_ticks()[:2]] == [
        plots.channel_colours(["pbe"])["pbe"], "#000000",
    ]
