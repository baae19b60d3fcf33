"""Selective-regularization ablation (the 7net-Omni paper's Fig. 1d) at laptop scale, with xTB labels.

    python benchmarks/ablation.py --seeds 0 1 2                 # the real ablation (small set; hours)
    python benchmarks/ablation.py --data tiny --seeds 0 --steps 300   # a quick check on the committed tiny set

The experiment lives in :mod:`sevenomni.experiments.ablation.runner` (see its docstring and ``--help``).
"""

from sevenomni.experiments.ablation.runner import main

if __name__ == "__main__":
    main()
