"""Errors of a database by ``config_type``: one :class:`ErrorAccumulator` per config type.

MACE-style data tags structures with a ``config_type`` (extxyz info key, kept in the store).
When a database's structures carry two or more config types, ``sevenomni eval`` also scores its
own channel per type; with one or none it adds nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sevenomni.analysis.metrics import ErrorAccumulator
from sevenomni.nn.task_names import CHANNEL_COLUMN

UNTAGGED = "(untagged)"


class ConfigTypeErrors:
    """Errors of one database on one channel per config type, fed batch by batch in item order.

    ``config_types`` holds each item's type (None where untagged), in the order the batches
    bring the items (an unshuffled loader)."""

    def __init__(self, config_types: Sequence[str | None]):
        named = sorted({kind for kind in config_types if kind is not None})
        self.names = named + ([UNTAGGED] if None in config_types else [])
        code = {kind: i for i, kind in enumerate(named)}
        self.codes = torch.tensor([code.get(kind, len(named)) for kind in config_types], dtype=torch.long)
        self.accumulators = [ErrorAccumulator() for _ in self.names]
        self._seen = 0

    @classmethod
    def when_several(cls, config_types: Sequence[str | None]) -> ConfigTypeErrors | None:
        """Per-type errors when the structures carry at least two config types; else None."""
        return cls(config_types) if len({kind for kind in config_types if kind is not None}) >= 2 else None

    def add(self, batch, prediction: dict[str, torch.Tensor]) -> None:
        count = int(batch.num_atoms.numel())
        codes = self.codes[self._seen : self._seen + count].to(batch.num_atoms.device)
        self._seen += count
        for code, accumulator in enumerate(self.accumulators):
            selected = codes == code
            if bool(selected.any()):
                accumulator.add(batch, prediction, select=selected)

    def rows(self, database: str, channel: str) -> list[dict]:
        """One row per config type: database, channel, config_type and every metric."""
        return [
            {"database": database, "channel": channel, "config_type": name, **accumulator.summary()}
            for name, accumulator in zip(self.names, self.accumulators)
        ]


def format_config_type_table(rows: Sequence[dict]) -> str:
    """Per-config-type rows as a fixed-width table."""
    lines = [
        f"{'database':<24}{CHANNEL_COLUMN:<16}{'config_type':<20}{'count':>7}{'E MAE':>9}{'F MAE':>9}{'F RMSE':>9}",
        f"{'':<24}{'':<16}{'':<20}{'':>7}{'meV/at':>9}{'eV/Å':>9}{'eV/Å':>9}",
    ]
    for row in rows:
        lines.append(
            f"{row['database']:<24}{row['channel']:<16}{row['config_type']:<20}{int(row['structures']):>7}"
            f"{row['energy_mae']:>9.2f}{row['forces_mae']:>9.4f}{row['forces_rmse']:>9.4f}"
        )
    return "\n".join(lines)

