"""Shared helper for the benchmark scripts: the machine facts every result JSON records."""

from __future__ import annotations

import os
import platform


def machine_info(**extra) -> dict:
    """jax/numpy versions, backend, CPU count, platform, python and the 1-min load average at start."""
    import jax
    import numpy as np

    return {
        "jax": jax.__version__,
        "numpy": np.__version__,
        "backend": jax.default_backend(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_avg_1m_at_start": os.getloadavg()[0],
        **extra,
    }
