"""Plots from a pretraining run folder (matplotlib, PNG; no TensorBoard).

    from geofm.plot import plot_run
    paths = plot_run("runs/tiny")      # loss_curves.png, gate_weights.png, embeddings.png

- loss curves: every logged loss term against the step, one panel per phase;
- gate weights: mean expert weight per pretraining domain (gated backbone only);
- embeddings: sample embeddings z of every domain, reduced to 2-D by PCA and mapped
  into the Poincaré disk (curvature k = -1) with `manifolds.stereographic.expmap0`,
  coloured by domain and by label.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["save_png", "read_metrics", "plot_losses", "plot_gates", "plot_embeddings", "plot_run"]

_TERMS = ("loss", "local", "proto", "holonomy", "curvature")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: str | Path, *, dpi: int = 110) -> Path:
    """Write a matplotlib figure as PNG atomically (a crash leaves the old file or none), close it."""
    import io

    from geofm.data.cache import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    _plt().close(fig)
    path = Path(path)
    atomic_write_bytes(path, lambda f: f.write(buf.getvalue()))
    return path


def read_metrics(run_dir: str | Path) -> list[dict]:
    """Rows of RUN_DIR/metrics.jsonl; ValueError naming the file and line on bad JSON."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise ValueError(f"{path}: not found (is {run_dir} a `geofm pretrain` run folder?)")
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{i}: invalid JSON: {err.msg}") from None
    return rows


def plot_losses(run_dir: str | Path, out: str | Path) -> Path:
    plt = _plt()
    rows = read_metrics(run_dir)
    phases = [p for p in ("local", "global", "refine") if any(r.get("phase") == p for r in rows)]
    fig, axes = plt.subplots(1, max(len(phases), 1), figsize=(4.5 * max(len(phases), 1), 3.5), squeeze=False)
    for ax, phase in zip(axes[0], phases):
        sel = [r for r in rows if r.get("phase") == phase]
        for term in _TERMS:
            pts = [(r["step"], r[term]) for r in sel if term in r]
            if pts:
                s, v = zip(*pts)
                ax.plot(s, v, marker=".", label=term)
        ax.set_title(f"{phase} phase")
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_png(fig, out)


def plot_gates(run_dir: str | Path, out: str | Path) -> Path | None:
    """Bar chart of the last logged mean gate weight per domain; None without a gated backbone."""
    rows = [r for r in read_metrics(run_dir) if "gate" in r]
    if not rows:
        return None
    plt = _plt()
    gate = rows[-1]["gate"]
    names = list(gate)
    w = np.asarray([gate[n] for n in names])
    fig, ax = plt.subplots(figsize=(1.5 + 1.2 * len(names), 3.5))
    bottom = np.zeros(len(names))
    for e in range(w.shape[1]):
        ax.bar(names, w[:, e], bottom=bottom, label=f"expert {e}")
        bottom += w[:, e]
    ax.set_ylabel("mean gate weight")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_png(fig, out)


def embed_domains(run_dir: str | Path, *, per_domain: int = 256, seed: int = 0,
                  data_dir: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(z [n, d], domain [n], label [n], names) for up to per_domain nodes of each pretraining
    domain, loaded again (from data_dir instead of the run's data.data_dir when given); ValueError,
    before anything is loaded, when a dataset's files differ from those the run recorded (run.json)."""
    import dataclasses

    import jax
    import jax.numpy as jnp
    from flax import nnx

    from geofm.data import find_dataset, source_checksums
    from geofm.glue import build_glue_batch
    from geofm.pretrain import files_checksum, load_domains, load_pretrained, with_data_dir

    model, cfg, names = load_pretrained(run_dir)
    cfg = dataclasses.replace(cfg, data=with_data_dir(cfg.data, data_dir))
    record = Path(run_dir) / "run.json"
    saved = [d.get("source_checksum") for d in json.loads(record.read_text())["domains"]] if record.is_file() else []
    for name, want in zip(cfg.data.datasets, saved):
        if want is None:  # a generated domain
            continue
        folder = find_dataset(name, cfg.data.data_dir)
        if files_checksum(source_checksums(folder)) != want:
            raise ValueError(f"dataset {name!r} at {folder} has other files than the run was pretrained on "
                             f"({record}); point --data-dir to the data it used")
    domains = load_domains(cfg)
    enc = nnx.jit(lambda m, b: m.encode(b).z)
    zs, ds, ls = [], [], []
    for i, d in enumerate(domains):
        rng = np.random.default_rng([seed, i])
        ids = rng.choice(d.num_nodes, size=min(per_domain, d.num_nodes), replace=False)
        for s in range(0, ids.size, 64):
            c = ids[s: s + 64]
            b = build_glue_batch([(d.sampler.sample(c, rng, batch_size=64), i)], num_generators=model.cfg.num_generators,
                                 max_nodes=model.cfg.max_nodes, labels=[d.labels])
            z = np.asarray(enc(model, jax.tree_util.tree_map(jnp.asarray, b)))[: c.size]
            zs.append(z)
            ds.append(np.full(c.size, i))
            ls.append(d.labels[c])
    return np.concatenate(zs), np.concatenate(ds), np.concatenate(ls), names


def poincare_2d(z: np.ndarray) -> np.ndarray:
    """PCA to 2-D, scaled to unit mean norm, then expmap0 onto the Poincaré disk (k = -1): [n, 2]."""
    from manifolds import stereographic as st

    zc = z - z.mean(0)
    _, _, vt = np.linalg.svd(zc, full_matrices=False)
    p = zc @ vt[:2].T
    p = p / max(np.linalg.norm(p, axis=1).mean(), 1e-9)
    return np.asarray(st.expmap0(p.astype(np.float32), k=-1.0))


def plot_embeddings(run_dir: str | Path, out: str | Path, *, data_dir: str | None = None) -> Path:
    plt = _plt()
    z, dom, lab, names = embed_domains(run_dir, data_dir=data_dir)
    xy = poincare_2d(z)
    fig, axes = plt.subplots(1, 2, figsize=(10, 5))
    for ax, colour, title in ((axes[0], dom, "domain"), (axes[1], lab, "label")):
        ax.add_patch(plt.Circle((0, 0), 1.0, fill=False, color="gray"))
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=colour, s=6, cmap="tab10" if title == "domain" else "tab20")
        ax.set_xlim(-1.05, 1.05)
        ax.set_ylim(-1.05, 1.05)
        ax.set_aspect("equal")
        ax.set_title(f"Poincaré disk, coloured by {title}")
        if title == "domain":
            handles = [plt.Line2D([], [], marker="o", ls="", color=sc.cmap(sc.norm(i))) for i in range(len(names))]
            ax.legend(handles, names, fontsize=7, loc="lower left")
    fig.tight_layout()
    return save_png(fig, out)


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None, *, embeddings: bool = True,
             data_dir: str | None = None) -> list[Path]:
    """Write the run's PNGs into out_dir (default: the run folder); returns their paths.
    data_dir: where the embedding plot reloads the pretraining datasets (default: the run's).
    ValueError (and no folder created) when run_dir holds no metrics.jsonl or out_dir is a file."""
    read_metrics(run_dir)  # refuse a non-run folder before creating anything
    out = Path(out_dir or run_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a folder (the plots are written into a folder)")
    out.mkdir(parents=True, exist_ok=True)
    paths = [plot_losses(run_dir, out / "loss_curves.png")]
    g = plot_gates(run_dir, out / "gate_weights.png")
    if g is not None:
        paths.append(g)
    if embeddings:
        paths.append(plot_embeddings(run_dir, out / "embeddings.png", data_dir=data_dir))
    return paths
