"""Optimizers, learning-rate schedules and an exponential moving average of the weights."""

from __future__ import annotations

import contextlib
import math

import torch

from sevenomni.nn import parameter_roles
from sevenomni.train.config_sections import OptimizerSection, ScheduleSection


def build_optimizer(model: torch.nn.Module, config: OptimizerSection) -> torch.optim.Optimizer:
    """Adam or AdamW; weight decay (if any) applies to shared parameters only.

    Task parameters sit in their own group so that the explicit selective penalty stays the
    only regularization they see.
    """
    trainable = [(p, role) for _, p, role in parameter_roles(model) if p.requires_grad]
    shared = [p for p, role in trainable if not role.task_specific]
    task = [p for p, role in trainable if role.task_specific]
    groups = [
        {"params": shared, "weight_decay": config.weight_decay, "name": "shared"},
        {"params": task, "weight_decay": 0.0, "name": "task"},
    ]
    optimizer_class = torch.optim.AdamW if config.kind == "adamw" else torch.optim.Adam
    return optimizer_class(groups, lr=config.lr)


class LearningRateSchedule:
    """Warmup, then constant / cosine / linear decay over a stage, or reduce-on-plateau.

    Hand-written, not ``torch.optim.lr_scheduler``, for two reasons. (1) Same numbers: torch's
    ``LambdaLR`` computes ``base_lr * factor``, which for the warmup ramp differs in the last bit
    from ``base_lr * (step + 1) / (warmup + 1)`` (27 of the 50 warmup steps of the ablation
    recipes), so every run trained so far would change; ``CosineAnnealingLR`` is recursive and
    drifts from the closed form. (2) ``ReduceLROnPlateau`` writes the learning rate itself and
    cannot follow a warmup (``SequentialLR`` does not accept it). The state is plain data
    (``state_dict``), so a resumed run continues exactly.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, config: ScheduleSection, base_lr: float, total_steps: int):
        self.optimizer, self.config = optimizer, config
        self.base_lr, self.total_steps = base_lr, max(total_steps, 1)
        self.step_count = 0
        self.plateau_scale, self.best, self.bad_epochs = 1.0, math.inf, 0
        self._apply()

    def lr(self) -> float:
        config, step = self.config, self.step_count
        if step < config.warmup_steps:
            return self.base_lr * (step + 1) / (config.warmup_steps + 1)
        progress = min((step - config.warmup_steps) / max(self.total_steps - config.warmup_steps, 1), 1.0)
        final = config.final_lr_ratio
        if config.kind == "cosine":
            factor = final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress))
        elif config.kind == "linear":
            factor = 1 - (1 - final) * progress
        elif config.kind == "plateau":
            factor = self.plateau_scale
        else:
            factor = 1.0
        return self.base_lr * factor

    def _apply(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr()

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def observe(self, metric: float) -> None:
        """Feed a validation metric (used by ``plateau`` only)."""
        if self.config.kind != "plateau" or not math.isfinite(metric):
            return
        if metric < self.best:
            self.best, self.bad_epochs = metric, 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs > self.config.plateau_patience:
                self.plateau_scale *= self.config.plateau_factor
                self.bad_epochs = 0
        self._apply()

    def state_dict(self) -> dict:
        return {
            "step_count": self.step_count,
            "plateau_scale": self.plateau_scale,
            "best": self.best,
            "bad_epochs": self.bad_epochs,
        }

    def load_state_dict(self, state: dict) -> None:
        self.step_count = state["step_count"]
        self.plateau_scale, self.best, self.bad_epochs = state["plateau_scale"], state["best"], state["bad_epochs"]
        self._apply()


class ExponentialMovingAverage:
    """Shadow weights w̄ ← d·w̄ + (1-d)·w, swapped in for validation and export.

    Not ``torch.optim.swa_utils.AveragedModel``: its first update copies the weights instead of
    averaging them (different numbers from every EMA run trained so far), and it keeps a deep copy
    of the whole module (tensor-product backends, compiled graphs) where only the parameters are
    averaged. The update itself is torch's fused ``lerp_``, as in ``get_ema_multi_avg_fn``.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.model, self.decay = model, decay
        self.shadow = [p.detach().clone() for p in model.parameters()]

    @torch.no_grad()
    def update(self) -> None:
        for shadow, parameter in zip(self.shadow, self.model.parameters()):
            shadow.lerp_(parameter.detach(), 1.0 - self.decay)

    @contextlib.contextmanager
    def applied(self):
        """Temporarily load the averaged weights into the model."""
        saved = [p.detach().clone() for p in self.model.parameters()]
        with torch.no_grad():
            for parameter, shadow in zip(self.model.parameters(), self.shadow):
                parameter.copy_(shadow)
        try:
            yield
        finally:
            with torch.no_grad():
                for parameter, value in zip(self.model.parameters(), saved):
                    parameter.copy_(value)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": [s.clone() for s in self.shadow]}

    def load_state_dict(self, state: dict) -> None:
        self.decay = state["decay"]
        self.shadow = [s.to(p.device, p.dtype).clone() for s, p in zip(state["shadow"], self.model.parameters())]
