"""Names of the labels and predictions every layer exchanges, with their shapes and units.

Stores, readers, graphs, the model's output dict, the loss and the metrics all spell a label by
these constants. Graph attributes carry the same names (``batch.energy`` is the ENERGY label).
"""

from __future__ import annotations

ENERGY = "energy"  # total energy of a structure: eV; prediction [graphs], graph attribute [graphs] float64
FORCES = "forces"  # eV/Å; prediction and graph attribute [atoms, 3]
STRESS = "stress"  # eV/Å³, ASE sign (positive = tensile); prediction and graph attribute [graphs, 3, 3]
ATOMIC_ENERGIES = "atomic_energies"  # prediction only: eV per atom [atoms], shift and scale included

LABELS = (ENERGY, FORCES, STRESS)  # the trained labels, in the order of per-database loss weights

VOIGT = (0, 4, 8, 5, 2, 1)  # xx yy zz yz xz xy as positions in a flattened 3×3 tensor
