"""Node input features for pretraining: text embeddings or structural/positional features.

Text-free graphs get host-side (numpy/scipy) features that need no labels or text:

- random-walk return probabilities ``diag(P^t)``, t = 1..T (P = D^-1 A), estimated with
  Hutchinson's diagonal estimator on seeded Rademacher probes (exact in expectation,
  O(T * probes * E), so it scales to arxiv-sized graphs);
- spectral positions: the leading eigenvectors of the normalised adjacency
  D^-1/2 A D^-1/2 (= the smallest of the normalised Laplacian), sign-fixed so the
  largest-magnitude entry is positive;
- the local geometry descriptors of `geofm.structure.node_descriptors`, standardised.

Every domain's raw features are then mapped to one shared raw width by a FIXED random
projection seeded per dataset (``projection_seed``), so the same dataset gets the same
matrix in every call and every run (the GraphGlue reference redraws it on every call,
papers.md §1.6); the matrix is returned so runs can save it next to their checkpoints.
"""

from __future__ import annotations

import zlib

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import ArpackNoConvergence, eigsh

from geofm.structure import fit_standardizer, node_descriptors, standardize

__all__ = [
    "random_walk_features",
    "spectral_features",
    "structural_features",
    "projection_seed",
    "fixed_projection",
    "project_features",
]


def _adjacency(edge_index: np.ndarray, num_nodes: int) -> sp.csr_matrix:
    ei = np.asarray(edge_index)
    if ei.ndim != 2 or ei.shape[0] != 2:
        raise ValueError(f"edge_index must have shape [2, E], got {ei.shape}")
    if ei.size and (ei.min() < 0 or ei.max() >= num_nodes):
        raise ValueError(f"edge_index holds ids outside [0, {num_nodes})")
    keep = ei[0] != ei[1]
    s, r = ei[0][keep], ei[1][keep]
    a = sp.coo_matrix((np.ones(2 * s.size), (np.r_[s, r], np.r_[r, s])), shape=(num_nodes, num_nodes)).tocsr()
    a.data[:] = 1.0  # duplicates collapse to 1
    return a


def random_walk_features(edge_index: np.ndarray, num_nodes: int, *, steps: int = 8, probes: int = 64,
                         seed: int = 0) -> np.ndarray:
    """Return probabilities [N, steps] float32: column t-1 estimates (P^t)_vv.

    Hutchinson: diag(M) = E[z * (M z)] for Rademacher z; ``probes`` columns at once.
    Isolated nodes get 0.
    """
    if steps < 1 or probes < 1:
        raise ValueError(f"steps and probes must be >= 1, got {steps}, {probes}")
    a = _adjacency(edge_index, num_nodes)
    deg = np.asarray(a.sum(axis=1)).ravel()
    p = sp.diags(1.0 / np.maximum(deg, 1.0)) @ a
    z = np.random.default_rng(seed).choice([-1.0, 1.0], size=(num_nodes, probes))
    out = np.zeros((num_nodes, steps), np.float64)
    v = z
    for t in range(steps):
        v = p @ v
        out[:, t] = np.mean(z * v, axis=1)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def spectral_features(edge_index: np.ndarray, num_nodes: int, *, dim: int = 8, seed: int = 0) -> np.ndarray:
    """Leading eigenvectors [N, dim] float32 of D^-1/2 A D^-1/2, scaled by sqrt(N), sign-fixed.

    Graphs with <= dim + 1 nodes use a dense solver; zero columns pad the result.
    """
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    a = _adjacency(edge_index, num_nodes)
    deg = np.asarray(a.sum(axis=1)).ravel()
    inv = 1.0 / np.sqrt(np.maximum(deg, 1.0))
    m = sp.diags(inv) @ a @ sp.diags(inv)
    k = min(dim, max(num_nodes - 2, 1))
    if num_nodes <= max(64, 2 * dim + 2):
        w, v = np.linalg.eigh(m.toarray())
        v = v[:, ::-1][:, :k]
    else:
        v0 = np.random.default_rng(seed).standard_normal(num_nodes)
        try:
            w, v = eigsh(m, k=k, which="LA", v0=v0, tol=1e-4, maxiter=max(2000, 20 * num_nodes))
        except ArpackNoConvergence as err:  # keep what converged
            v = err.eigenvectors
        v = v[:, ::-1]
    idx = np.argmax(np.abs(v), axis=0)
    v = v * np.sign(v[idx, np.arange(v.shape[1])] + 1e-12)
    out = np.zeros((num_nodes, dim), np.float32)
    out[:, : v.shape[1]] = v * np.sqrt(num_nodes)
    return out


def structural_features(edge_index: np.ndarray, num_nodes: int, *, rw_steps: int = 8, spectral_dim: int = 8,
                        seed: int = 0) -> np.ndarray:
    """[N, rw_steps + spectral_dim + D] float32: random-walk, spectral and standardised
    `geofm.structure` descriptors (D = their column count), all finite."""
    ei = np.asarray(edge_index, dtype=np.int64)
    rw = random_walk_features(ei, num_nodes, steps=rw_steps, seed=seed)
    spec = spectral_features(ei, num_nodes, dim=spectral_dim, seed=seed)
    desc = node_descriptors(ei, num_nodes)
    desc = standardize(desc, fit_standardizer(desc))
    return np.nan_to_num(np.concatenate([rw, spec, desc], axis=1).astype(np.float32))


def projection_seed(name: str, seed: int) -> int:
    """Seed of a dataset's fixed projection: a function of (dataset name, run seed) only."""
    return int(np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))]).integers(2**31 - 1))


def fixed_projection(in_dim: int, out_dim: int, *, seed: int) -> np.ndarray:
    """Gaussian matrix [in_dim, out_dim] float32 / sqrt(in_dim), drawn from ``seed`` (same seed, same matrix)."""
    if in_dim < 1 or out_dim < 1:
        raise ValueError(f"projection dims must be >= 1, got {in_dim} x {out_dim}")
    g = np.random.default_rng(seed).standard_normal((in_dim, out_dim))
    return (g / np.sqrt(in_dim)).astype(np.float32)


def zscore_columns(x: np.ndarray, ref: np.ndarray | None = None) -> np.ndarray:
    """Column z-score of x [R, F] with the mean / std of ref [N, F] (default x itself; a
    std below 1e-8 counts as 1), float64: how `project_features` standardises its inputs,
    reusable for other rows that must land in the same space (e.g. class prompts)."""
    x = np.asarray(x, np.float64)
    ref = x if ref is None else np.asarray(ref, np.float64)
    mu, sd = ref.mean(axis=0), ref.std(axis=0)
    return (x - mu) / np.where(sd > 1e-8, sd, 1.0)


def project_features(x: np.ndarray, out_dim: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Column z-score then the fixed projection: (x' [N, out_dim] float32, matrix [F, out_dim]).

    When F == out_dim the features are only standardised and the matrix is the identity
    (no information is mixed away).
    """
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"features must be a non-empty [N, F] array, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("features contain NaN or inf")
    x = zscore_columns(x)
    if x.shape[1] == out_dim:
        mat = np.eye(out_dim, dtype=np.float32)
    else:
        mat = fixed_projection(x.shape[1], out_dim, seed=seed)
    return (x @ mat).astype(np.float32), mat
