"""The ASE calculator: one channel of a sevenomni model (:func:`~sevenomni.calculators.prediction.predict`
for one structure at a time), with optional DFT-D3 on top."""

from __future__ import annotations

import copy
import os

import torch
from ase.calculators.calculator import Calculator, all_changes

from sevenomni.calculators.dispersion import d3_correction
from sevenomni.calculators.prediction import predict
from sevenomni.core.devices import resolve_device
from sevenomni.model_io.loading import load_model
from sevenomni.nn import SevenOmniModel
from sevenomni.nn.backend import TPBackend
from sevenomni.nn.model import DTYPES


class SevenOmniCalculator(Calculator):
    """ASE calculator for one channel of a sevenomni model.

    ``task`` matches the model's task names case-insensitively; ``"common"`` selects the common
    PES (θT = 0) with the energy shift/scale of ``shift_task``. A single-task model needs no task.
    Stress is reported for structures with a periodic cell of non-zero volume. ``model`` is a model
    or anything :func:`~sevenomni.load_model` takes; ``trust_pickle`` and ``tp_backend`` as there.
    ``compile=True`` runs the network through ``torch.compile`` (:mod:`sevenomni.nn.compiled`: the
    first call compiles, later calculators reuse it). ``d3=True`` (PBE, Becke–Johnson damping) or
    ``d3={"functional": ..., "damping": ...}`` adds DFT-D3 dispersion to energy, forces and stress
    (:mod:`sevenomni.calculators.dispersion`); per-atom ``energies`` are then not reported, since D3 has none. A
    keyword the calculator does not know is an error (TypeError), never silently ignored.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies"]
    # Keywords of ASE's Calculator that this calculator passes on; any other unknown keyword is an error.
    ase_keywords = ("atoms", "directory", "label")
    # What other codes call a channel (MACE: head; SevenNet: modal); answered with a pointer to task=.
    task_aliases = ("head", "modal", "channel", "fidelity")

    def __init__(
        self,
        model: SevenOmniModel | str | os.PathLike,
        task: str | None = None,
        device: str | torch.device = "auto",
        dtype: str | None = None,
        shift_task: str | None = None,
        trust_pickle: bool = False,
        tp_backend: TPBackend | None = None,
        compile: bool = False,
        d3: bool | dict | None = None,
        **kwargs,
    ):
        unknown = sorted(set(kwargs) - set(self.ase_keywords))
        if unknown:
            peers = sorted(set(unknown) & set(self.task_aliases))
            hint = f" ({', '.join(f'{k}=' for k in peers)}: sevenomni calls the channel task=)" if peers else ""
            raise TypeError(
                f"SevenOmniCalculator got unknown keyword(s) {unknown}{hint}; it takes model, task, device, dtype, "
                f"shift_task, trust_pickle, tp_backend, compile, d3 and ASE's {list(self.ase_keywords)}"
            )
        super().__init__(**kwargs)
        if not isinstance(model, SevenOmniModel):
            model = load_model(model, trust_pickle=trust_pickle)
        elif tp_backend is not None or compile != model.compiled:
            model = copy.deepcopy(model)
        if tp_backend is not None:
            model.set_tp_backend(tp_backend)
        model.set_compiled(compile)
        if dtype is not None:
            if dtype not in DTYPES:
                raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
            model = copy.deepcopy(model).to(DTYPES[dtype])
            model.config = model.config.model_copy(update={"dtype": dtype})
        task_index, _ = model.resolve_channel(task, shift_task)
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.task = task
        self.shift_task = shift_task
        self.d3 = d3_correction(d3)
        if self.d3 is not None or model.baseline_of(model.tasks[task_index]) is not None:
            # D3 and Δ-learning baselines give no per-atom energies
            self.implemented_properties = [p for p in type(self).implemented_properties if p != "energies"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        (result,) = predict(self.model, [self.atoms], self.task, self.shift_task, device=self.device, d3=self.d3)
        self.results = {"free_energy": result["energy"], **result}
