"""The three-seed ablation's report: λ chosen on validation, the main table, paired differences.

    python benchmarks/ablation_report.py [--results DIR]

The experiment lives in :mod:`sevenomni.experiments.ablation.report` (see its docstring and ``--help``).
"""

from sevenomni.experiments.ablation.report import main

if __name__ == "__main__":
    main()
