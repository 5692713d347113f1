"""Plots for KG runs: CAT router weights per relation (interpretable curvature preferences)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

COLORS = {"E": "#4c72b0", "H": "#dd8452", "S": "#55a868"}


def plot_router_weights(router: dict[str, Any], path: str | Path, title: str = "CAT router weights per relation") -> Path:
    """Stacked bars of mean [MASK]-token router weights per (relation, direction).

    router: `results["router_by_relation"]` ({relation: {"tail"|"head": {"mean": {branch: w}}}}).
    Writes a PNG to `path` and returns it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(f"{rel} ({d})", v["mean"]) for rel, dirs in router.items() for d, v in sorted(dirs.items(), reverse=True)]
    if not rows:
        raise ValueError("plot_router_weights: no router weights to plot")
    branches = list(rows[0][1])
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(rows) + 1.2))
    left = np.zeros(len(rows))
    for b in branches:
        w = np.array([m[b] for _, m in rows])
        ax.barh(range(len(rows)), w, left=left, color=COLORS.get(b), label=b)
        left += w
    ax.set_yticks(range(len(rows)), [name[:50] for name, _ in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("mean router weight ([MASK] token, averaged over blocks)")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
