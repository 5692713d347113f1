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


def ttest_p(diffs) -> float | None:
    """Two-sided one-sample t-test p-value of mean(diffs) != 0 (None when undefined: < 2
    values or all equal). diffs: paired differences, e.g. per-seed or per-split gaps."""
    import numpy as np
    from scipy import stats

    d = np.asarray(diffs, np.float64)
    if d.size < 2 or np.allclose(d, d[0]):
        return None
    return float(stats.ttest_1samp(d, 0.0).pvalue)


def paired_summary(diffs) -> dict:
    """Mean, sample std, standard error, 95 % t confidence interval, wins / losses and the
    two-sided t-test p-value of paired differences diffs [n] (n >= 2)."""
    import numpy as np
    from scipy import stats

    d = np.asarray(diffs, np.float64)
    se = float(d.std(ddof=1) / np.sqrt(d.size))
    half = float(stats.t.ppf(0.975, d.size - 1) * se)
    return {"n": int(d.size), "mean": float(d.mean()), "std": float(d.std(ddof=1)), "se": se,
            "ci95": [float(d.mean() - half), float(d.mean() + half)], "wins": int((d > 0).sum()),
            "losses": int((d < 0).sum()), "p_two_sided": ttest_p(d)}
