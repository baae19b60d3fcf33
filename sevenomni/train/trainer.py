"""The training loop: stages of a curriculum over databases, checkpointed and resumable."""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from sevenomni.core.devices import use_tf32
from sevenomni.core.keys import LABELS
from sevenomni.core.logs import FILE_ONLY, log_to_file
from sevenomni.core.version import __version__
from sevenomni.data.sources import Database, open_databases
from sevenomni.model_io.checkpoint import TRAINING_STATE_FORMAT, atomic_save, read_training_state, save_checkpoint
from sevenomni.nn import ModelConfig, SevenOmniModel
from sevenomni.train.config import RunConfig, save_config
from sevenomni.train.config_sections import StageSection
from sevenomni.train.curriculum import set_energy_references, start_on_common_pes
from sevenomni.train.data import stage_loader, stage_sampler
from sevenomni.train.distributed import DistributedContext, setup_distributed
from sevenomni.train.early_stopping import EarlyStopping
from sevenomni.train.loss import EnergyForceStressLoss
from sevenomni.train.metric_log import MetricsLogger
from sevenomni.train.optim import ExponentialMovingAverage, LearningRateSchedule, build_optimizer
from sevenomni.train.regularization import FunctionSpacePenalty, WeightPenalty
from sevenomni.train.report import (
    final_table,
    progress_line,
    stage_start_line,
    start_up_summary,
    validation_line,
)
from sevenomni.train.run_directory import entries, locked_run_directory, remove_created, resume_checkpoint
from sevenomni.train.setup import (
    build_model,
    freeze,
    run_tasks,
    starting_model,
    trained_task_indices,
    with_data_elements,
)
from sevenomni.train.state import TrainingProgress, capture_rng, restore_rng, seed_everything
from sevenomni.train.step import OptimizerStep
from sevenomni.train.validation import validation_rows

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """Too many consecutive non-finite losses or gradients."""


class TrainingInterrupted(RuntimeError):
    """SIGTERM/SIGINT arrived; the state was saved and the run can be resumed."""


