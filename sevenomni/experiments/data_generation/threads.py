"""One OpenMP/BLAS thread per labelling process: for the whole process (set before tblite loads) or
scoped (for a process that loaded it already, e.g. under pytest).
"""

from __future__ import annotations

import os
from contextlib import contextmanager

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def limit_threads() -> None:
    """One OpenMP/BLAS thread per process (must run before tblite starts)."""
    for var in _THREAD_VARS:
        os.environ[var] = "1"
    os.environ.setdefault("OMP_STACKSIZE", "256M")


@contextmanager
def single_threaded():
    """Scoped one-thread limit for already loaded OpenMP/BLAS runtimes (tblite's libgomp).

    Needed when the generator runs inside a process that did not start with
    OMP_NUM_THREADS=1 (e.g. under pytest): small xTB jobs with several
    OpenMP threads are slower, and on a loaded machine dramatically so.
    Uses threadpoolctl if it is installed; otherwise a no-op.
    """
    try:
        import tblite.ase  # noqa: F401  (loads the OpenMP runtime that must be limited)
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1):
        yield
