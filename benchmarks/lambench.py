"""LAMBench-style metrics (LAMBench, arXiv:2504.19578) for a sevenomni model or any ASE calculator.

    python benchmarks/lambench.py --model runs/quickstart/model.pt --name quickstart

The experiment lives in :mod:`sevenomni.experiments.lambench.runner` (see its docstring and ``--help``).
"""

from sevenomni.experiments.lambench.runner import main

if __name__ == "__main__":
    main()
