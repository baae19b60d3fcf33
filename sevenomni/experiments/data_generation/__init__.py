"""Generate a small, seeded, multi-fidelity xTB dataset for multi-task training.

The generator is fully offline (ASE structure builders + tblite GFN1/GFN2-xTB),
seeded, resumable and parallel.  It writes one extended-XYZ file per set plus a
``manifest.json`` into ``--out``.

Sets
----
``crystal_gfn1`` (D1, train)
    Periodic solids labelled with GFN1-xTB energy, forces and stress.
    Chemistries (see ``CRYSTALS``): diamond C, graphite C, Si, 3C-SiC,
    alpha-quartz SiO2, MgO, LiF, LiH, fcc Al, an ordered cubic ice (ice Ic,
    H2O, protons placed by an Eulerian orientation of the O-O bond graph so
    that the ice rules hold), dry ice (CO2, Pa-3) and urea (P-42_1m).
    Supercells hold 8-24 atoms.  Three kinds of snapshot
    (``config_type``):

    * ``rattle``: Gaussian displacement of every Cartesian coordinate with a
      per-chemistry standard deviation ``sigma`` (table below);
    * ``strain``: the cell is deformed by ``(I + eps)`` with an isotropic part
      drawn from U(-m, m), off-diagonal (shear) parts from U(-m, m) and extra
      normal parts from U(-m/2, m/2), with ``m`` the chemistry's maximum
      strain (2-3 %, table); the atoms move with the cell and are then rattled
      with ``sigma / 2``;
    * ``md``: a short Langevin trajectory (friction 0.02 / fs) driven by GFN1
      itself, started from a ``sigma / 2`` rattle with Maxwell-Boltzmann
      velocities; after 10 warm-up steps one frame is kept every 5 steps
      (preset defaults); every chunk of at most 20 MD frames is its own
      trajectory.  Time step 1.0 fs, 0.5 fs for H-containing solids.

    Rattle amplitudes ``sigma`` (Angstrom), maximum strain and MD temperatures
    (small sigma for the stiff C, Si-C, Si-O and C=O networks so that forces
    stay moderate; larger for the soft ionic solids and the metal):

    ===================  =====  ========  ==========  =====
    chemistry            atoms  sigma/A   max strain  T/K
    ===================  =====  ========  ==========  =====
    C_diamond            16     0.03      2 %         600
    C_graphite           16     0.03      3 %         600
    Si_diamond           16     0.05      3 %         600
    SiC_3C               16     0.03      2 %         600
    SiO2_alpha_quartz    18     0.03      3 %         600
    MgO_rocksalt         16     0.05      3 %         600
    LiF_rocksalt         16     0.05      3 %         600
    LiH_rocksalt         16     0.05      3 %         400
    Al_fcc               8      0.08      3 %         600
    H2O_ice_Ic           24     0.04      3 %         200
    CO2_dry_ice          12     0.02      3 %         150
    urea                 16     0.03      3 %         250
    ===================  =====  ========  ==========  =====

    Fcc-based cells are 2x2x2 primitive supercells (isotropic).  GFN1-xTB is a
    poor model of metallic Al (large residual pressure, very stiff); Al is kept
    as a cheap metallic chemistry, not as a physically accurate one.

``molecule_gfn2`` (D2, train)
    Closed-shell H/C/N/O molecules of ``ase.collections.g2`` (at most 10 heavy
    atoms, more than one atom; radicals/triplets are excluded because the
    labels are spin-restricted).  For each molecule a few short Langevin MD
    trajectories (time step 0.5 fs, friction 0.01 / fs, temperature drawn per
    trajectory from U(300 K, 1000 K)) are driven by GFN2-xTB and sampled every
    20 steps (10 fs) after a 40-step warm-up (preset defaults).  Labels: GFN2-xTB energy and forces; no cell,
    no pbc, no stress.

``molecule_gfn1_dbs`` (DBS, train)
    A seeded random fraction (``dbs_fraction``, at least ``dbs_min``
    structures) of the ``molecule_gfn2`` structures relabelled with GFN1-xTB.
    ``info['struct_id']`` links every DBS structure to its D2 twin.

``test_crystal_gfn1``
    Same chemistries as D1 but independent rattle / strain / MD streams
    (separate random streams and separate trajectories).

``test_molecule_gfn2`` and ``test_molecule_gfn1``
    Whole molecules held out by name from D2 (seeded choice; their names are
    in the manifest).  The two files hold the SAME structures, labelled once
    with GFN2 and once with GFN1; a frame where either label fails is dropped
    from both.  The GFN1-vs-GFN2 force MAE/RMSE on them (the "transfer
    floor") is stored in ``manifest.json``.

``dft_molecule_pbe`` / ``dft_molecule_b3lyp`` (optional, ``--dft``)
    A handful of test-molecule structures labelled with PySCF PBE and B3LYP
    (def2-SVP).  Only if ``pyscf`` can be imported; skipped with a message
    otherwise.

Force filter
------------
A structure is dropped (and the drop counted in the manifest under
``skipped``) if its largest per-atom force norm max_i |F_i| exceeds
``--force-filter`` (default 20 eV/A), if any label is not finite
or if the xTB SCF does not converge (``CalculationFailed``).  An SCF failure
inside an MD trajectory ends that trajectory and a new one is started (at most
three restarts per chunk).  Nothing ever aborts the whole run.

File format
-----------
``{set}.extxyz`` written with ``ase.io.write(format="extxyz")``; labels live
only under REF_ keys (no calculator is attached):

* ``info['REF_energy']``  total energy, eV
* ``arrays['REF_forces']`` forces, eV/A
* ``info['REF_stress']``  Voigt-6 (xx, yy, zz, yz, xz, xy) stress, eV/A^3,
  ASE sign convention (stress = (1/V) dE/d(strain), negative under
  compression); periodic sets only
* ``info['config_type']`` rattle | strain | md
* ``info['source']``  chemistry or molecule name
* ``info['method']``  GFN1-xTB | GFN2-xTB | PBE/def2-SVP | B3LYP/def2-SVP
* ``info['struct_id']`` unique id, ``{source}/{split}/...`` (DBS and test
  GFN1 copies keep the id of their GFN2 twin)

Note that tblite evaluates periodic systems at the Gamma point only, so labels
of these small cells carry finite-size (k-point) errors; they are consistent
labels of the given cells, not converged bulk properties.

Reproducibility / resume / parallelism
--------------------------------------
Work is split into chunks (one per chemistry x split, one per molecule x
split, one per DBS source molecule).  Every chunk has its own random stream
derived from ``(seed, chunk name)`` and its own calculators, so results do not
depend on ``--workers`` or on the order of execution.  A finished chunk is
stored under ``OUT/.cache/`` (file name carries a hash of the chunk's
parameters and the script version); a killed run restarts where it stopped.
Final files are written atomically (temporary file + ``os.replace``).  Workers
run with ``OMP_NUM_THREADS=1``.  No train/valid split is made here; only the
test sets are held out.

Make-ups
--------
``--makeup contrast`` builds a second data set of the same size class, made to differ from the
standard one (``contrast``): crystals of five chemistries only (Si, 3C-SiC, MgO, LiF, Al: no H or
N, C and O in one chemistry each), rattled 4x, strained 2x and run at 3x the MD temperature of
the table above, with the counts per chemistry scaled so the set keeps its size; molecular
trajectories at 100-300 K instead of 300-1000 K. Molecules, splits and DBS rules are the standard
ones. Every set's manifest entry gives its RMS force component and
the spread of its energy per atom (``force_rms``, ``energy_per_atom_std``).

Modules
-------
One concept each, in the order a run uses them:

* :mod:`~sevenomni.experiments.data_generation.settings`: the version, xTB settings, method names;
* :mod:`~sevenomni.experiments.data_generation.threads`: one OpenMP/BLAS thread per process;
* :mod:`~sevenomni.experiments.data_generation.streams`: a seeded random stream per (seed, name);
* :mod:`~sevenomni.experiments.data_generation.presets`: ``Preset``, ``PRESETS`` and the contrast make-up;
* :mod:`~sevenomni.experiments.data_generation.structures`: crystal chemistries, molecules, molecule split;
* :mod:`~sevenomni.experiments.data_generation.labelling`: xTB single points, MD frames, strains;
* :mod:`~sevenomni.experiments.data_generation.cache`: the chunk cache under ``OUT/.cache``;
* :mod:`~sevenomni.experiments.data_generation.chunks`: the chunk runners (crystal, molecule, relabel, DFT);
* :mod:`~sevenomni.experiments.data_generation.pool`: the resumable parallel pool (``run_chunks``);
* :mod:`~sevenomni.experiments.data_generation.plan`: the chunk specs of a preset;
* :mod:`~sevenomni.experiments.data_generation.assemble`: set summaries, label spread, transfer floor;
* :mod:`~sevenomni.experiments.data_generation.driver`: ``generate``, the whole run;
* :mod:`~sevenomni.experiments.data_generation.cli`: the command line that
  ``scripts/make_multifidelity_data.py`` runs (see its usage).
"""

from sevenomni.experiments.data_generation.driver import generate
from sevenomni.experiments.data_generation.presets import MAKEUPS, PRESETS, Preset, contrast

__all__ = ["MAKEUPS", "PRESETS", "Preset", "contrast", "generate"]
