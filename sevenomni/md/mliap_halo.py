"""Is LAMMPS' ghost halo thick enough for a multi-layer model? Checked from the ML-IAP pair list alone.

With ``pair_style mliap unified FILE 1`` every atom LAMMPS holds (owned and ghost) has a full
neighbour list, and a message-passing model with ``layers`` interaction layers is exact on the
owned atoms when every atom within ``layers - 1`` hops of an owned atom has *all* its neighbours
present: the energy of an owned atom reaches ``layers`` hops out. LAMMPS does not hand the pair
style its ghost cutoff, so the check is geometric (:func:`check_halo`):

- the positions of the atoms connected to owned atoms are rebuilt from the pair vectors ``rij``
  (one frame per connected component of the pair graph);
- along each Cartesian direction where a component's atoms reach beyond its owned atoms (the halo
  is populated there), every ghost within ``layers - 1`` hops of an owned atom must have its whole
  cutoff sphere inside the component's extent. An atom at the edge of that extent proves that the
  ghost region reaches at least that far (ghosts are all the atoms within the ghost cutoff of the
  processor's sub-domain, which holds the owned atoms), so a pass is exact for orthogonal boxes
  (up to the atoms' motion since the last re-neighbouring, which the skin covers); a halo thinner
  than ``layers × cutoff`` leaves inner ghosts near its edge and is refused.

Where a component's atoms do not reach beyond its owned atoms on a side (a slab's vacuum), nothing
beyond can be connected to it (LAMMPS' ghost cutoff is at least the pair cutoff plus the skin). The
check is exact for orthogonal boxes; for triclinic ones LAMMPS' halo is a skewed slab and the
Cartesian extents only approximate it. The check errs towards refusing: it can refuse a halo that
is in fact sufficient where the structure itself is sparse (a lone molecule crossing a periodic
boundary), or where the outermost ghosts sit up to an interatomic spacing inside the halo's edge
(hence ``comm_modify cutoff`` = layers × cutoff + skin, not layers × cutoff).
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


class HaloError(ValueError):
    """The ghost atoms LAMMPS provides cannot give the model's exact energy and forces."""


def required_ghost_cutoff(layers: int, cutoff: float) -> float:
    """The ghost halo a ``layers``-layer model of this cutoff needs (the skin comes on top)."""
    return layers * cutoff


def advice(layers: int, cutoff: float) -> str:
    halo = required_ghost_cutoff(layers, cutoff)
    return (
        f"this model has {layers} layers × {cutoff:g} Å cutoff: use `pair_style mliap unified FILE 1` "
        f"and `comm_modify cutoff {halo + 2.0:g}` (at least {halo:g} Å + the neighbour skin)"
    )


def check_ghost_neighbours(nlocal: int, ntotal: int, natomneigh: int, layers: int, cutoff: float) -> None:
    """Refuse LAMMPS' ghost-neighbour flag 0: the ghosts then have no neighbours and the model is wrong."""
    if layers > 1 and ntotal > nlocal and natomneigh < ntotal:
        raise HaloError(
            f"the ghost atoms have no neighbour lists ({natomneigh} listed of {ntotal} atoms; the ghost-neighbour "
            f"flag of `pair_style mliap unified` is 0), so a multi-layer model gives wrong energies; "
            f"{advice(layers, cutoff)}"
        )


def hops_from_owned(nlocal: int, ntotal: int, pair_i: np.ndarray, pair_j: np.ndarray, hops: int) -> np.ndarray:
    """Whether each atom is within ``hops`` pair-list hops of an owned atom (index < nlocal)."""
    reached = np.zeros(ntotal, dtype=bool)
    reached[:nlocal] = True
    for _ in range(hops):
        grown = reached.copy()
        grown[pair_j[reached[pair_i]]] = True
        if np.array_equal(grown, reached):
            break
        reached = grown
    return reached


def rebuild_positions(
    ntotal: int, pair_i: np.ndarray, pair_j: np.ndarray, rij: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(component label, position in its component's frame) of every atom, from ``rij = x_j − x_i``."""
    graph = coo_matrix((np.ones(len(pair_i)), (pair_i, pair_j)), shape=(ntotal, ntotal))
    _, labels = connected_components(graph, directed=False)
    _, roots = np.unique(labels, return_index=True)  # the lowest index of each component
    positions = np.full((ntotal, 3), np.nan)
    known = np.zeros(ntotal, dtype=bool)
    positions[roots] = 0.0
    known[roots] = True
    while True:
        step = known[pair_i] & ~known[pair_j]
        if not step.any():
            break
        targets, first = np.unique(pair_j[step], return_index=True)
        edges = np.flatnonzero(step)[first]
        positions[targets] = positions[pair_i[edges]] + rij[edges]
        known[targets] = True
    return labels, positions


def check_halo(
    nlocal: int, ntotal: int, pair_i: np.ndarray, pair_j: np.ndarray, rij: np.ndarray, layers: int, cutoff: float,
    reach: np.ndarray | None = None,
) -> None:
    """HaloError unless every ghost within ``layers − 1`` hops of an owned atom has all its neighbours.

    ``reach``: :func:`hops_from_owned` for ``layers − 1`` hops, if the caller has it already.
    """
    if reach is None:
        reach = hops_from_owned(nlocal, ntotal, pair_i, pair_j, layers - 1)
    inner = reach.copy()
    inner[:nlocal] = False
    if not inner.any():
        return
    labels, positions = rebuild_positions(ntotal, pair_i, pair_j, rij)
    count = labels.max() + 1
    extent_low, extent_high = np.full((count, 3), np.inf), np.full((count, 3), -np.inf)
    owned_low, owned_high = np.full((count, 3), np.inf), np.full((count, 3), -np.inf)
    placed = ~np.isnan(positions[:, 0])
    np.minimum.at(extent_low, labels[placed], positions[placed])
    np.maximum.at(extent_high, labels[placed], positions[placed])
    owned = np.arange(ntotal) < nlocal
    np.minimum.at(owned_low, labels[owned], positions[owned])
    np.maximum.at(owned_high, labels[owned], positions[owned])
    tolerance = 1e-9 * max(cutoff, 1.0)
    ghosts = np.flatnonzero(inner)
    label = labels[ghosts]
    high_side = extent_high[label] > owned_high[label] + tolerance  # the halo is populated there
    low_side = extent_low[label] < owned_low[label] - tolerance
    room = np.minimum(  # how far each inner ghost is from the populated edges of its component
        np.where(high_side, extent_high[label] - positions[ghosts], np.inf),
        np.where(low_side, positions[ghosts] - extent_low[label], np.inf),
    ).min(axis=1)
    short = room < cutoff - tolerance
    if short.any():
        raise HaloError(
            f"the ghost halo is too thin for message passing: {int(short.sum())} ghost atom(s) within "
            f"{layers - 1} hop(s) of this rank's atoms lie {room[short].min():.2f} Å from its edge, closer than the "
            f"{cutoff:g} Å cutoff, so their neighbours are missing and forces would be wrong; {advice(layers, cutoff)}"
        )
