"""Which structures should a domain-bridging set hold? `disagreement` against `random`, same size.

    python benchmarks/dbs_selection.py --data tiny --steps 600 --count 10

The experiment lives in :mod:`sevenomni.experiments.ablation.dbs_selection` (see its docstring and ``--help``).
"""

from sevenomni.experiments.ablation.dbs_selection import main

if __name__ == "__main__":
    main()
