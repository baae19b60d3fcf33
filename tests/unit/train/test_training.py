"""The training engine: config errors, curriculum, NaN handling, exact resume and DDP equivalence."""

from __future__ import annotations

import csv
import logging
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from ase.io import read
from training_helpers import make_run, write_config

from sevenomni import load_model
from sevenomni.calculators.prediction import predict
from sevenomni.train.config import ConfigError, load_config, save_config
from sevenomni.train.trainer import Trainer, TrainingDiverged, TrainingInterrupted


def weights(path):
    return {k: v.clone() for k, v in torch.load(path, weights_only=True)["state_dict"].items()}


def assert_same_weights(a, b, atol=0.0):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=0.0, msg=key)


# ---------------------------------------------------------------------------- configuration
def test_config_errors_name_the_key(tmp_path):
    raw = make_run(tmp_path)
    with pytest.raises(ConfigError, match=r"model.chanels: unknown key \(did you mean channels\?\)"):
        load_config(raw={**raw, "model": {**raw["model"], "chanels": 8}})
    with pytest.raises(ConfigError, match=r"train.regularization.mode"):
        load_config(raw=raw, overrides=["train.regularization.mode=theta"])
    with pytest.raises(ConfigError, match=r"unknown database\(s\) \['surface'\]"):
        load_config(raw=raw, overrides=["stages.0.databases=[crystal, surface]"])
    with pytest.raises(ConfigError, match="exactly one of 'steps' or 'epochs'"):
        load_config(raw=raw, overrides=["stages.0.epochs=2"])
    with pytest.raises(ConfigError, match="not a valid list index"):
        load_config(raw=raw, overrides=["data.databases.7.weight=2"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(raw=raw, overrides=["train.seed"])
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("model: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad_yaml)


def test_database_min_distance_reaches_the_ingest(tmp_path):
    """A database's min_distance is applied when the trainer ingests its raw files."""
    raw = make_run(tmp_path, count=4, overrides={"data.databases.0.min_distance": 3.0})
    with pytest.raises(ValueError, match=r"crystal\.extxyz: record 0: atoms .* \(minimum 3\.0 Å\) \[close_atoms\]"):
        Trainer(load_config(raw=raw))


def test_overrides_and_relative_paths(tmp_path):
    raw = make_run(tmp_path)
    raw["data"]["databases"][0]["path"] = "crystal.extxyz"
    config = load_config(write_config(raw, tmp_path / "run.yaml"), ["train.optimizer.lr=0.5", "model.lmax=2"])
    assert config.train.optimizer.lr == 0.5 and config.model.lmax == 2
    assert config.data.databases[0].path == str(tmp_path / "crystal.extxyz")
    assert config.tasks == ["gfn1", "gfn2"]


def test_saved_config_reads_back_to_the_same_resolved_config(tmp_path):
    raw = make_run(tmp_path, overrides={"data.databases.1.split": {"valid_path": "molecule.extxyz"}})
    raw["model"] = {"init_from": "base.pt"}
    (tmp_path / "base.pt").write_bytes(b"")
    config = load_config(write_config(raw, tmp_path / "run.yaml"), ["train.optimizer.lr=0.5"])
    save_config(config, tmp_path / "saved.yaml")
    again = load_config(tmp_path / "saved.yaml")
    assert again.train.optimizer.lr == 0.5 and again.train.run_dir == str(tmp_path / "run")
    assert again.model_dump() == config.model_dump()
    assert "warmup_steps: 0" in (tmp_path / "saved.yaml").read_text()  # defaults are written out


# ---------------------------------------------------------------------------- curriculum
def test_curriculum_introduces_a_task_on_the_common_pes_with_fitted_shifts(tmp_path):
    raw = make_run(
        tmp_path,
        overrides={
            "stages": [
                {"name": "crystals", "databases": ["crystal"], "steps": 3},
                {"name": "both", "databases": ["crystal", "molecule"], "steps": 3},
            ]
        },
    )
    trainer = Trainer(load_config(raw=raw))
    gfn2 = trainer.model.task_index("gfn2")
    introduced = {}
    original = trainer._introduce_tasks

    def spy(stage):
        before = set(trainer.progress.introduced)
        original(stage)
        for task in set(trainer.progress.introduced) - before:
            index = trainer.model.task_index(task)
            introduced[task] = {
                "embeddings": [p[index].detach().clone() for _, p in trainer.model.task_embedding_parameters()],
                "shift": trainer.model.energy_shift.weight[index].detach().clone(),
                "step": trainer.progress.global_step,
            }

    trainer._introduce_tasks = spy
    trainer.run()
    assert introduced["gfn1"]["step"] == 0 and introduced["gfn2"]["step"] == 3
    assert all(torch.count_nonzero(row) == 0 for row in introduced["gfn2"]["embeddings"])
    # The fitted shift reproduces the least-squares solution on the molecules' residuals.
    model = trainer.model
    species = [model.elements.index(s) for s in ("H", "C", "N", "O")]
    shift = introduced["gfn2"]["shift"]
    assert torch.count_nonzero(shift[species]) == 4
    others = [i for i in range(len(model.elements)) if i not in species]
    assert torch.count_nonzero(shift[others]) == 0
    # Typical GFN2 atomic energies are a few eV to tens of eV below zero.
    assert float(shift[species].max()) < 0
    # After training the molecule channel moved away from the common PES.
    assert any(torch.count_nonzero(p[gfn2]) > 0 for _, p in model.task_embedding_parameters())
    stage_files = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("stage-*.pt"))
    assert stage_files == ["stage-1-crystals.pt", "stage-2-both.pt"]


def test_threads_setting_sets_torch_cpu_threads(tmp_path):
    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    try:
        Trainer(load_config(raw=make_run(tmp_path, overrides={"train.threads": target})))
        assert torch.get_num_threads() == target
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ConfigError, match="threads"):
        load_config(raw=make_run(tmp_path, overrides={"train.threads": 0}))


def test_final_metrics_reuse_the_last_validation_at_the_same_step(tmp_path):
    trainer = Trainer(load_config(raw=make_run(tmp_path, overrides={"stages.0.steps": 2})))
    computed = []
    original = trainer.validation_metrics

    def counted():
        computed.append(trainer.progress.global_step)
        return original()

    trainer.validation_metrics = counted
    trainer.run()
    assert computed == [0, 2]  # initial and end of stage; the final export reuses the latter
    final = list(csv.DictReader(open(tmp_path / "run" / "final.csv")))
    last = [r for r in csv.DictReader(open(tmp_path / "run" / "validation.csv")) if r["step"] == "2"]
    assert final and [r["forces_mae"] for r in final] == [r["forces_mae"] for r in last]


def test_best_validation_is_exported_as_model_best_with_ema_weights(tmp_path):
    raw = make_run(tmp_path, overrides={"stages.0.steps": 4, "train.validate_every": 1, "train.ema_decay": 0.5})
    Trainer(load_config(raw=raw)).run()
    best_state = torch.load(tmp_path / "run" / "checkpoints" / "best.pt", weights_only=True)
    best = load_model(tmp_path / "run" / "model_best.pt")
    for parameter, shadow in zip(best.parameters(), best_state["ema"]["shadow"], strict=True):
        assert torch.equal(parameter, shadow)
    record = torch.load(tmp_path / "run" / "model_best.pt", weights_only=True)
    assert record["metadata"]["global_step"] == best_state["progress"]["global_step"]


def test_start_up_summary_validation_lines_and_train_log(tmp_path, caplog):
    raw = make_run(tmp_path, overrides={"stages.0.steps": 2})
    trainer = Trainer(load_config(raw=raw))
    with caplog.at_level(logging.INFO, logger="sevenomni"):
        trainer.run()
    count = lambda named: sum(p.numel() for _, p in named)  # noqa: E731
    summary = caplog.text
    assert "device cpu" in summary and "float64" in summary
    assert "crystal: task gfn1, 12 training / 4 validation structures" in summary
    assert "molecule: task gfn2, 12 training / 4 validation structures" in summary
    sources = [r.getMessage() for r in caplog.records if r.getMessage().startswith("database crystal")]
    assert sources and "energy from info:REF_energy" in sources[0] and "forces from arrays:REF_forces" in sources[0]
    assert f"θC {count(trainer.model.shared_parameters()):,}" in summary
    assert f"θT {count(trainer.model.task_embedding_parameters()):,}" in summary
    shifts = [r.getMessage() for r in caplog.records if "energy shifts" in r.getMessage()]
    assert [m.split(":")[0] for m in shifts] == ["task gfn1", "task gfn2"]
    assert "Si " in shifts[0] and " H " in shifts[1]
    validations = [r.getMessage() for r in caplog.records if "validation" in r.getMessage() and "MAE" in r.getMessage()]
    assert len(validations) == 2  # initial and end of stage
    assert all("crystal: E MAE " in m and "molecule: E MAE " in m and "meV/atom" in m and "eV/Å" in m for m in validations)
    log = (tmp_path / "run" / "train.log").read_text()
    for record in caplog.records:
        assert record.getMessage().splitlines()[0] in log


def test_cuda_without_cuda_is_a_clear_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError, match="device 'cuda'.*CUDA is not available"):
        Trainer(load_config(raw=make_run(tmp_path, overrides={"train.device": "cuda"})))
    assert not (tmp_path / "run").exists()