class Trainer:
    """Runs a :class:`RunConfig`: data, model, stages, validation, checkpoints and logs.

    From construction to the end of :meth:`run`, rank 0 holds the run directory (see
    :func:`locked_run_directory`: an earlier run in it needs ``resume`` or ``overwrite``) and
    writes the ``sevenomni`` log to its ``train.log``. ``trust_pickle`` lets ``model.init_from``
    unpickle a SevenNet checkpoint fully (see :func:`sevenomni.load_model`). A resumed run reads
    ``checkpoints/last.pt``, unless the caller passes the state it has read already (``state``).
    A fresh run that fails before its first optimisation step removes what it wrote (config,
    log, metrics; never a checkpoint or a file that was there before), so the corrected config
    can start in the same directory.
    """

    def __init__(
        self,
        config: RunConfig,
        resume: bool = False,
        overwrite: bool = False,
        trust_pickle: bool = False,
        state: dict[str, Any] | None = None,
    ):
        self.config = config
        self.run_dir = Path(config.train.run_dir)
        if config.train.threads is not None:
            torch.set_num_threads(config.train.threads)
        self.ctx: DistributedContext = setup_distributed(config.train.device)
        self.device = self.ctx.device
        self._held = contextlib.ExitStack()  # the run directory's lock and train.log, released by run()
        self._failed_before_step_0 = False
        try:
            if self.ctx.is_main:
                self._held.enter_context(locked_run_directory(self.run_dir, resume, overwrite))
                if not resume:  # runs after train.log is closed, before the lock is released
                    self._held.callback(self._remove_if_never_trained, entries(self.run_dir))
                self._held.enter_context(log_to_file(self.run_dir / "train.log"))
            self.ctx.barrier()
            self._set_up(resume, trust_pickle, state)
            if self.ctx.is_main:  # only once the run can start: a failed start leaves the directory as it was
                save_config(config, self.run_dir / "config.yaml")
        except BaseException:
            self._failed_before_step_0 = True
            self._held.close()
            raise

    def _remove_if_never_trained(self, before: set[str]) -> None:
        if self._failed_before_step_0 and not (self.run_dir / "checkpoints" / "last.pt").exists():
            removed = remove_created(self.run_dir, before)
            if removed:
                log.info("the run failed before its first step: removed %s", ", ".join(p.name for p in removed))

    def _set_up(self, resume: bool, trust_pickle: bool, state: dict[str, Any] | None) -> None:
        config = self.config
        seed_everything(config.train.seed)
        start = starting_model(config, trust_pickle)
        trained_before = [] if start is None else start.tasks.as_list()  # never re-introduced
        self.tasks = run_tasks(config, start)
        cutoff = config.model.cutoff if start is None else start.cutoff
        self.databases = open_databases(
            config.data.databases, self.tasks, cutoff, config.data.cache_dir, config.trained_databases,
            create=self.ctx.is_main, barrier=self.ctx.barrier,
        )
        self.by_name = {d.spec.name: d for d in self.databases}
        self.added_elements: list[str] = []
        if start is not None and not resume:
            start, self.added_elements = with_data_elements(config, start, self.databases)
            if self.added_elements:
                self._say(f"model from {config.model.init_from} extended with element(s) {', '.join(self.added_elements)}")
        saved = (state or read_training_state(resume_checkpoint(self.run_dir))) if resume else None
        self.resumed = saved is not None
        if saved is not None:
            self.model = SevenOmniModel(ModelConfig(**saved["model_config"]))
        else:
            self.model = build_model(config, self.tasks, self.databases, start)
        self.model.to(self.device).set_tp_backend(config.model.tp_backend).set_compiled(config.train.compile)
        self.model.set_radial_precision(config.train.radial_precision)
        use_tf32(config.train.tf32)
        freeze(self.model, config.train.freeze)
        self.optimizer = build_optimizer(self.model, config.train.optimizer)
        self.penalty = WeightPenalty(
            self.model,
            config.train.regularization.mode,
            config.train.regularization.strength,
            tasks=trained_task_indices(self.tasks, config),
        )
        weights = torch.tensor(
            [[d.spec.loss_weights.get(k, 1.0) for k in LABELS] for d in self.databases], dtype=self.model.dtype
        )
        self.loss = EnergyForceStressLoss(config.train.loss, weights)
        self.ema = ExponentialMovingAverage(self.model, config.train.ema_decay) if config.train.ema_decay else None
        strength = config.train.regularization.function_space
        function_space = FunctionSpacePenalty(strength) if strength > 0 else None
        self.train_step = OptimizerStep(
            self.model, self.loss, self.penalty, function_space, self.optimizer, self.ema, self.ctx, config.train
        )
        self.logger = MetricsLogger(
            self.run_dir, config.train.wandb, config.model_dump(mode="json"), enabled=self.ctx.is_main
        )
        self.progress = TrainingProgress(introduced=trained_before)
        self._last_validation: tuple[int, list[dict[str, Any]]] | None = None  # (step, rows), reused by _finish
        self.schedule: LearningRateSchedule | None = None
        self._saved_schedule: dict | None = None  # a resumed run's schedule state, loaded by its stage
        self._stop_signal: int | None = None
        settings = config.train.early_stopping
        self.early_stopping = EarlyStopping(settings, config.train.early_stopping_metric) if settings else None
        if saved is not None:
            self._load_state(saved)
            self.logger.rewind(self.progress.global_step)

    # ------------------------------------------------------------------ state
    def _state(self) -> dict[str, Any]:
        return {
            "format": TRAINING_STATE_FORMAT,
            "model": self.model.state_dict(),
            "model_config": self.model.config.model_dump(mode="json"),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict() if self.schedule else None,
            "ema": self.ema.state_dict() if self.ema else None,
            "rng": capture_rng(),
            "config": self.config.model_dump(mode="json"),
            "progress": self.progress.as_dict(),
        }

    def save_state(self, name: str) -> None:
        if self.ctx.is_main:
            atomic_save(self._state(), self.run_dir / "checkpoints" / f"{name}.pt")

    def _load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        self.progress = TrainingProgress.from_dict(state["progress"])
        self._saved_schedule = state["schedule"]
        restore_rng(state["rng"])

    # ------------------------------------------------------------------ curriculum
    def _introduce_tasks(self, stage: StageSection) -> None:
        """New tasks of a stage start on the common PES with their energy references: fitted by
        regression (``energy_references: fit``) or given (isolated atoms, or per element)."""
        for name in stage.databases:
            database = self.by_name[name]
            task = self.tasks[database.task_index]
            if task in self.progress.introduced:
                continue
            own = [self.by_name[n] for n in stage.databases if self.by_name[n].task_index == database.task_index]
            start_on_common_pes(self.model, database.task_index)
            self._set_energy_references(database.task_index, own, refit=False)
            self.progress.introduced.append(task)

    def _refit_fine_tuned_tasks(self) -> None:
        """Fine-tuning into tasks the starting model has: set their energy references from this
        run's data (refit by regression unless given), or keep the checkpoint's
        (``train.finetune.keep_energy_shifts``, or a ``train.freeze`` that leaves the shifts fixed)."""
        if self.config.model.init_from is None:
            return
        trained = self.config.trained_databases
        for task_index, task in enumerate(self.tasks):
            own = [d for d in self.databases if d.task_index == task_index and d.spec.name in trained]
            if task not in self.progress.introduced or not own:
                continue  # a new task (introduced by its stage), or one this run does not train
            frozen = not self.model.energy_shift.weight.requires_grad  # train.freeze keeps them as they are
            if self.config.train.finetune.keep_energy_shifts or frozen:
                why = "train.freeze" if frozen else "train.finetune.keep_energy_shifts"
                self._say(f"task {task}: energy shifts kept from {self.config.model.init_from} ({why})")
                if self.added_elements:  # the elements just added have none to keep
                    self._set_energy_references(task_index, own, refit=True, elements=self.added_elements)
            else:
                self._set_energy_references(task_index, own, refit=True)

    def _set_energy_references(
        self, task_index: int, own: list[Database], refit: bool, elements: list[str] | None = None
    ) -> None:
        set_energy_references(
            self.model, self.tasks[task_index], task_index, own, self._say, sample=self.config.data.statistics_sample,
            seed=self.config.train.seed, device=self.device, refit=refit, elements=elements,
        )

    def _stage_length(self, stage: StageSection, batches_per_epoch: int) -> int:
        return stage.steps if stage.steps is not None else stage.epochs * batches_per_epoch

    def _handle_signal(self, signum, frame) -> None:
        self._stop_signal = signum

    def _say(self, message: str, level: int = logging.INFO, **kwargs) -> None:
        """Log on rank 0 only (every rank takes the same steps)."""
        if self.ctx.is_main:
            log.log(level, message, **kwargs)

    def run(self) -> SevenOmniModel:
        previous = {s: signal.signal(s, self._handle_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self._say_start()
            if not self.resumed:
                self._refit_fine_tuned_tasks()
                self._introduce_tasks(self.config.stages[0])
                if self.ctx.is_main:
                    rows = self.validation_metrics()
                    for row in rows:
                        self.logger.log("initial", row, 0)
                    self._say(validation_line("initial validation (step 0)", rows))
            while self.progress.stage_index < len(self.config.stages):
                self._run_stage(self.config.stages[self.progress.stage_index])
            self._finish()
        except BaseException as error:
            # The command line shows the error; train.log keeps it too.
            self._say(f"{type(error).__name__}: {error}", logging.ERROR, extra=FILE_ONLY)
            self._failed_before_step_0 = self.progress.global_step == 0
            raise
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            self.logger.close()
            self._held.close()
        return self.model

    def _say_start(self) -> None:
        if self.resumed:
            stage = self.config.stages[min(self.progress.stage_index, len(self.config.stages) - 1)].name
            self._say(f"sevenomni {__version__}: resuming {self.run_dir} at step {self.progress.global_step} (stage {stage})")
        else:
            self._say(f"sevenomni {__version__}: training into {self.run_dir}")
        summary = start_up_summary(
            self.model, self.databases, self.device, self.ctx.world_size, self.config.train.loss,
            self.config.stress_trained,
        )
        for line in summary:
            self._say(line)

    def _run_stage(self, stage: StageSection) -> None:
        config = self.config.train
        databases = [self.by_name[name] for name in stage.databases]
        if self.progress.stage_step == 0:
            self._introduce_tasks(stage)
        sampler = stage_sampler(databases, stage.ratios, self.config.data.sampling)
        length = self._stage_length(stage, len(sampler))
        lr = stage.lr or config.optimizer.lr
        self.schedule = LearningRateSchedule(self.optimizer, stage.schedule or config.schedule, lr, length)
        if self._saved_schedule is not None:
            self.schedule.load_state_dict(self._saved_schedule)
            self._saved_schedule = None
        self.loss.config = self.config.stage_loss(stage)
        self._say(stage_start_line(stage.name, stage.databases, self.progress.stage_step, length, lr, self.loss.config))
        # A bar on a terminal; elsewhere (a batch job's log) a line every tenth of the stage.
        bar = self.ctx.is_main and config.progress_bar and sys.stderr.isatty()
        progress = tqdm(total=length, initial=self.progress.stage_step, desc=f"stage {stage.name}", disable=not bar, dynamic_ncols=True)
        report_every = max(1, length // 10)
        started, start_step = time.perf_counter(), self.progress.stage_step
        while self.progress.stage_step < length and not self._stage_stalled():
            sampler.set_epoch(self.progress.epoch)
            sampler.load_state_dict({"epoch": self.progress.epoch, "position": self.progress.batches_in_epoch})
            for batch in stage_loader(databases, sampler, self.ctx, self.config.data.num_workers):
                logged = self.train_step(batch)
                self.progress.batches_in_epoch += 1
                if logged is None:
                    self.progress.bad_steps += 1
                    self.progress.skipped_steps += 1
                    if self.progress.skipped_steps & (self.progress.skipped_steps - 1) == 0:  # warn at 1, 2, 4, 8, ... skips
                        self._say(
                            f"stage {stage.name!r}, step {self.progress.global_step + 1}: non-finite loss or gradient, "
                            f"step skipped ({self.progress.skipped_steps} skipped so far, {self.progress.bad_steps} in a row; "
                            f"next warning at {2 * self.progress.skipped_steps})",
                            logging.WARNING,
                        )
                    if self.progress.bad_steps >= config.max_bad_steps:
                        last = self.run_dir / "checkpoints" / "last.pt"
                        saved = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was saved yet"
                        raise TrainingDiverged(
                            f"{self.progress.bad_steps} consecutive steps had a non-finite loss or gradient "
                            f"(stage {stage.name!r}, step {self.progress.global_step}); {saved}. "
                            "Lower the learning rate or check the data."
                        )
                else:
                    self.progress.bad_steps = 0
                    self.progress.stage_step += 1
                    self.progress.global_step += 1
                    self.schedule.step()
                    progress.update(1)
                    progress.set_postfix(loss=f"{logged['loss']:.4g}", refresh=False)
                    if not bar and (self.progress.stage_step % report_every == 0 or self.progress.stage_step == length):
                        seconds = (time.perf_counter() - started) / (self.progress.stage_step - start_step)
                        self._say(progress_line(stage.name, self.progress.stage_step, length, logged["loss"], seconds))
                    row = {"stage": stage.name, "epoch": self.progress.epoch, **logged, "skipped_steps": self.progress.skipped_steps}
                    self.logger.log("train", row, self.progress.global_step)
                    if config.validate_every and self.progress.global_step % config.validate_every == 0:
                        self._validate(stage)
                    if self.progress.global_step % config.checkpoint_every == 0:
                        self.save_state("last")
                    if self._stage_stalled():
                        break
                if self._stop_signal is not None:
                    self.save_state("last")
                    raise TrainingInterrupted(
                        f"stopped by signal {self._stop_signal} at step {self.progress.global_step}; "
                        f"resume with --resume {self.run_dir}"
                    )
                if self.progress.stage_step >= length:
                    break
            else:
                self.progress.epoch += 1
                self.progress.batches_in_epoch = 0
                if not config.validate_every:
                    self._validate(stage)
        progress.close()
        if self._stage_stalled():
            self._say(self.early_stopping.message(stage.name, self.progress.global_step))
        if not config.validate_every or self.progress.global_step % config.validate_every:
            self._validate(stage)
        self.progress.next_stage()
        self.save_state("last")
        self.save_state(f"stage-{self.progress.stage_index}-{stage.name}")

    # ------------------------------------------------------------------ validation
    def validation_metrics(self) -> list[dict[str, Any]]:
        """Metrics for every database's validation split on its own channel (and all, if asked)."""
        with self._exported_weights():
            return validation_rows(
                self.model, self.databases, self.tasks, self.progress.introduced,
                self.config.train.validation_channels, self.device,
            )

    def _stage_stalled(self) -> bool:
        """Whether early stopping ends the stage now (its counter agrees on every rank)."""
        return self.early_stopping is not None and self.early_stopping.exhausted(self.progress.stage_improvement)

    def _score(self, rows: list[dict[str, Any]], metric: str) -> float | None:
        """The validation score: ``metric``'s mean over the own channels of trained databases (never
        evaluation-only test sets); None where none of them has a finite value."""
        trained = self.config.trained_databases
        own = [row[metric] for row in rows if row["own"] and row["database"] in trained]
        own = [value for value in own if math.isfinite(value)]
        return float(np.mean(own)) if own else None

    def _validate(self, stage: StageSection) -> None:
        improvement = self.progress.stage_improvement
        if self.ctx.is_main:
            rows = self.validation_metrics()
            self._last_validation = (self.progress.global_step, rows)
            for row in rows:
                self.logger.log("validation", {"stage": stage.name, "epoch": self.progress.epoch, **row}, self.progress.global_step)
            if self.early_stopping is not None:
                score = self._score(rows, self.early_stopping.metric)
                if score is not None:
                    self.early_stopping.observe(improvement, score)
            metric = self._score(rows, self.config.train.best_metric)
            best = ""
            if metric is not None:
                if self.schedule is not None:
                    self.schedule.observe(metric)
                if metric < self.progress.best_metric:
                    self.progress.best_metric = metric
                    self.save_state("best")
                    self._export(self.run_dir / "model_best.pt")
                    best = " (best so far: model_best.pt)"
            self._say(validation_line(f"validation at step {self.progress.global_step}", rows) + best)
        if self.early_stopping is not None:  # rank 0 counted; every rank must end the stage with it
            stale = torch.tensor([float(improvement.stale if self.ctx.is_main else 0)], device=self.device)
            improvement.stale = int(self.ctx.all_sum(stale).item())
        self.ctx.barrier()

    def _exported_weights(self) -> contextlib.AbstractContextManager:
        """The weights that validate and are exported: the EMA's, if enabled."""
        return self.ema.applied() if self.ema is not None else contextlib.nullcontext()

    def _export(self, path: Path) -> None:
        with self._exported_weights():
            save_checkpoint(self.model, path, global_step=self.progress.global_step)

    def _finish(self) -> None:
        """Export the final model (EMA weights if enabled), the final metrics and the training curves."""
        if not self.ctx.is_main:
            self.ctx.barrier()
            return
        self._export(self.run_dir / "model.pt")
        last = self._last_validation
        rows = last[1] if last is not None and last[0] == self.progress.global_step else self.validation_metrics()
        for row in rows:
            self.logger.log("final", row, self.progress.global_step)
        self.final_metrics = rows
        for line in final_table(rows, self.run_dir / "model.pt", self.config.stress_trained):
            self._say(line)
        self._say(f"skipped steps (non-finite loss or gradient): {self.progress.skipped_steps}")
        from sevenomni.analysis.plots import write_run_plot  # a figure of the metrics just written

        self._say(f"training curves: {write_run_plot(self.run_dir, tasks=self.tasks)}")
        self.ctx.barrier()
