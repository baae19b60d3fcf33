"""Which implementation runs the convolution's tensor product: e3nn, cuEquivariance, or the best at hand.

* ``e3nn`` — e3nn's generated code, on every device.
* ``cueq`` — NVIDIA cuEquivariance on every device: its CUDA kernels (``cuequivariance-ops-torch``)
  on GPU tensors, its PyTorch fallback elsewhere. ``cuequivariance-torch`` is a core dependency; the
  ``cuda`` extra adds the kernels.
* ``auto`` — cuEquivariance's kernels on GPU tensors where they are installed, e3nn otherwise.

The backend changes how the model computes, never its parameters: one state dict serves all three.
"""

from __future__ import annotations

import importlib.util
from typing import Literal

TPBackend = Literal["e3nn", "cueq", "auto"]
TP_BACKENDS = ("e3nn", "cueq", "auto")
CUDA_EXTRA_HINT = 'pip install cuequivariance-torch, and on a GPU pip install -e ".[cuda]" for its CUDA kernels'


def cueq_installed() -> bool:
    """Whether cuEquivariance's PyTorch front end can be imported."""
    return importlib.util.find_spec("cuequivariance_torch") is not None


def cueq_kernels_installed() -> bool:
    """Whether cuEquivariance's CUDA kernels (``cuequivariance_ops_torch``) are installed."""
    if not cueq_installed():
        return False
    try:
        import cuequivariance_ops_torch  # noqa: F401
    except (ImportError, OSError, RuntimeError):
        return False
    return True


def check_backend(backend: str) -> str:
    """``backend`` if it is a known backend this machine can run, else ValueError naming the fix."""
    if backend not in TP_BACKENDS:
        raise ValueError(f"tp_backend must be one of {list(TP_BACKENDS)}, got {backend!r}")
    if backend == "cueq" and not cueq_installed():
        raise ValueError(f"tp_backend 'cueq' needs cuEquivariance, which is not installed: {CUDA_EXTRA_HINT}")
    return backend


def uses_cueq(backend: str) -> bool:
    """Whether a model with ``backend`` builds cuEquivariance executors (``auto``: only with the kernels)."""
    return backend == "cueq" or (backend == "auto" and cueq_kernels_installed())
