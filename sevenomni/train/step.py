"""One optimizer step of a (possibly multi-process) run: loss, penalty, agreement, update."""

from __future__ import annotations

import torch

from sevenomni.nn import SevenOmniModel
from sevenomni.train.config_sections import TrainSection
from sevenomni.train.distributed import DistributedContext
from sevenomni.train.loss import EnergyForceStressLoss
from sevenomni.train.optim import ExponentialMovingAverage
from sevenomni.train.regularization import FunctionSpacePenalty, WeightPenalty, task_embedding_norm


class OptimizerStep:
    """Call with a batch: one optimizer step; returns the logged values, or None if the loss or
    gradients were not finite (the step is skipped, the weights unchanged).

    ``batch`` is None on a rank with no share of the global batch: it still takes part in
    every collective (zero counts, only the penalty's gradient), so no rank waits forever.
    Every rank calls the same collectives in the same order with tensors on the training
    device, and all ranks agree to skip or to step.
    """

    def __init__(
        self,
        model: SevenOmniModel,
        loss: EnergyForceStressLoss,
        penalty: WeightPenalty,
        function_space: FunctionSpacePenalty | None,
        optimizer: torch.optim.Optimizer,
        ema: ExponentialMovingAverage | None,
        ctx: DistributedContext,
        settings: TrainSection,
    ):
        self.model, self.loss, self.penalty, self.optimizer = model, loss, penalty, optimizer
        self.function_space = function_space
        self.ema, self.ctx, self.settings = ema, ctx, settings

    @property
    def term_weights(self) -> dict[str, float]:
        """The weight of each loss term now (the loss's weights are its stage's)."""
        return {**self.loss.term_weights, **(self.function_space.term_weights if self.function_space else {})}

    def __call__(self, batch) -> dict[str, float] | None:
        model, config, device = self.model, self.settings, self.ctx.device
        weights = self.loss.config
        if batch is None:
            terms = self.loss.nothing(device, model.dtype)
            if self.function_space is not None:
                terms |= self.function_space.nothing(device, model.dtype)
        else:
            want_stress = weights.stress > 0 and bool(batch.has_stress.any())  # on the host: no sync
            batch = model.attach_species(batch).to(device)
            prediction = model(
                batch, compute_forces=weights.forces > 0, compute_stress=want_stress, create_graph=True
            )
            terms = self.loss(prediction, batch)
            if self.function_space is not None:
                terms |= self.function_space(model, batch, prediction)
        counts = torch.stack([term.count for term in terms.values()]).detach().double()
        self.ctx.all_sum(counts)
        loss = self.penalty() / self.ctx.world_size
        logged = {}
        term_weights = self.term_weights
        for (name, term), count in zip(terms.items(), counts.tolist()):
            contribution = term.total / max(count, 1.0)
            loss = loss + term_weights[name] * contribution
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
        logged["loss"] = sum(term_weights[k[5:]] * v for k, v in logged.items())
        logged["penalty"] = float(self.penalty().detach())
        logged["theta_t_norm"] = task_embedding_norm(model)
        logged["lr"] = self.optimizer.param_groups[0]["lr"]
        return logged
