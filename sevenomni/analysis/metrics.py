"""Errors of predicted energies, forces and stresses against labels, accumulated batch by batch.

One :class:`ErrorAccumulator` scores one database on one channel. It keeps running sums for the
force and stress errors and one number per structure for the energies, so 10⁵ structures cost a
few megabytes:

* energy MAE and RMSE per atom (meV/atom);
* **cMAE**, the energy MAE per atom after removing each composition's mean error (meV/atom): the
  error that remains when two methods' absolute energy references differ. Compositions are
  reduced formulas (a 2×2×2 supercell shares the unit cell's group); a composition seen once
  contributes zero;
* force MAE and RMSE over Cartesian components (eV/Å);
* stress MAE over the six Voigt components (eV/Å³, ASE sign);
* the **softening scale**, the least-squares slope through the origin of predicted on reference
  force components, Σ f_pred·f_ref / Σ f_ref² (Deng et al., npj Comput. Mater. 2025): below 1
  a potential is softer than its reference.
"""

from __future__ import annotations

from math import gcd

import numpy as np
import torch

from sevenomni.core.keys import BATCH, ENERGY, FORCES, STRESS, VOIGT

# The errors (lower is better: any of them can pick the best checkpoint, ``train.best_metric``).
ERROR_METRICS = ("energy_mae", "energy_rmse", "energy_cmae", "forces_mae", "forces_rmse", "stress_mae")
METRICS = (*ERROR_METRICS, "softening_scale", "structures")
# The sample key of each kept energy's composition group (an integer per structure, see ErrorAccumulator.samples).
COMPOSITION = "composition"


