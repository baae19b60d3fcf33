"""``sevenomni predict``: energies, forces and stresses of unlabelled structures, written to extxyz.

The structures (any file ASE reads, or a sevenomni store) stream through
:func:`sevenomni.calculators.prediction.predict`, batch by batch, once per requested channel; each is written
back with its predictions under ``sevenomni_energy`` (info), ``sevenomni_forces`` (arrays) and, for a
periodic cell with a volume, ``sevenomni_stress`` (info, Voigt order as ASE's). With several
channels (``all``) every key carries the channel's name as ``sevenomni eval --predictions`` writes
them: ``sevenomni_<channel>_energy``.
"""

from __future__ import annotations

import errno
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from ase import Atoms
from ase.io import iread
from ase.io import write as write_structures

from sevenomni.analysis.evaluate import evaluation_mode
from sevenomni.calculators.prediction import predict
from sevenomni.core.devices import resolve_device
from sevenomni.core.files import atomic_write
from sevenomni.data.store import StoreReader, is_store
from sevenomni.nn import SevenOmniModel
from sevenomni.nn.task_names import COMMON_CHANNEL

PREFIX = "sevenomni"
ALL = "all"


@dataclass(frozen=True)
class PredictedChannel:
    """One channel to predict: its name, the task whose shifts the common channel takes, the prefix of
    its keys."""

    name: str
    shift_task: str | None
    key_prefix: str


def requested_channels(model: SevenOmniModel, task: str, shift_task: str | None = None) -> list[PredictedChannel]:
    """The channels of ``--task``: one (a task or ``common``, keys ``sevenomni_*``), or with ``all``
    every task, and the common channel when its shifts are known (``shift_task``, or a single task)."""
    if task.lower() != ALL:
        name = model.tasks.channel_name(task)
        model.resolve_channel(name, shift_task)  # a missing or misplaced shift task is an error now
        return [PredictedChannel(name, shift_task, PREFIX)]
    if shift_task is not None:
        model.task_index(shift_task)
    channels = [PredictedChannel(name, None, f"{PREFIX}_{name}") for name in model.tasks]
    if shift_task is not None or len(model.tasks) == 1:
        channels.append(PredictedChannel(COMMON_CHANNEL, shift_task, f"{PREFIX}_{COMMON_CHANNEL}"))
    return channels


def read_structures(source: str | os.PathLike) -> Iterator[Atoms]:
    """The structures of a store or of any file ASE reads, one at a time; a structure that cannot be
    read is a ValueError naming the file and its index."""
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
    if is_store(path):
        with StoreReader(path) as reader:
            for index in range(len(reader)):
                record = reader.read(index)
                atoms = Atoms(numbers=record["numbers"], positions=record["positions"], cell=record["cell"],
                              pbc=record["pbc"])
                atoms.info.update({key: record[key] for key in ("config_type", "name") if record.get(key)})
                yield atoms
        return
    structures, index = iread(str(path), index=":"), 0
    while True:
        try:
            atoms = next(structures)
        except StopIteration:
            break
        except Exception as error:  # ASE's readers raise anything: a clear message naming where
            raise ValueError(f"{path}: cannot read structure {index} ({type(error).__name__}: {error})") from None
        yield atoms
        index += 1
    if index == 0:
        raise ValueError(f"{path}: no structures in the file")


def predict_file(
    model: SevenOmniModel,
    source: str | os.PathLike,
    out: str | os.PathLike,
    task: str,
    shift_task: str | None = None,
    batch_size: int = 32,
    device: str | torch.device = "auto",
) -> int:
    """Write ``source``'s structures with ``task``'s predictions (a task, ``common`` or ``all``) to
    extxyz ``out``; returns how many. ``out`` appears only once every structure is predicted."""
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    channels = requested_channels(model, task, shift_task)
    device = resolve_device(device)
    streams = itertools.tee(read_structures(source), len(channels) + 1)  # buffers at most a batch ahead
    results = [
        predict(model, stream, channel.name, channel.shift_task, batch_size=batch_size, device=device,
                require_neighbours=True)
        for channel, stream in zip(channels, streams[1:])
    ]
    count = 0
    with evaluation_mode(model.to(device)), atomic_write(Path(out)) as handle:
        for atoms, *predicted in zip(streams[0], *results, strict=True):
            for channel, result in zip(channels, predicted):
                atoms.info[f"{channel.key_prefix}_energy"] = result["energy"]
                atoms.arrays[f"{channel.key_prefix}_forces"] = result["forces"]
                if "stress" in result:
                    atoms.info[f"{channel.key_prefix}_stress"] = result["stress"]
            write_structures(handle, atoms, format="extxyz")
            count += 1
    return count
