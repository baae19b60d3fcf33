"""``SevenOmniMLIAP``: a sevenomni model as LAMMPS' ``pair_style mliap unified`` (ML-IAP with Python).

``sevenomni export MODEL --format mliap --task T --out model.mliap.pkl`` pickles one of these; a
LAMMPS built with ML-IAP and Python support loads it with::

    comm_modify cutoff 10.0                        # ≥ layers × cutoff + skin (the export prints it)
    pair_style  mliap unified model.mliap.pkl 1    # 1: ghost atoms get neighbour lists
    pair_coeff  * * Si O                           # the element of each atom type

At each step LAMMPS hands over the pair list of its owned and ghost atoms (``rij = x_j − x_i``);
the model's :meth:`~sevenomni.nn.SevenOmniModel.atomic_energies` runs on that graph, the energies
of the owned atoms are summed, and ``dE/drij`` goes back through ``update_pair_forces`` (LAMMPS
adds forces, reverse-communicates the ghosts' share and tallies the virial). Several MPI ranks are
exact when the ghost halo holds every atom within layers × cutoff of the owned ones; the adapter
refuses to run otherwise (:mod:`sevenomni.md.mliap_halo`).

The file holds the whole model, every task. ``pair_style mliap unified`` has no place for a task
keyword, so the export names the default channel and the environment of the LAMMPS process can
choose another when the file is loaded: ``SEVENOMNI_TASK`` (a task or ``common``) and
``SEVENOMNI_SHIFT_TASK`` (with ``common``), set before ``lmp`` starts or in the input with
``shell putenv SEVENOMNI_TASK=...`` before ``pair_style``. Δ-learning channels (their baseline needs the whole
structure) and D3 are not available here; ``sevenomni lammps`` has them.
"""

from __future__ import annotations

import ctypes
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from sevenomni.core.devices import resolve_device
from sevenomni.md.mliap_halo import (
    HaloError,
    check_ghost_neighbours,
    check_halo,
    hops_from_owned,
    required_ghost_cutoff,
)
from sevenomni.model_io.checkpoint import check_model_record, model_from_record, model_record
from sevenomni.model_io.loading import load_model
from sevenomni.nn import SevenOmniModel

FILE_FORMAT = "sevenomni-mliap-unified"
FILE_VERSION = 1
TASK_VARIABLE = "SEVENOMNI_TASK"
SHIFT_TASK_VARIABLE = "SEVENOMNI_SHIFT_TASK"
TORCH_SUFFIXES = (".pt", ".pth")  # LAMMPS reads these with torch.load, which refuses pickled objects

__all__ = ["SevenOmniMLIAP", "HaloError", "export_mliap"]


def process_variable(name: str) -> str | None:
    """An environment variable as the process has it now.

    LAMMPS' ``shell putenv NAME=VALUE`` sets it in the C environment, which ``os.environ`` (a copy
    taken when Python started, possibly before that command) does not see.
    """
    try:
        getenv = ctypes.CDLL(None).getenv
    except (OSError, AttributeError):  # no C library to ask: Python's copy
        return os.environ.get(name)
    getenv.restype = ctypes.c_char_p
    value = getenv(name.encode())
    return value.decode() if value else None


