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

from sevenomni.checkpoint import TRAINING_STATE_FORMAT, atomic_save, read_training_state, save_checkpoint
from sevenomni.data.statistics import average_num_neighbors, force_rms
from sevenomni.keys import ENERGY, FORCES, STRESS
from sevenomni.loading import load_model
from sevenomni.logs import FILE_ONLY, log_to_file
from sevenomni.nn import ModelConfig, SevenOmniModel
from sevenomni.train.config import RunConfig, StageSection, save_config
from sevenomni.train.curriculum import fit_task_shift, reset_task_embedding
from sevenomni.train.data import build_databases, plain_loader, stage_loader, stage_sampler
from sevenomni.train.distributed import DistributedContext, setup_distributed
from sevenomni.train.logger import MetricsLogger
from sevenomni.train.loss import EnergyForceStressLoss
from sevenomni.train.optim import ExponentialMovingAverage, LearningRateSchedule, build_optimizer
from sevenomni.train.regularization import WeightPenalty, task_embedding_norm
from sevenomni.train.report import energy_shift_line, final_table, progress_line, start_up_summary, validation_line
from sevenomni.train.run_directory import locked_run_directory
from sevenomni.train.state import capture_rng, restore_rng, seed_everything
from sevenomni.version import __version__

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
        try:
            if self.ctx.is_main:
                self._held.enter_context(locked_run_directory(self.run_dir, resume, overwrite))
                self._held.enter_context(log_to_file(self.run_dir / "train.log"))
            self.ctx.barrier()
            self._set_up(resume, trust_pickle, state)
            if self.ctx.is_main:  # only once the run can start: a failed start leaves the directory as it was
                save_config(config, self.run_dir / "config.yaml")
        except BaseException:
            self._held.close()
            raise

    def _set_up(self, resume: bool, trust_pickle: bool, state: dict[str, Any] | None) -> None:
        config = self.config
        seed_everything(config.train.seed)
        # A run started from a checkpoint keeps its tasks (already trained: never re-introduced)
        # and appends the data's new ones; task indices are the model's, not the config's.
        init_from = config.model.init_from
        self._initial = load_model(init_from, trust_pickle=trust_pickle) if init_from else None
        known = [] if self._initial is None else self._initial.tasks
        self.tasks = known + [t for t in config.tasks if t.lower() not in [k.lower() for k in known]]
        cutoff = self._cutoff()
        trained = {name for stage in config.stages for name in stage.databases}
        self.databases = build_databases(
            config.data.databases, self.tasks, cutoff, Path(config.data.cache_dir), self.ctx, trained
        )
        self.by_name = {d.spec.name: d for d in self.databases}
        saved = (state or read_training_state(self.run_dir / "checkpoints" / "last.pt")) if resume else None
        self.resumed = saved is not None
        if saved is not None:
            self.model = SevenOmniModel(ModelConfig(**saved["model_config"])).to(self.device)
        else:
            self.model = self._build_model(cutoff).to(self.device)
        self._initial = None
        self.model.set_tp_backend(config.model.tp_backend).set_compiled(config.train.compile)
        if config.train.freeze == "shared":
            for _, parameter in self.model.shared_parameters():
                parameter.requires_grad_(False)
        self.optimizer = build_optimizer(self.model, config.train.optimizer)
        trained_tasks = [self.tasks.index(t) for t in self.tasks if t.lower() in [c.lower() for c in config.tasks]]
        self.penalty = WeightPenalty(
            self.model,
            config.train.regularization.mode,
            config.train.regularization.strength,
            tasks=None if len(trained_tasks) == len(self.tasks) else trained_tasks,
        )
        weights = torch.tensor(
            [[d.spec.loss_weights.get(k, 1.0) for k in (ENERGY, FORCES, STRESS)] for d in self.databases],
            dtype=self.model.dtype,
        )
        self.loss = EnergyForceStressLoss(config.train.loss, weights)
        self.ema = ExponentialMovingAverage(self.model, config.train.ema_decay) if config.train.ema_decay else None
        self.logger = MetricsLogger(
            self.run_dir, config.train.wandb, config.model_dump(mode="json"), enabled=self.ctx.is_main
        )
        # Progress through the curriculum.
        self.stage_index, self.stage_step, self.global_step = 0, 0, 0
        self.epoch, self.batches_in_epoch = 0, 0
        self.introduced: list[str] = list(known)
        self.bad_steps, self.skipped_steps = 0, 0
        self.best_metric = math.inf
        self._last_validation: tuple[int, list[dict[str, Any]]] | None = None  # (step, rows), reused by _finish
        self.schedule: LearningRateSchedule | None = None
        self._stop_signal: int | None = None
        if saved is not None:
            self._load_state(saved)
            self.logger.rewind(self.global_step)

    # ------------------------------------------------------------------ setup
    def _cutoff(self) -> float:
        if self._initial is not None:
            return self._initial.cutoff
        return self.config.model.cutoff

    def _build_model(self, cutoff: float) -> SevenOmniModel:
        section = self.config.model
        if self._initial is not None:
            model, self._initial = self._initial, None
            for task in self.tasks[len(model.tasks) :]:
                model.append_task(task)
            return model.train()
        elements = section.elements or self._data_elements()
        hyper = section.model_dump(exclude={"elements", "init_from", "avg_num_neighbors"})
        avg = section.avg_num_neighbors
        if avg == "auto":
            avg = self._statistic(average_num_neighbors, cutoff)
        model = SevenOmniModel(ModelConfig(tasks=self.tasks, elements=elements, avg_num_neighbors=avg, **hyper))
        rms = self._statistic(force_rms)
        if rms > 0:
            with torch.no_grad():
                model.energy_scale.weight.fill_(rms)
        return model.train()

    def _data_elements(self) -> list[str]:
        elements: set[str] = set()
        for database in self.databases:
            elements |= set(database.train.elements)
        return sorted(elements)

    def _statistic(self, function, *args) -> float:
        """A statistic over a seeded subsample of the first stage's training data."""
        first = [self.by_name[name].train for name in self.config.stages[0].databases]
        return float(function(first, *args, sample=self.config.data.statistics_sample, seed=self.config.train.seed))

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
            "progress": {
                "stage_index": self.stage_index,
                "stage_step": self.stage_step,
                "global_step": self.global_step,
                "epoch": self.epoch,
                "batches_in_epoch": self.batches_in_epoch,
                "introduced": list(self.introduced),
                "bad_steps": self.bad_steps,
                "skipped_steps": self.skipped_steps,
                "best_metric": self.best_metric,
            },
        }

    def save_state(self, name: str) -> None:
        if self.ctx.is_main:
            atomic_save(self._state(), self.run_dir / "checkpoints" / f"{name}.pt")

    def _load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        progress = state["progress"]
        self.stage_index, self.stage_step = progress["stage_index"], progress["stage_step"]
        self.global_step, self.epoch = progress["global_step"], progress["epoch"]
        self.batches_in_epoch, self.introduced = progress["batches_in_epoch"], progress["introduced"]
        self.bad_steps, self.skipped_steps = progress["bad_steps"], progress["skipped_steps"]
        self.best_metric = progress["best_metric"]
        self._resumed_schedule = state["schedule"]
        restore_rng(state["rng"])

    # ------------------------------------------------------------------ curriculum
    def _introduce_tasks(self, stage: StageSection) -> None:
        """New tasks of a stage start on the common PES with regression-fitted shifts."""
        for name in stage.databases:
            database = self.by_name[name]
            task = self.tasks[database.task_index]
            if task in self.introduced:
                continue
            own = [self.by_name[n].train for n in stage.databases if self.by_name[n].task_index == database.task_index]
            reset_task_embedding(self.model, database.task_index)
            subset = torch.utils.data.ConcatDataset(own)
            count = min(len(subset), self.config.data.statistics_sample)
            indices = np.random.default_rng(self.config.train.seed).choice(len(subset), count, replace=False)
            loader = plain_loader(torch.utils.data.Subset(subset, np.sort(indices)), batch_size=16)
            shifts = fit_task_shift(self.model, loader, database.task_index, self.device)
            self.introduced.append(task)
            self._say(energy_shift_line(task, self.model.elements, shifts, count))

    def _stage_length(self, stage: StageSection, batches_per_epoch: int) -> int:
        return stage.steps if stage.steps is not None else stage.epochs * batches_per_epoch

    # ------------------------------------------------------------------ training
    def _train_step(self, batch) -> dict[str, float] | None:
        """One optimizer step; None if the loss or gradients were not finite (step skipped).

        ``batch`` is None on a rank with no share of the global batch: it still takes part in
        every collective (zero counts, only the penalty's gradient), so no rank waits forever.
        Every rank calls the same collectives in the same order with tensors on the training
        device, and all ranks agree to skip or to step.
        """
        model, config = self.model, self.config.train
        if batch is None:
            terms = self.loss.nothing(self.device, model.dtype)
        else:
            batch = batch.to(self.device)
            want_stress = config.loss.stress > 0 and bool(batch.has_stress.any())
            prediction = model(
                batch, compute_forces=config.loss.forces > 0, compute_stress=want_stress, create_graph=True
            )
            terms = self.loss(prediction, batch)
        counts = torch.stack([term.count for term in terms.values()]).detach().double()
        self.ctx.all_sum(counts)
        loss = self.penalty() / self.ctx.world_size
        logged = {}
        for (name, term), count in zip(terms.items(), counts.tolist()):
            contribution = term.total / max(count, 1.0)
            loss = loss + self.loss.term_weights[name] * contribution
            logged[f"loss_{name}"] = float(contribution.detach())
        self.optimizer.zero_grad(set_to_none=True)
        finite = torch.isfinite(loss.detach()).to(torch.float64).reshape(1)
        self.ctx.all_sum(finite)
        if finite.item() < self.ctx.world_size:
            return None
        if loss.requires_grad:
            loss.backward()
        trainable = [p for p in model.parameters() if p.requires_grad]
        self.ctx.sum_gradients(trainable)  # after it, every rank holds the same gradients
        if not all(bool(torch.isfinite(p.grad).all()) for p in trainable if p.grad is not None):
            self.optimizer.zero_grad(set_to_none=True)
            return None
        if config.optimizer.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.optimizer.grad_clip)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update()
        logged["loss"] = sum(self.loss.term_weights[k[5:]] * v for k, v in logged.items())
        logged["penalty"] = float(self.penalty().detach())
        logged["theta_t_norm"] = task_embedding_norm(model)
        logged["lr"] = self.optimizer.param_groups[0]["lr"]
        return logged

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
                self._introduce_tasks(self.config.stages[0])
                if self.ctx.is_main:
                    rows = self.validation_metrics()
                    for row in rows:
                        self.logger.log("initial", row, 0)
                    self._say(validation_line("initial validation (step 0)", rows))
            while self.stage_index < len(self.config.stages):
                self._run_stage(self.config.stages[self.stage_index])
            self._finish()
        except BaseException as error:
            # The command line shows the error; train.log keeps it too.
            self._say(f"{type(error).__name__}: {error}", logging.ERROR, extra=FILE_ONLY)
            raise
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            self.logger.close()
            self._held.close()
        return self.model

    def _say_start(self) -> None:
        if self.resumed:
            stage = self.config.stages[min(self.stage_index, len(self.config.stages) - 1)].name
            self._say(f"sevenomni {__version__}: resuming {self.run_dir} at step {self.global_step} (stage {stage})")
        else:
            self._say(f"sevenomni {__version__}: training into {self.run_dir}")
        for line in start_up_summary(self.model, self.databases, self.device, self.ctx.world_size):
            self._say(line)

    def _run_stage(self, stage: StageSection) -> None:
        config = self.config.train
        databases = [self.by_name[name] for name in stage.databases]
        if self.stage_step == 0:
            self._introduce_tasks(stage)
        sampler = stage_sampler(databases, stage.ratios, self.config.data.sampling)
        length = self._stage_length(stage, len(sampler))
        self.schedule = LearningRateSchedule(
            self.optimizer, stage.schedule or config.schedule, stage.lr or config.optimizer.lr, length
        )
        resumed = getattr(self, "_resumed_schedule", None)
        if resumed is not None:
            self.schedule.load_state_dict(resumed)
            self._resumed_schedule = None
        # A bar on a terminal; elsewhere (a batch job's log) a line every tenth of the stage.
        bar = self.ctx.is_main and config.progress_bar and sys.stderr.isatty()
        progress = tqdm(total=length, initial=self.stage_step, desc=f"stage {stage.name}", disable=not bar, dynamic_ncols=True)
        report_every = max(1, length // 10)
        started, start_step = time.perf_counter(), self.stage_step
        while self.stage_step < length:
            sampler.set_epoch(self.epoch)
            sampler.load_state_dict({"epoch": self.epoch, "position": self.batches_in_epoch})
            for batch in stage_loader(databases, sampler, self.ctx, self.config.data.num_workers):
                logged = self._train_step(batch)
                self.batches_in_epoch += 1
                if logged is None:
                    self.bad_steps += 1
                    self.skipped_steps += 1
                    if self.skipped_steps & (self.skipped_steps - 1) == 0:  # warn at 1, 2, 4, 8, ... skips
                        self._say(
                            f"stage {stage.name!r}, step {self.global_step + 1}: non-finite loss or gradient, "
                            f"step skipped ({self.skipped_steps} skipped so far, {self.bad_steps} in a row; "
                            f"next warning at {2 * self.skipped_steps})",
                            logging.WARNING,
                        )
                    if self.bad_steps >= config.max_bad_steps:
                        last = self.run_dir / "checkpoints" / "last.pt"
                        saved = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was saved yet"
                        raise TrainingDiverged(
                            f"{self.bad_steps} consecutive steps had a non-finite loss or gradient "
                            f"(stage {stage.name!r}, step {self.global_step}); {saved}. "
                            "Lower the learning rate or check the data."
                        )
                else:
                    self.bad_steps = 0
                    self.stage_step += 1
                    self.global_step += 1
                    self.schedule.step()
                    progress.update(1)
                    progress.set_postfix(loss=f"{logged['loss']:.4g}", refresh=False)
                    if not bar and (self.stage_step % report_every == 0 or self.stage_step == length):
                        seconds = (time.perf_counter() - started) / (self.stage_step - start_step)
                        self._say(progress_line(stage.name, self.stage_step, length, logged["loss"], seconds))
                    row = {"stage": stage.name, "epoch": self.epoch, **logged, "skipped_steps": self.skipped_steps}
                    self.logger.log("train", row, self.global_step)
                    if config.validate_every and self.global_step % config.validate_every == 0:
                        self._validate(stage)
                    if self.global_step % config.checkpoint_every == 0:
                        self.save_state("last")
                if self._stop_signal is not None:
                    self.save_state("last")
                    raise TrainingInterrupted(
                        f"stopped by signal {self._stop_signal} at step {self.global_step}; "
                        f"resume with --resume {self.run_dir}"
                    )
                if self.stage_step >= length:
                    break
            else:
                self.epoch += 1
                self.batches_in_epoch = 0
                if not config.validate_every:
                    self._validate(stage)
        progress.close()
        if not config.validate_every or self.global_step % config.validate_every:
            self._validate(stage)
        self.stage_index += 1
        self.stage_step, self.epoch, self.batches_in_epoch = 0, 0, 0
        self.save_state("last")
        self.save_state(f"stage-{self.stage_index}-{stage.name}")

    # ------------------------------------------------------------------ validation
    def validation_metrics(self) -> list[dict[str, Any]]:
        """Metrics for every database's validation split on its own channel (and all, if asked)."""
        from sevenomni.train.validation import evaluate

        rows = []
        with self._exported_weights():
            for database in self.databases:
                if database.valid is None or self.tasks[database.task_index] not in self.introduced:
                    continue
                channels: list[tuple[str | None, str | None]] = [(None, None)]
                if self.config.train.validation_channels == "all":
                    own = self.tasks[database.task_index]
                    channels += [(t, None) for t in self.introduced if t != own] + [("common", own)]
                for channel, shift_task in channels:
                    metrics = evaluate(
                        self.model, plain_loader(database.valid, batch_size=16), self.device, channel, shift_task
                    )
                    name = channel or self.tasks[database.task_index]
                    rows.append({"database": database.spec.name, "channel": name, "own": channel is None, **metrics})
        return rows

    def _validate(self, stage: StageSection) -> None:
        if self.ctx.is_main:
            rows = self.validation_metrics()
            self._last_validation = (self.global_step, rows)
            for row in rows:
                self.logger.log("validation", {"stage": stage.name, "epoch": self.epoch, **row}, self.global_step)
            own = [row[self.config.train.best_metric] for row in rows if row["own"]]
            own = [value for value in own if math.isfinite(value)]
            best = ""
            if own:
                metric = float(np.mean(own))
                if self.schedule is not None:
                    self.schedule.observe(metric)
                if metric < self.best_metric:
                    self.best_metric = metric
                    self.save_state("best")
                    self._export(self.run_dir / "model_best.pt")
                    best = " (best so far: model_best.pt)"
            self._say(validation_line(f"validation at step {self.global_step}", rows) + best)
        self.ctx.barrier()

    def _exported_weights(self) -> contextlib.AbstractContextManager:
        """The weights that validate and are exported: the EMA's, if enabled."""
        return self.ema.applied() if self.ema is not None else contextlib.nullcontext()

    def _export(self, path: Path) -> None:
        with self._exported_weights():
            save_checkpoint(self.model, path, global_step=self.global_step)

    def _finish(self) -> None:
        """Export the final model (EMA weights if enabled), the final metrics and the training curves."""
        if not self.ctx.is_main:
            self.ctx.barrier()
            return
        self._export(self.run_dir / "model.pt")
        last = self._last_validation
        rows = last[1] if last is not None and last[0] == self.global_step else self.validation_metrics()
        for row in rows:
            self.logger.log("final", row, self.global_step)
        self.final_metrics = rows
        for line in final_table(rows, self.run_dir / "model.pt"):
            self._say(line)
        self._say(f"skipped steps (non-finite loss or gradient): {self.skipped_steps}")
        from sevenomni.analysis.plots import write_run_plot  # a figure of the metrics just written

        self._say(f"training curves: {write_run_plot(self.run_dir)}")
        self.ctx.barrier()
