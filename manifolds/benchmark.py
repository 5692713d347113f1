"""Geometry micro-benchmark: κ-stereographic maps vs their Euclidean equivalents.

For N points of dimension d (float32, k = -1 passed as a runtime scalar so
nothing is constant-folded), times under `jax.jit`:

    expmap0(v)          vs  identity   (v·s, s a runtime scalar = 1: forces a real pass)
    logmap0(y)          vs  identity
    dist(x, y)          vs  |x - y|
    mobius_matvec(m, x) vs  x @ m.T    (m: [d, d])

forward, and forward+backward (gradient of sum(f(.) * w) w.r.t. every array
input, w a fixed random cotangent). Geometry and baseline calls are interleaved
after warm-up; each entry reports the median of `repeats` timings and the ratio
geometry/baseline of the medians (measured in the same process, same inputs).

No file I/O here: `run()` returns a dict, `format_table()` renders it; the
script bench/manifolds.py writes it to bench/results/manifolds.json and
`geofm demo` prints the quick table.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp

from manifolds import stereographic as st

__all__ = ["run", "format_table", "TARGET_FWD", "TARGET_FWD_BWD"]

TARGET_FWD = 2.0
TARGET_FWD_BWD = 3.0


def _ops() -> dict[str, tuple[Callable[..., jax.Array], Callable[..., jax.Array], tuple[str, ...]]]:
    """name -> (geometry fn, Euclidean fn, argument names). All fns take (args..., k)."""
    return {
        "expmap0": (lambda v, k: st.expmap0(v, k=k), lambda v, k: v * (1.0 + 0.0 * k), ("v",)),
        "logmap0": (lambda y, k: st.logmap0(y, k=k), lambda y, k: y * (1.0 + 0.0 * k), ("y",)),
        "dist": (
            lambda x, y, k: st.dist(x, y, k=k),
            lambda x, y, k: jnp.linalg.norm(x - y, axis=-1) * (1.0 + 0.0 * k),
            ("x", "y"),
        ),
        "mobius_matvec": (
            lambda m, x, k: st.mobius_matvec(m, x, k=k),
            lambda m, x, k: (x @ m.T) * (1.0 + 0.0 * k),
            ("m", "x"),
        ),
    }


def _inputs(n: int, d: int, seed: int) -> dict[str, jax.Array]:
    keys = jax.random.split(jax.random.key(seed), 4)
    # Points well inside the unit ball (k = -1): |x| ~ 0.5.
    pts = lambda kk: 0.5 * jax.random.normal(kk, (n, d), jnp.float32) / jnp.sqrt(d)  # noqa: E731
    m = jax.random.normal(keys[3], (d, d), jnp.float32) / jnp.sqrt(d)
    return {"v": pts(keys[0]), "y": pts(keys[1]), "x": pts(keys[2]), "m": m}


def _timed(fn: Callable[..., Any], args: tuple[Any, ...], inner: int = 1) -> float:
    """Seconds per call, averaged over `inner` back-to-back calls."""
    t0 = time.perf_counter()
    for _ in range(inner):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / inner


def _inner_calls(fn: Callable[..., Any], args: tuple[Any, ...], min_sample_s: float) -> int:
    """Calls per timing sample so one sample lasts at least `min_sample_s` (small n)."""
    once = max(_timed(fn, args), 1e-6)
    return max(1, min(1000, int(min_sample_s / once) + 1))


def _fwd_bwd(f: Callable[..., jax.Array], n_args: int) -> Callable[..., Any]:
    def loss(*a):
        *arrays, k, w = a
        out = f(*arrays, k)
        return jnp.sum(out * w)

    return jax.grad(loss, argnums=tuple(range(n_args)))


def run(*, n: int = 1_000_000, d: int = 64, repeats: int = 7, warmup: int = 2, seed: int = 0,
        quick: bool = False, min_sample_s: float = 0.05) -> dict[str, Any]:
    """Time every op; returns {"machine", "config", "results": {op: {...}}}.

    quick=True: n = 100_000 and 5 repeats (seconds instead of minutes). Each timing
    sample repeats the call until it lasts >= min_sample_s (so small n is not noise).
    """
    if quick:
        n, repeats = min(n, 100_000), min(repeats, 5)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    data = _inputs(n, d, seed)
    k = jnp.asarray(-1.0, jnp.float32)
    results: dict[str, Any] = {}
    for name, (geo, euc, argn) in _ops().items():
        arrays = tuple(data[a] for a in argn)
        out_shape = jax.eval_shape(lambda *a: geo(*a, k), *arrays).shape
        w = jax.random.normal(jax.random.key(seed + 1), out_shape, jnp.float32)
        entry: dict[str, Any] = {}
        for mode in ("forward", "forward_backward"):
            if mode == "forward":
                g_fn, e_fn, args = jax.jit(geo), jax.jit(euc), (*arrays, k)
            else:
                g_fn = jax.jit(_fwd_bwd(geo, len(arrays)))
                e_fn = jax.jit(_fwd_bwd(euc, len(arrays)))
                args = (*arrays, k, w)
            for _ in range(warmup):
                _timed(g_fn, args)
                _timed(e_fn, args)
            inner = _inner_calls(e_fn, args, min_sample_s)
            tg, te = [], []
            for _ in range(repeats):
                tg.append(_timed(g_fn, args, inner))
                te.append(_timed(e_fn, args, inner))
            mg, me = statistics.median(tg), statistics.median(te)
            target = TARGET_FWD if mode == "forward" else TARGET_FWD_BWD
            entry[mode] = {
                "geometry_s": mg,
                "euclidean_s": me,
                "ratio": mg / me,
                "target_ratio": target,
                "meets_target": mg / me <= target,
                "geometry_all_s": tg,
                "euclidean_all_s": te,
            }
        results[name] = entry
    return {
        "machine": {
            "jax": jax.__version__,
            "backend": jax.default_backend(),
            "device": str(jax.devices()[0]),
            "cpu_count": os.cpu_count(),
            "load_avg_1m_at_start": load,
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "config": {"n_points": n, "dim": d, "dtype": "float32", "k": -1.0, "repeats": repeats,
                   "warmup": warmup, "statistic": "median", "quick": quick,
                   "min_sample_s": min_sample_s},
        "results": results,
    }


def format_table(report: dict[str, Any]) -> str:
    """Readable table of a `run()` report."""
    cfg = report["config"]
    lines = [
        f"κ-stereographic vs Euclidean, n={cfg['n_points']:,} d={cfg['dim']} {cfg['dtype']} "
        f"(median of {cfg['repeats']}, jax {report['machine']['jax']}, {report['machine']['cpu_count']} CPUs)",
        f"{'op':<15}{'mode':<18}{'geometry ms':>12}{'euclid ms':>11}{'ratio':>8}{'target':>8}",
    ]
    for op, entry in report["results"].items():
        for mode, r in entry.items():
            mark = "ok" if r["meets_target"] else "MISS"
            lines.append(
                f"{op:<15}{mode:<18}{1e3 * r['geometry_s']:>12.2f}{1e3 * r['euclidean_s']:>11.2f}"
                f"{r['ratio']:>8.2f}{'<=' + format(r['target_ratio'], 'g'):>6} {mark}"
            )
    return "\n".join(lines)