class SevenOmniMLIAP:
    """One channel of a sevenomni model behind LAMMPS' ML-IAP "unified" interface.

    ``model`` is a model or anything :func:`~sevenomni.load_model` takes; ``task`` and
    ``shift_task`` choose the channel as for the calculator. The attributes LAMMPS reads are
    ``element_types`` (the model's elements, for ``pair_coeff``), ``rcutfac`` (half the cutoff:
    LAMMPS' pair cutoff is ``2 × rcutfac``), ``ndescriptors`` and ``nparams`` (unused, 1).
    """

    ndescriptors = 1
    nparams = 1

    def __init__(
        self,
        model: SevenOmniModel | str | os.PathLike,
        task: str | None = None,
        shift_task: str | None = None,
        device: str = "auto",
    ):
        if not isinstance(model, SevenOmniModel):
            model = load_model(model)
        self._setup(model_record(model), task, shift_task, device)

    def _setup(self, record: dict, task: str | None, shift_task: str | None, device: str) -> None:
        self.record, self.task, self.shift_task, self.device_name = record, task, shift_task, device
        self.device = resolve_device(device)
        model = model_from_record(record, "ML-IAP file").to(self.device).eval()
        self.task_index, self.common = model.resolve_channel(task, shift_task)
        spec = model.baseline_of(model.tasks[self.task_index])
        if spec is not None:
            raise ValueError(
                f"channel {task!r} is trained on top of the baseline {spec.calculator}, which the ML-IAP pair style "
                "cannot add (it needs the whole structure); choose another channel or use `sevenomni lammps`"
            )
        self.model = model
        self.element_types = list(model.elements)
        self.cutoff = float(model.cutoff)
        self.rcutfac = 0.5 * self.cutoff
        self.layers = len(model.layers)
        self.interface = None  # set by LAMMPS when it loads the file

    @property
    def ghost_cutoff(self) -> float:
        """The ghost halo this model needs (LAMMPS' ``comm_modify cutoff``, plus the skin)."""
        return required_ghost_cutoff(self.layers, self.cutoff)

    @property
    def channel(self) -> str:
        """The channel evaluated: a task name, or ``common (shifts of TASK)``."""
        task = self.model.tasks[self.task_index]
        return f"common (shifts of {task})" if self.common else task

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict:
        return {"format": FILE_FORMAT, "version": FILE_VERSION, "record": self.record, "task": self.task,
                "shift_task": self.shift_task, "device": self.device_name}

    def __setstate__(self, state: dict) -> None:
        if not isinstance(state, dict) or state.get("format") != FILE_FORMAT or state.get("version") != FILE_VERSION:
            raise ValueError(f"not a {FILE_FORMAT} file of version {FILE_VERSION}; export it again with this sevenomni")
        task, shift_task = state["task"], state["shift_task"]
        chosen = process_variable(TASK_VARIABLE)
        if chosen:  # the channel chosen at run time
            task, shift_task = chosen, process_variable(SHIFT_TASK_VARIABLE) or None
        try:
            self._setup(check_model_record(state["record"], "ML-IAP file"), task, shift_task, state["device"])
        except ValueError as error:
            where = f"{TASK_VARIABLE}={chosen!r}" if chosen else f"exported channel {task!r}"
            raise ValueError(f"sevenomni ML-IAP file, {where}: {error}") from None

    # ------------------------------------------------------------------ LAMMPS' calls
    def compute_gradients(self, data) -> None:
        """Unused: everything happens in :meth:`compute_forces`."""

    def compute_descriptors(self, data) -> None:
        """Unused: everything happens in :meth:`compute_forces`."""

    def compute_forces(self, data) -> None:
        """Energy of the owned atoms, and ``dE/drij`` for every pair, into LAMMPS' ``data``."""
        nlocal, ntotal, npairs = int(data.nlocal), int(data.ntotal), int(data.npairs)
        if data.nlistatoms == 0:  # a rank without atoms (numpy views of empty C arrays are not allowed)
            data.energy = 0.0
            return
        elements = np.asarray(data.elems, dtype=np.int64)
        if (elements < 0).any():
            raise ValueError("an atom type is mapped to NULL in pair_coeff; every type needs one of the model's "
                             f"elements {self.element_types}")
        check_ghost_neighbours(nlocal, ntotal, int(data.natomneigh), self.layers, self.cutoff)
        fij = np.zeros((npairs, 3))
        if npairs:
            pair_i = np.asarray(data.pair_i, dtype=np.int64)
            pair_j = np.asarray(data.pair_j, dtype=np.int64)
            rij = np.array(data.rij, dtype=np.float64)
            reach = hops_from_owned(nlocal, ntotal, pair_i, pair_j, self.layers - 1)
            if self.layers > 1:
                check_halo(nlocal, ntotal, pair_i, pair_j, rij, self.layers, self.cutoff, reach)
            # only messages into atoms within layers − 1 hops reach the owned atoms' energies
            needed = np.flatnonzero(reach[pair_i])
            energy, atomic, fij_needed = self.evaluate(rij[needed], pair_i[needed], pair_j[needed], elements, nlocal)
            fij[needed] = fij_needed
            data.update_pair_forces(fij)
        else:
            empty = np.zeros(0, dtype=np.int64)
            energy, atomic, _ = self.evaluate(np.zeros((0, 3)), empty, empty, elements, nlocal)
        data.energy = energy
        data.eatoms = np.ascontiguousarray(atomic[np.asarray(data.iatoms)[: data.nlistatoms]])

    def evaluate(
        self, rij: np.ndarray, pair_i: np.ndarray, pair_j: np.ndarray, elements: np.ndarray, nlocal: int
    ) -> tuple[float, np.ndarray, np.ndarray]:
        """(energy of atoms 0…nlocal−1, their atomic energies, dE/drij per pair) on LAMMPS' pair graph.

        ``elements`` indexes :attr:`element_types` for every atom; pair ``k`` goes from atom
        ``pair_i[k]`` to ``pair_j[k]`` with ``rij[k] = x_j − x_i``.
        """
        model, device = self.model, self.device
        edge_vec = torch.tensor(rij, dtype=torch.float64, device=device, requires_grad=True)
        edge_index = torch.stack([torch.as_tensor(pair_j), torch.as_tensor(pair_i)]).to(device)
        species = torch.as_tensor(elements, device=device)
        node_task = torch.full_like(species, self.task_index)
        atomic = model.atomic_energies(
            edge_vec.to(model.dtype), edge_index, species, node_task, None if self.common else node_task
        )[:nlocal].to(torch.float64)
        energy = atomic.sum()
        if len(rij):
            (gradient,) = torch.autograd.grad(energy, edge_vec)
        else:
            gradient = torch.zeros_like(edge_vec)
        fij = np.ascontiguousarray(gradient.detach().cpu().numpy(), dtype=np.float64)
        return float(energy.detach()), atomic.detach().cpu().numpy(), fij


def export_mliap(
    model: SevenOmniModel | str | os.PathLike,
    out: str | os.PathLike,
    task: str | None = None,
    shift_task: str | None = None,
    device: str = "auto",
) -> SevenOmniMLIAP:
    """Write the file ``pair_style mliap unified`` loads: the whole model, ``task`` its default channel."""
    out = Path(out)
    if out.suffix in TORCH_SUFFIXES:
        raise ValueError(f"{out}: LAMMPS reads *{out.suffix} files with torch.load, which refuses pickled objects; "
                         "name it *.pkl")
    unified = SevenOmniMLIAP(model, task=task, shift_task=shift_task, device=device)
    atomic_save_pickle(unified, out)
    return unified


def atomic_save_pickle(obj, path: Path) -> None:
    """Pickle ``obj`` to ``path`` through a temporary file (no half-written file on failure)."""
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as handle:
        pickle.dump(obj, handle, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(partial, path)