def test_freeze_shared_trains_a_new_task_and_leaves_the_old_channel_untouched(tmp_path):
    for name in ("base", "tune"):
        (tmp_path / name).mkdir()
    base = make_run(tmp_path / "base", overrides={
        "stages": [{"name": "crystals", "databases": ["crystal"], "steps": 3}],
        "model.elements": ["H", "Li", "C", "N", "O", "F", "Mg", "Al", "Si"],  # the molecules' N too
    })
    base["data"]["databases"] = base["data"]["databases"][:1]  # a one-task (gfn1) model
    Trainer(load_config(raw=base)).run()
    base_path = tmp_path / "base" / "run" / "model.pt"
    molecules_only = [{"name": "molecules", "databases": ["molecule"], "steps": 3}]
    tune = make_run(tmp_path / "tune", overrides={
        "model": {"init_from": str(base_path)}, "train.freeze": "shared", "stages": molecules_only,
    })
    Trainer(load_config(raw=tune)).run()
    base, tuned = load_model(base_path), load_model(tmp_path / "tune" / "run" / "model.pt")
    assert tuned.tasks == ["gfn1", "gfn2"]
    tuned_shared = dict(tuned.shared_parameters())
    for name, parameter in base.shared_parameters():
        assert torch.equal(parameter, tuned_shared[name]), name
    gfn2 = tuned.task_index("gfn2")
    assert any(torch.count_nonzero(p[gfn2]) > 0 for _, p in tuned.task_embedding_parameters())
    crystal = read(tmp_path / "base" / "crystal.extxyz", "0")
    before, after = (next(iter(predict(m, [crystal], "gfn1", device="cpu"))) for m in (base, tuned))
    assert before["energy"] == after["energy"] and np.array_equal(before["forces"], after["forces"])
    with pytest.raises(ConfigError, match="freeze: shared.*init_from"):
        load_config(raw=make_run(tmp_path / "tune", overrides={"train.freeze": "shared"}))


