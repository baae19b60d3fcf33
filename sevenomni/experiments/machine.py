"""The machine a result was measured on, as recorded in the results files."""

from __future__ import annotations

import os
import platform


def machine_info(**extra) -> dict:
    """Platform, processor, CPU counts, Python and torch versions, then ``extra`` (the run's own
    settings, e.g. threads per run)."""
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        **extra,
    }
