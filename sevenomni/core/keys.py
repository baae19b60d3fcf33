"""Names of the fields of a graph, a batch and the model's output dict: the registry every layer spells them by.

Each field is a constant (``TASK = "task"``) and a :class:`GraphField` in :data:`GRAPH_FIELDS`, which
declares its shape in a batch of ``graphs`` structures holding ``atoms`` atoms and ``edges`` edges in
all (one graph is a batch of one), its dtype and what attaches it. Graph attributes and the model's
predictions of the labels carry the same names (``batch.energy`` is the ENERGY label, ``out[ENERGY]``
its prediction, of the same shape in the model's dtype). Stores, readers, the loss and the metrics spell
the labels by these constants too. Files and checkpoints hold these strings: never change one.

torch_geometric's own ``num_nodes`` (a Python int) is set by the graph builder but is no field here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# built from a structure by data.graph.arrays_to_graph
ATOMIC_NUMBERS = "atomic_numbers"
POS = "pos"
CELL = "cell"
PBC = "pbc"
NUM_ATOMS = "num_atoms"
EDGE_INDEX = "edge_index"
CELL_SHIFT = "cell_shift"
# labels, their masks and the structure's bookkeeping, attached by data.dataset.LMDBDataset
ENERGY = "energy"
FORCES = "forces"
STRESS = "stress"
HAS_ENERGY = "has_energy"
HAS_FORCES = "has_forces"
HAS_STRESS = "has_stress"
TASK = "task"
DATABASE = "database"
STRUCTURE_WEIGHT = "structure_weight"
# added by torch_geometric's collation
BATCH = "batch"
PTR = "ptr"
# attached to a graph by the model, or only in its output
SPECIES = "species"
ATOMIC_ENERGIES = "atomic_energies"

LABELS = (ENERGY, FORCES, STRESS)  # the trained labels, in the order of per-database loss weights

VOIGT = (0, 4, 8, 5, 2, 1)  # xx yy zz yz xz xy as positions in a flattened 3×3 tensor

# The size a field runs along, as a shape names it, and what one entry of that size is.
_PER = {"graphs": "graph", "graphs+1": "graph", "atoms": "node", "edges": "edge"}


@dataclass(frozen=True)
class GraphField:
    """One field: its name, its shape in a batch, its dtype, what attaches it and what it means.

    ``shape`` holds exactly one size by name (``"graphs"``, ``"graphs+1"``, ``"atoms"`` or
    ``"edges"``), the others are fixed: FORCES is ``("atoms", 3)``, EDGE_INDEX ``(2, "edges")``.
    ``dtype`` is a torch dtype's name, or ``"model"`` for the model's dtype. ``source`` is what
    attaches the field: ``"graph"`` (data.graph), ``"dataset"`` (the data layer's labels),
    ``"batch"`` (torch_geometric's collation), ``"model"`` (``SevenOmniModel.attach_species``) or
    ``"output"`` (only in the model's output dict).
    """

    name: str
    shape: tuple[int | str, ...]
    dtype: str
    source: Literal["graph", "dataset", "batch", "model", "output"]
    doc: str

    def __post_init__(self) -> None:
        sizes = [size for size in self.shape if isinstance(size, str)]
        if len(sizes) != 1 or sizes[0] not in _PER:
            raise ValueError(f"field {self.name!r}: its shape {self.shape} must name one size of {list(_PER)}")

    @property
    def per(self) -> str:
        """``"graph"``, ``"node"`` or ``"edge"``: what one entry along the field's size belongs to."""
        return next(_PER[size] for size in self.shape if isinstance(size, str))


FIELDS = (
    GraphField(ATOMIC_NUMBERS, ("atoms",), "int64", "graph", "atomic number Z of each atom"),
    GraphField(POS, ("atoms", 3), "float64", "graph", "Cartesian positions, Å"),
    GraphField(CELL, ("graphs", 3, 3), "float64", "graph", "lattice vectors as rows, Å (zeros without a cell)"),
    GraphField(PBC, ("graphs", 3), "bool", "graph", "periodicity along each lattice vector"),
    GraphField(NUM_ATOMS, ("graphs",), "int64", "graph", "atoms in each structure"),
    GraphField(EDGE_INDEX, (2, "edges"), "int64", "graph",
               "row 0 the neighbour j (sender), row 1 the centre i (receiver); offset per graph in a batch"),
    GraphField(CELL_SHIFT, ("edges", 3), "float64", "graph",
               "integer lattice offsets S of each edge: r_ij = pos[j] - pos[i] + S · cell"),
    GraphField(ENERGY, ("graphs",), "float64", "dataset", "total energy of a structure, eV"),
    GraphField(FORCES, ("atoms", 3), "float64", "dataset", "forces, eV/Å"),
    GraphField(STRESS, ("graphs", 3, 3), "float64", "dataset", "stress, eV/Å³, ASE sign (positive = tensile)"),
    GraphField(HAS_ENERGY, ("graphs",), "bool", "dataset", "whether ENERGY is labelled (else zeros)"),
    GraphField(HAS_FORCES, ("graphs",), "bool", "dataset", "whether FORCES are labelled (else zeros)"),
    GraphField(HAS_STRESS, ("graphs",), "bool", "dataset", "whether STRESS is labelled (else zeros)"),
    GraphField(TASK, ("graphs",), "int64", "dataset",
               "index of the task channel: the structure's database's, or the one a prediction evaluates"),
    GraphField(DATABASE, ("graphs",), "int64", "dataset", "index of the structure's database in the run"),
    GraphField(STRUCTURE_WEIGHT, ("graphs",), "float64", "dataset",
               "loss factor of the structure's config_type (1 without one)"),
    GraphField(BATCH, ("atoms",), "int64", "batch", "the graph each atom belongs to"),
    GraphField(PTR, ("graphs+1",), "int64", "batch", "where each graph's atoms start, and the total at the end"),
    GraphField(SPECIES, ("atoms",), "int64", "model", "the model's species index of each atom, checked on the host"),
    GraphField(ATOMIC_ENERGIES, ("atoms",), "model", "output", "energy of each atom, eV, shift and scale included"),
)

GRAPH_FIELDS: dict[str, GraphField] = {field.name: field for field in FIELDS}  # every field, by name