def reduced_compositions(atomic_numbers: torch.Tensor, batch: torch.Tensor, num_graphs: int) -> list[tuple]:
    """Reduced formula of each graph as a sorted tuple of (Z, count / gcd)."""
    counts = torch.zeros(num_graphs, int(atomic_numbers.max()) + 1, dtype=torch.long)
    counts.index_put_((batch.cpu(), atomic_numbers.cpu()), torch.ones_like(atomic_numbers.cpu()), accumulate=True)
    keys = []
    for row in counts.numpy():
        present = np.flatnonzero(row)
        divisor = 0
        for count in row[present]:
            divisor = gcd(divisor, int(count))
        keys.append(tuple((int(z), int(row[z]) // divisor) for z in present))
    return keys


def composition_centred(errors: np.ndarray, groups: list) -> np.ndarray:
    """``errors`` minus the mean error of their group: the offset between two energy references removed.

    ``groups`` holds one hashable key per error: reduced compositions for cMAE, or any other grouping
    (the ablation groups conformations of one molecule by its ``source``)."""
    centred = np.asarray(errors, dtype=np.float64).copy()
    labels: dict = {}
    index = np.array([labels.setdefault(group, len(labels)) for group in groups], dtype=np.int64)
    if len(index):
        means = np.bincount(index, weights=centred) / np.bincount(index)
        centred -= means[index]
    return centred


class ErrorAccumulator:
    """Errors of one database on one channel; :meth:`add` each batch, then :meth:`summary`.

    ``sample_every`` keeps every n-th atom's force components (and every structure's energies)
    for a parity plot (:attr:`samples`); 0 keeps none.
    """

    def __init__(self, sample_every: int = 0):
        self.sample_every = int(sample_every)
        self.sums = dict.fromkeys(("forces_abs", "forces_sq", "forces_cross", "forces_ref_sq", STRESS), 0.0)
        self.counts = dict.fromkeys((FORCES, STRESS), 0)
        self.structures = 0
        self.energy_errors: list[np.ndarray] = []  # per atom, eV
        self.compositions: list[tuple] = []
        self.energy_samples: list[np.ndarray] = []  # [n, 2] reference, predicted per atom
        self.force_samples: list[np.ndarray] = []  # [n, 2] reference, predicted components
        self._atoms_seen = 0

    def add(self, batch, prediction: dict[str, torch.Tensor], select: torch.Tensor | None = None) -> None:
        """Score one labelled batch (a collated graph batch with ``energy``, ``forces``, ``stress``
        and ``has_*`` labels) against the model's ``prediction`` for it; with ``select`` (bool, one
        per structure), only the selected structures."""
        dtype = torch.float64
        num_atoms = batch.num_atoms.view(-1).to(dtype)
        if select is None:
            select = torch.ones_like(batch.has_energy.view(-1))
        self.structures += int(select.sum())
        graph_of_node = getattr(batch, BATCH, None)
        if graph_of_node is None:
            graph_of_node = torch.zeros_like(batch.atomic_numbers)
        mask = batch.has_energy.view(-1) & select
        predicted = prediction[ENERGY].detach().to(dtype) / num_atoms
        reference = batch.energy.view(-1).to(dtype) / num_atoms
        if bool(mask.any()):
            self.energy_errors.append((predicted - reference)[mask].cpu().numpy())
            keys = reduced_compositions(batch.atomic_numbers, graph_of_node, int(num_atoms.numel()))
            self.compositions += [key for key, kept in zip(keys, mask.tolist()) if kept]
            if self.sample_every:
                self.energy_samples.append(torch.stack([reference, predicted], 1)[mask].cpu().numpy())

        node_mask = (batch.has_forces.view(-1) & select)[graph_of_node]
        f_pred = prediction[FORCES].detach().to(dtype)[node_mask]
        f_ref = batch.forces.to(dtype)[node_mask]
        error = f_pred - f_ref
        self.sums["forces_abs"] += float(error.abs().sum())
        self.sums["forces_sq"] += float(error.pow(2).sum())
        self.sums["forces_cross"] += float((f_pred * f_ref).sum())
        self.sums["forces_ref_sq"] += float(f_ref.pow(2).sum())
        self.counts[FORCES] += error.numel()
        if self.sample_every and len(f_ref):
            atoms = torch.arange(self._atoms_seen, self._atoms_seen + len(f_ref), device=f_ref.device)
            chosen = atoms % self.sample_every == 0
            self.force_samples.append(
                torch.stack([f_ref[chosen].reshape(-1), f_pred[chosen].reshape(-1)], 1).cpu().numpy()
            )
            self._atoms_seen += len(f_ref)

        stress_mask = batch.has_stress.view(-1) & select
        if STRESS in prediction and bool(stress_mask.any()):
            difference = prediction[STRESS].detach().to(dtype) - batch.stress.to(dtype).view(-1, 3, 3)
            error = difference.reshape(-1, 9)[:, list(VOIGT)][stress_mask]
            self.sums[STRESS] += float(error.abs().sum())
            self.counts[STRESS] += error.numel()

    @property
    def samples(self) -> dict[str, np.ndarray]:
        """Kept (reference, predicted) pairs: ``energy`` per atom (eV/atom), ``forces`` (eV/Å); and
        :data:`COMPOSITION`, each kept energy's composition as an integer (equal for equal reduced
        formulas), the groups cMAE removes its mean offsets over."""
        def stack(parts: list[np.ndarray]) -> np.ndarray:
            return np.concatenate(parts) if parts else np.empty((0, 2))

        energy = stack(self.energy_samples)
        labels: dict = {}
        groups = [labels.setdefault(key, len(labels)) for key in self.compositions] if len(energy) else []
        return {ENERGY: energy, FORCES: stack(self.force_samples), COMPOSITION: np.array(groups, dtype=np.int64)}

    def summary(self) -> dict[str, float]:
        """Every metric in :data:`METRICS` (NaN where a label kind is missing)."""
        nan = float("nan")
        energy = np.concatenate(self.energy_errors) if self.energy_errors else np.empty(0)
        forces, stress = self.counts[FORCES], self.counts[STRESS]
        reference_sq = self.sums["forces_ref_sq"]
        return {
            "energy_mae": 1000.0 * float(np.abs(energy).mean()) if len(energy) else nan,
            "energy_rmse": 1000.0 * float(np.sqrt(np.mean(energy**2))) if len(energy) else nan,
            "energy_cmae": (
                1000.0 * float(np.abs(composition_centred(energy, self.compositions)).mean()) if len(energy) else nan
            ),
            "forces_mae": self.sums["forces_abs"] / forces if forces else nan,
            "forces_rmse": (self.sums["forces_sq"] / forces) ** 0.5 if forces else nan,
            "stress_mae": self.sums[STRESS] / stress if stress else nan,
            "softening_scale": self.sums["forces_cross"] / reference_sq if reference_sq > 0 else nan,
            "structures": float(self.structures),
        }


class ChannelSpread:
    """How far one channel's predictions lie from another's (a database's own channel), structure
    by structure: the gap between channels in function space, whatever the size of θT.

    ``channel_spread_forces``: mean over structures of the RMS difference of their force components (eV/Å).
    ``channel_spread_energy``: MAE of the per-atom energy differences after removing their mean over the
    database (meV/atom), so that a constant offset between energy references does not count.
    """

    def __init__(self):
        self.force_rms: list[np.ndarray] = []
        self.energy: list[np.ndarray] = []

    def add(self, batch, prediction: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> None:
        dtype = torch.float64
        num_atoms = batch.num_atoms.view(-1).to(dtype)
        graph_of_node = getattr(batch, BATCH, None)
        if graph_of_node is None:
            graph_of_node = torch.zeros_like(batch.atomic_numbers)
        squared = (prediction[FORCES].detach().to(dtype) - reference[FORCES].detach().to(dtype)).pow(2).sum(dim=1)
        per_structure = squared.new_zeros(num_atoms.numel()).index_add(0, graph_of_node, squared)
        self.force_rms.append(torch.sqrt(per_structure / (3 * num_atoms)).cpu().numpy())
        difference = (prediction[ENERGY].detach().to(dtype) - reference[ENERGY].detach().to(dtype)) / num_atoms
        self.energy.append(difference.cpu().numpy())

    def add_structure(self, forces: np.ndarray, reference_forces: np.ndarray, energy: float, reference_energy: float) -> None:
        """One structure's predictions as arrays (forces [N, 3] in eV/Å, total energies in eV)."""
        difference = np.asarray(forces, dtype=np.float64) - np.asarray(reference_forces, dtype=np.float64)
        self.force_rms.append(np.sqrt(np.mean(difference**2, keepdims=True).reshape(1)))
        self.energy.append(np.array([(energy - reference_energy) / len(difference)]))

    def summary(self) -> dict[str, float]:
        if not self.force_rms:
            return {"channel_spread_energy": float("nan"), "channel_spread_forces": float("nan")}
        energy = np.concatenate(self.energy)
        return {
            "channel_spread_energy": 1000.0 * float(np.abs(energy - energy.mean()).mean()),
            "channel_spread_forces": float(np.concatenate(self.force_rms).mean()),
        }
