"""Three crystals at once in TorchSim: 200 steps of Langevin NVT at 300 K, then a FIRE relaxation of
positions and cells, on one channel of a sevenomni model; energies on that channel and on another.

    python recipes/torchsim/nvt_then_relax.py runs/quickstart/model.pt gfn1 gfn2
"""

import sys

import torch_sim as ts
from ase.build import bulk

from sevenomni.md.torchsim import SevenOmniTorchSimModel

model, task, other_task = sys.argv[1:4]
crystals = [
    bulk("Si", "diamond", a=5.43, cubic=True) * (2, 2, 2),
    bulk("C", "diamond", a=3.57, cubic=True) * (2, 2, 2),
    bulk("Si", "diamond", a=5.5, cubic=True),
]
channel = SevenOmniTorchSimModel(model, task=task)  # also shift_task=, d3=, device=, dtype= as the calculator
final = ts.integrate(
    system=crystals, model=channel, integrator=ts.nvt_langevin, n_steps=200, temperature=300, timestep=0.001
)
relaxed = ts.optimize(system=final, model=channel, optimizer=ts.frechet_cell_fire, max_steps=300)
print(f"{task}: {channel(relaxed)['energy'].tolist()} eV")
print(f"{other_task}: {channel.channel(other_task)(relaxed)['energy'].tolist()} eV (the same network)")
