"""The selective-regularization ablation (the 7net-Omni paper's Fig. 1d) and the reports built on its results.

* :mod:`.arms`: the arms of ``recipes/ablation/arms.yaml``, their overrides, the data sets;
* :mod:`.training`: training one arm × seed through ``sevenomni train`` (resumable, reused when finished);
* :mod:`.scoring`: a trained model's metrics on the held-out test sets, and the transfer floor;
* :mod:`.summary`: aggregation over seeds, the markdown table and the bar plot;
* :mod:`.runner`: the command (``benchmarks/ablation.py``);
* :mod:`.report`, :mod:`.scale_study`, :mod:`.transfer_gap`, :mod:`.dbs_selection`: the reports
  and the DBS-selection experiment (``benchmarks/<name>.py``).
"""
