"""A TorchSim model interface for one channel of a sevenomni model: batched MD and relaxations.

``SevenOmniTorchSimModel(model, task=...)`` evaluates every system of a TorchSim state in one batch
through :func:`sevenomni.predict`, so any task, ``common`` (with ``shift_task``), Δ-learning
baselines and D3 behave exactly as in the ASE calculator; :meth:`SevenOmniTorchSimModel.channel`
gives another channel of the same loaded network. The radius graphs are built on the CPU (as for
the calculator) and the results returned on the state's device.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from ase.stress import voigt_6_to_full_3x3_stress

from sevenomni.calculators.ase_calculator import SevenOmniCalculator
from sevenomni.calculators.dispersion import D3Correction
from sevenomni.calculators.prediction import predict
from sevenomni.nn import SevenOmniModel

INSTALL_HINT = "pip install torch-sim-atomistic (or sevenomni's torchsim extra: pip install -e '.[torchsim]')"

try:
    import torch_sim
    from torch_sim.models.interface import ModelInterface
except ImportError as error:
    raise ImportError(f"sevenomni.md.torchsim needs TorchSim ({error}); {INSTALL_HINT}") from None


class SevenOmniTorchSimModel(ModelInterface):
    """Energy, forces and stress (eV/Å³, ASE sign, 3×3) of one channel for a batch of systems.

    ``model`` is a model or anything :func:`~sevenomni.load_model` takes; ``task``, ``shift_task``,
    ``d3``, ``device`` and ``dtype`` as for :class:`~sevenomni.SevenOmniCalculator`. Stress is
    reported for periodic states (TorchSim's ``pbc`` is one flag for the whole batch).
    """

    def __init__(
        self,
        model: SevenOmniModel | str | os.PathLike,
        task: str | None = None,
        shift_task: str | None = None,
        d3: bool | dict | D3Correction | None = None,
        device: str | torch.device = "auto",
        dtype: str | None = None,
        batch_size: int = 64,
    ):
        super().__init__()
        self.channel_calculator = SevenOmniCalculator(
            model, task=task, shift_task=shift_task, d3=d3, device=device, dtype=dtype
        )
        self._device = self.channel_calculator.device
        self._dtype = self.channel_calculator.model.dtype
        self._compute_forces = True
        self._compute_stress = True
        self._memory_scales_with = "n_atoms_x_density"
        self.batch_size = batch_size

    @property
    def network(self) -> SevenOmniModel:
        return self.channel_calculator.model

    def channel(self, task: str | None, shift_task: str | None = None) -> SevenOmniTorchSimModel:
        """The same network (not copied) on another channel, with the same D3, device and batch size."""
        calculator = self.channel_calculator
        return SevenOmniTorchSimModel(
            calculator.model, task, shift_task, d3=calculator.d3, device=self._device, batch_size=self.batch_size
        )

    def forward(self, state, **_) -> dict[str, torch.Tensor]:
        if isinstance(state, dict):
            state = torch_sim.SimState(**state, masses=torch.ones_like(state["positions"]))
        calculator = self.channel_calculator
        results = list(predict(
            calculator.model, torch_sim.io.state_to_atoms(state), calculator.task, calculator.shift_task,
            batch_size=self.batch_size, device=self._device, d3=calculator.d3,
        ))

        def tensor(values) -> torch.Tensor:
            return torch.as_tensor(np.asarray(values), dtype=state.positions.dtype, device=state.positions.device)

        output = {
            "energy": tensor([result["energy"] for result in results]),
            "forces": tensor(np.concatenate([result["forces"] for result in results])),
        }
        if all("stress" in result for result in results):
            output["stress"] = tensor(np.stack([voigt_6_to_full_3x3_stress(result["stress"]) for result in results]))
        return output
