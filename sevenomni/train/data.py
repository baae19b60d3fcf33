"""Per-stage loaders over a run's databases (opened by :func:`sevenomni.data.sources.open_databases`)."""

from __future__ import annotations

import torch
from torch.utils.data import ConcatDataset, DataLoader

from sevenomni.data.dataset import worker_collate
from sevenomni.data.graph import collate
from sevenomni.data.sampler import MultiDatabaseSampler
from sevenomni.data.sources import Database
from sevenomni.data.spec import SamplingSpec
from sevenomni.train.distributed import DistributedContext


class RankSlice(torch.utils.data.Sampler):
    """This rank's share of each global batch: items rank, rank + W, rank + 2W, ...

    A global batch with fewer structures than ranks (an epoch's last short batch, a large
    structure alone under ``max_atoms``) leaves some ranks an empty share; they still step.
    """

    def __init__(self, batches: MultiDatabaseSampler, rank: int, world_size: int):
        self.batches, self.rank, self.world_size = batches, rank, world_size

    def __iter__(self):
        for batch in self.batches:
            yield batch[self.rank :: self.world_size]

    def __len__(self) -> int:
        return len(self.batches)


class RankBatchCollate:
    """Collate a rank's share of a global batch; an empty share becomes ``None`` (see ``Trainer._train_step``)."""

    def __init__(self, collate_fn):
        self.collate_fn = collate_fn

    def __call__(self, graphs):
        return self.collate_fn(graphs) if graphs else None


def stage_sampler(databases: list[Database], ratios: dict[str, float] | None, sampling: SamplingSpec) -> MultiDatabaseSampler:
    """Global batches over a stage's databases (identical on every rank)."""
    return MultiDatabaseSampler(
        sizes=[len(d.train) for d in databases],
        atom_counts=[d.train.atom_counts for d in databases],
        spec=sampling,
        weights=[(ratios or {}).get(d.spec.name, d.spec.weight) for d in databases],
    )


def stage_loader(
    databases: list[Database], sampler: MultiDatabaseSampler, ctx: DistributedContext, num_workers: int
) -> DataLoader:
    return DataLoader(
        ConcatDataset([d.train for d in databases]),
        batch_sampler=RankSlice(sampler, ctx.rank, ctx.world_size),
        collate_fn=RankBatchCollate(worker_collate if num_workers else collate),
        num_workers=num_workers,
        persistent_workers=False,
    )


def plain_loader(dataset, batch_size: int, num_workers: int = 0) -> DataLoader:
    """In-order batches of a dataset (validation, statistics)."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate, num_workers=num_workers)
