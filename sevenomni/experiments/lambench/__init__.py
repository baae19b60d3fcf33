"""LAMBench-style metrics (LAMBench, arXiv:2504.19578) of a sevenomni model or any ASE calculator.

* :mod:`.accuracy`: the test sets and the normalized force-field error M_FF;
* :mod:`.efficiency`: µs per atom on cells of 800–1,000 atoms (M_E);
* :mod:`.instability`: NVE energy drift (M_IS);
* :mod:`.runner`: the command (``benchmarks/lambench.py``), its calculators and its report.
"""