# ---------------------------------------------------------------------------- NaN handling
def poison_loss(trainer, bad):
    """Make the loss non-finite on the calls (1-based) for which ``bad(call)`` is true."""
    real = trainer.train_step.loss
    calls = {"n": 0}

    class Poisoned:  # the trainer's loss (its weights, set per stage, included), non-finite on those calls
        def __getattr__(self, name):
            return getattr(real, name)

        def __call__(self, prediction, batch):
            calls["n"] += 1
            terms = real(prediction, batch)
            if bad(calls["n"]):
                terms["energy"].total = terms["energy"].total * float("nan")
            return terms

    trainer.train_step.loss = Poisoned()


def test_non_finite_loss_skips_steps_then_stops_with_a_clear_message(tmp_path):
    raw = make_run(tmp_path, overrides={"train.max_bad_steps": 3, "stages.0.steps": 8})
    trainer = Trainer(load_config(raw=raw))
    poison_loss(trainer, lambda call: call == 2 or call >= 5)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with pytest.raises(TrainingDiverged, match="3 consecutive steps had a non-finite loss.*last.pt"):
        trainer.run()
    assert trainer.progress.skipped_steps == 4  # one isolated bad step, then three in a row
    assert trainer.progress.global_step == 3
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert saved["progress"]["global_step"] == 2
    for value in saved["model"].values():
        assert torch.isfinite(value).all()
    assert any(not torch.equal(before[k], v) for k, v in saved["model"].items())


def test_divergence_before_the_first_checkpoint_says_there_is_none(tmp_path):
    trainer = Trainer(load_config(raw=make_run(tmp_path, overrides={"train.max_bad_steps": 2})))
    poison_loss(trainer, lambda call: True)
    with pytest.raises(TrainingDiverged, match="no checkpoint was saved yet") as raised:
        trainer.run()
    assert "last.pt" not in str(raised.value)
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()


