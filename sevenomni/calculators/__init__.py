"""Using a trained model: batched ``predict`` (``prediction``), the ASE calculator
(``ase_calculator``), DFT-D3 on top (``dispersion``) and extrapolation warnings."""
