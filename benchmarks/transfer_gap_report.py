"""The transfer-gap remedies (issue 16) beside selective θT-L2 at the selected λ, three seeds each.

    python benchmarks/transfer_gap_report.py [--lambda 1]

The experiment lives in :mod:`sevenomni.experiments.ablation.transfer_gap` (see its docstring and ``--help``).
"""

from sevenomni.experiments.ablation.transfer_gap import main

if __name__ == "__main__":
    main()
