"""Scoring, comparing and looking at models: ``sevenomni eval``, ``analyze embeddings``, ``plot``.

* :mod:`~sevenomni.analysis.metrics` — errors against labels, cMAE, softening scale;
* :mod:`~sevenomni.analysis.evaluate` — every database on every channel, batched;
* :mod:`~sevenomni.analysis.embeddings` — task embeddings θT: norms, cosines, PCA;
* :mod:`~sevenomni.analysis.history` — a run's logged metrics;
* :mod:`~sevenomni.analysis.plots` — the figures.
"""
