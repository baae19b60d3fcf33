"""The experiments behind the committed results: importable code that ``benchmarks/*.py`` calls.

* :mod:`sevenomni.experiments.ablation`: the selective-regularization ablation (its runner, the
  scoring of a trained model on the held-out sets, the tables and plots) and the reports built on
  its results (λ sweeps and main table, scale study, transfer-gap remedies, DBS selection);
* :mod:`sevenomni.experiments.lambench`: LAMBench-style metrics of a model or any ASE calculator;
* :mod:`sevenomni.experiments.data_generation`: the seeded multi-fidelity xTB data generator behind
  ``recipes/data`` (run by ``scripts/make_multifidelity_data.py``);
* :mod:`sevenomni.experiments.checkout`: where a repository checkout keeps recipes, data and results;
* :mod:`sevenomni.experiments.machine`: the machine a result was measured on.

They run from a checkout of the repository (the recipes and data sets are not installed with the
package).
"""