def test_skipped_steps_are_counted_in_train_csv_and_reported(tmp_path, caplog):
    raw = make_run(tmp_path, overrides={"stages.0.steps": 4})
    trainer = Trainer(load_config(raw=raw))
    poison_loss(trainer, lambda call: call in (2, 3, 4, 5))
    with caplog.at_level(logging.INFO, logger="sevenomni"):
        trainer.run()
    rows = list(csv.DictReader(open(tmp_path / "run" / "train.csv")))
    assert [row["skipped_steps"] for row in rows] == ["0", "4", "4", "4"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3, warnings  # the 1st, 2nd and 4th skip: rate-limited to powers of two
    assert all("non-finite" in message for message in warnings)
    assert "skipped steps (non-finite loss or gradient): 4" in caplog.text


# ---------------------------------------------------------------------------- resume
def interrupted_then_resumed(tmp_path, stop_after: int, save: bool):
    """Run, stop after ``stop_after`` optimizer steps (saving like SIGTERM, or not like SIGKILL), resume."""
    raw = make_run(tmp_path, overrides={"stages.0.steps": 7, "train.checkpoint_every": 2})
    trainer = Trainer(load_config(raw=raw))
    original = trainer.train_step

    def step_then_maybe_stop(batch):
        result = original(batch)
        if trainer.progress.global_step + 1 == stop_after:
            if save:
                trainer._stop_signal = signal.SIGTERM
            else:
                raise KeyboardInterrupt("simulated kill")
        return result

    trainer.train_step = step_then_maybe_stop
    with pytest.raises(TrainingInterrupted if save else KeyboardInterrupt):
        trainer.run()
    Trainer(load_config(raw=raw), resume=True).run()
    return weights(tmp_path / "run" / "model.pt")


@pytest.mark.parametrize("save", [True, False], ids=["sigterm", "sigkill"])
def test_resume_reaches_the_weights_of_an_uninterrupted_run(tmp_path, save):
    reference_dir, interrupted_dir = tmp_path / "reference", tmp_path / "interrupted"
    reference_dir.mkdir(), interrupted_dir.mkdir()
    raw = make_run(reference_dir, overrides={"stages.0.steps": 7, "train.checkpoint_every": 2})
    Trainer(load_config(raw=raw)).run()
    reference = weights(reference_dir / "run" / "model.pt")
    resumed = interrupted_then_resumed(interrupted_dir, stop_after=5, save=save)
    assert_same_weights(reference, resumed)


def test_cli_run_is_killed_mid_epoch_and_resumed(tmp_path):
    raw = make_run(tmp_path, overrides={"stages.0.steps": 40, "train.checkpoint_every": 1})
    config = write_config(raw, tmp_path / "run.yaml")
    process = subprocess.Popen([sys.executable, "-m", "sevenomni.cli", "train", str(config)], stderr=subprocess.PIPE)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    for _ in range(600):
        if last.exists() and torch.load(last, weights_only=True)["progress"]["global_step"] >= 3:
            break
        if process.poll() is not None:
            break
        import time

        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr.decode()
    assert b"resume with --resume" in stderr
    step = torch.load(last, weights_only=True)["progress"]["global_step"]
    assert 3 <= step < 40
    result = subprocess.run(
        [sys.executable, "-m", "sevenomni.cli", "train", "--resume", str(tmp_path / "run")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert torch.load(last, weights_only=True)["progress"]["global_step"] == 40
    assert "final validation" in result.stdout


# ---------------------------------------------------------------------------- the real thing
def test_two_task_cli_run_lowers_validation_force_error_threefold(tmp_path):
    """Crystals at GFN1 and molecules at GFN2 from the bundled data, trained from the CLI.

    The validation force MAE (the mean over databases on their own channels, the run's
    ``best_metric``) must fall at least threefold from the initial model, and each database's
    error must fall by at least a third.
    """
    raw = make_run(
        tmp_path,
        count=40,
        crystals=["Si_diamond", "SiC_3C", "C_diamond"],
        molecules=["H2O", "NH3", "C2H4", "HCN"],
        overrides={
            "model": {"channels": 16, "lmax": 1, "num_layers": 2, "cutoff": 4.0, "radial_mlp": [16],
                      "self_connection": "linear", "dtype": "float32"},
            "train.optimizer.lr": 0.02,
            "train.schedule": {"kind": "cosine", "warmup_steps": 5, "final_lr_ratio": 0.1},
            "train.checkpoint_every": 200,
            "stages.0.steps": 800,
        },
    )
    config = write_config(raw, tmp_path / "run.yaml")
    result = subprocess.run(
        [sys.executable, "-m", "sevenomni.cli", "train", str(config)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"

    def forces(name):
        with open(run / f"{name}.csv") as handle:
            return {row["database"]: float(row["forces_mae"]) for row in csv.DictReader(handle) if row["own"] == "True"}

    initial, final = forces("initial"), forces("final")
    assert set(initial) == set(final) == {"crystal", "molecule"}
    assert np.mean(list(final.values())) * 3 <= np.mean(list(initial.values())), (initial, final)
    for database in initial:
        assert final[database] * 1.5 <= initial[database], (database, initial[database], final[database])
    assert load_model(run / "model.pt").tasks == ["gfn1", "gfn2"]
    assert "final validation" in result.stdout


def test_databases_whose_tasks_differ_only_in_case_train_one_task(tmp_path):
    raw = make_run(tmp_path, overrides={"data.databases.1.task": "GFN1", "stages.0.steps": 1})
    config = load_config(raw=raw)
    assert config.tasks == ["gfn1"]  # the first spelling, as Tasks keeps it everywhere
    trainer = Trainer(config)
    assert trainer.model.tasks == ["gfn1"] and {d.task_index for d in trainer.databases} == {0}
