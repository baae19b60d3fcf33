#!/usr/bin/env python
"""Generate a small, seeded, multi-fidelity xTB dataset for multi-task training.

The generator lives in :mod:`sevenomni.experiments.data_generation`; its docstring describes the sets,
the labels, the force filter, the file format, resume and parallelism, and the make-ups.

Usage::

    python scripts/make_multifidelity_data.py --preset tiny --out recipes/data/tiny --workers 2
    python scripts/make_multifidelity_data.py --preset small --out data/small --workers 16
    python scripts/make_multifidelity_data.py --preset small --makeup contrast --out data/small_contrast
"""

import sys

from sevenomni.experiments.data_generation.cli import main

if __name__ == "__main__":
    sys.exit(main())
