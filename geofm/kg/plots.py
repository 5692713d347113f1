"""Plots for KG runs: CAT router weights per relation (interpretable curvature preferences)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from geofm.plot import save_png

COLORS = {"E": "#4c72b0", "H": "#dd8452", "S": "#55a868"}


def most_distinctive(rows: list[tuple[str, dict[str, float]]], max_rows: int) -> list[tuple[str, dict[str, float]]]:
    """The `max_rows` (name, {branch: weight}) rows farthest (L1) from the mean weights, in their
    original order; all rows when there are at most `max_rows`."""
    if len(rows) <= max_rows:
        return rows
    w = np.array([[m[b] for b in rows[0][1]] for _, m in rows])
    dev = np.abs(w - w.mean(0)).sum(1)
    keep = np.sort(np.argsort(-dev, kind="stable")[:max_rows])
    return [rows[i] for i in keep]


def plot_router_weights(router: dict[str, Any], path: str | Path, title: str = "CAT router weights per relation",
                        max_rows: int = 40, *, which: str = "mean") -> Path:
    """Stacked bars of mean [MASK]-token router weights per (relation, direction).

    router: `results["router_by_relation"]` ({relation: {"tail"|"head": {"mean": {branch: w}}}}).
    which: "mean" (attention routers, averaged over blocks) or "score" (the geometries'
    weights in the final score; runs from before they were logged have none).
    With more than `max_rows` (relation, direction) pairs (FB15k-237 has hundreds) only the
    `most_distinctive` ones are drawn and the title says so. Writes a PNG to `path` and returns it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if which not in ("mean", "score"):
        raise ValueError(f"plot_router_weights: which must be 'mean' or 'score', got {which!r}")
    rows = [(f"{rel} ({d})", v[which]) for rel, dirs in router.items() for d, v in sorted(dirs.items(), reverse=True)
            if which in v]
    if not rows:
        raise ValueError("plot_router_weights: no router weights to plot")
    if len(rows) > max_rows:
        title = f"{title}\n{max_rows} of {len(rows)} pairs, farthest from the mean"
        rows = most_distinctive(rows, max_rows)
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
    ax.set_xlabel("mean router weight ([MASK] token, averaged over blocks)" if which == "mean"
                  else "mean weight of each geometry in the final score")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return save_png(fig, path, dpi=120)
