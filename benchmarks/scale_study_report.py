"""The per-task energy scale on two data sets: which treatment θT-L2 should use, chosen on validation.

    python benchmarks/scale_study_report.py [--results DIR] [--data tiny tiny_contrast]

The experiment lives in :mod:`sevenomni.experiments.ablation.scale_study` (see its docstring and ``--help``).
"""

from sevenomni.experiments.ablation.scale_study import main

if __name__ == "__main__":
    main()
