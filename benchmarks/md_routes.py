"""Speed of the MD routes beside the ASE calculator: the same model, system and NVE steps in each.

Silicon (diamond, 64 atoms, rattled, 300 K), 1 fs velocity Verlet on one channel of a model:
ASE's VelocityVerlet with the calculator; ``sevenomni lammps`` (fix external; LAMMPS' own loop
time, so model loading is not counted); TorchSim's NVE on the one system and on a batch of
``--batch`` rattled copies (one model call per step for the whole batch). One CPU thread for torch.

``python benchmarks/md_routes.py --model runs/quickstart/model.pt --task gfn1`` writes
``benchmarks/results/md_routes.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from ase import Atoms, units
from ase.build import bulk
from ase.io import write
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet

from sevenomni import SevenOmniCalculator
from sevenomni.md.lammps_driver import LammpsRun, run_lammps

RESULTS = Path(__file__).resolve().parent / "results"
NVE_INPUT = """units metal
boundary p p p
read_data ${structure}
timestep 0.001
fix integrate all nve
thermo 100
run ${steps}
"""


def silicon(seed: int) -> Atoms:
    atoms = bulk("Si", "diamond", a=5.43, cubic=True) * (2, 2, 2)
    atoms.rattle(0.03, seed=seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(seed))
    return atoms


def ase_steps_per_second(model: str, task: str, steps: int) -> float:
    atoms = silicon(0)
    atoms.calc = SevenOmniCalculator(model, task=task, device="cpu")
    dynamics = VelocityVerlet(atoms, timestep=units.fs)
    dynamics.run(2)  # warm-up
    start = time.perf_counter()
    dynamics.run(steps)
    return steps / (time.perf_counter() - start)


def lammps_steps_per_second(model: str, task: str, steps: int) -> float:
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        write(scratch / "si.extxyz", silicon(0), format="extxyz")
        (scratch / "in.nve").write_text(NVE_INPUT)
        log = scratch / "log.lammps"
        run_lammps(LammpsRun(
            input=scratch / "in.nve", model=model, task=task, device="cpu", structure=scratch / "si.extxyz",
            variables=[("steps", str(steps))], log=str(log), screen=False,
        ))
        loop = re.search(r"Loop time of ([0-9.eE+-]+) on 1 procs for (\d+) steps", log.read_text())
        return int(loop.group(2)) / float(loop.group(1))


def torchsim_steps_per_second(model: str, task: str, steps: int, copies: int) -> float:
    import torch_sim
    from torch_sim.integrators.nve import nve

    from sevenomni.md.torchsim import SevenOmniTorchSimModel

    interface = SevenOmniTorchSimModel(model, task=task, device="cpu")
    systems = [silicon(seed) for seed in range(copies)]
    init, step = nve(interface, dt=torch.tensor(units.fs, dtype=interface.dtype), kT=torch.tensor(0.0))
    state = init(torch_sim.io.atoms_to_state(systems, torch.device("cpu"), interface.dtype))
    state.momenta = torch.tensor(np.concatenate([a.get_momenta() for a in systems]), dtype=interface.dtype)
    state = step(state)  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        state = step(state)
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--task")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=8, help="systems in the TorchSim batch (default 8)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rates = {
        "ASE VelocityVerlet + calculator": ase_steps_per_second(args.model, args.task, args.steps),
        "sevenomni lammps (fix external)": lammps_steps_per_second(args.model, args.task, args.steps),
        "TorchSim NVE, 1 system": torchsim_steps_per_second(args.model, args.task, args.steps, 1),
        f"TorchSim NVE, batch of {args.batch}": torchsim_steps_per_second(args.model, args.task, args.steps, args.batch),
    }
    ase = rates["ASE VelocityVerlet + calculator"]
    rows = ["| route | steps/s | system-steps/s | vs ASE |", "| --- | --- | --- | --- |"]
    for name, rate in rates.items():
        systems = args.batch if "batch" in name else 1
        rows.append(f"| {name} | {rate:.2f} | {rate * systems:.2f} | {rate * systems / ase:.2f}× |")
    RESULTS.mkdir(exist_ok=True)
    record = {"model": args.model, "task": args.task, "atoms": 64, "steps": args.steps, "batch": args.batch,
              "steps_per_second": rates, "load_average": os.getloadavg()}
    (RESULTS / "md_routes.json").write_text(json.dumps(record, indent=2) + "\n")
    (RESULTS / "md_routes.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
