"""The invariant suite every manifold must pass (used by tests/manifolds).

Each `check_*` takes a `ManifoldSpec`, a PRNG key, the point shape `[n, D]` and a
dtype, draws its own random points/tangents, and raises AssertionError (with the
worst violation) when an invariant fails. `run_suite` runs every applicable
check. Tolerances scale with the dtype (`tol(dtype)`); the float64 pass needs
`jax_enable_x64`.

Invariants
  exp_log        logmap(x, expmap(x, v)) == v                         (|·|_x, relative)
  dist_symmetric dist(x, y) == dist(y, x), dist(x, x) == 0
  triangle       dist(x, z) <= dist(x, y) + dist(y, z)
  dist_expmap    dist(x, expmap(x, v)) == ||v||_x                    (small v)
  ptransp        <P u, P w>_y == <u, w>_x, P u tangent at y
  egrad2rgrad    <egrad2rgrad(x, g), u>_x == <g, u>_Euclid            (tangent u)
  gyro           ⊖x ⊕ (x ⊕ y) == y  (left cancellation; models with mobius_add)
  stays_inside   project / expmap (huge v) land on the manifold (inside the ball)
  finite_grads   grads w.r.t. points and every curvature are finite, incl. at the
                 origin, at coincident points and 1e-5 (relative) from the boundary
Model-specific: `check_stereographic_matches_lorentz`, `check_sphere_closed_form`,
`check_taylor_branch` (values/grads continuous through k = 0 and across the
series switch, k-gradient equal to a finite difference).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from manifolds import lorentz as lo
from manifolds import stereographic as st
from manifolds.product import Product
from manifolds.spec import Euclidean, Lorentz, ManifoldSpec, Stereographic, random_unit

__all__ = [
    "tol",
    "run_suite",
    "check_exp_log",
    "check_dist_symmetric",
    "check_triangle",
    "check_dist_expmap",
    "check_ptransp",
    "check_egrad2rgrad",
    "check_gyro",
    "check_stays_inside",
    "check_finite_grads",
    "check_stereographic_matches_lorentz",
    "check_sphere_closed_form",
    "check_taylor_branch",
    "edge_points",
]


def tol(dtype: Any) -> float:
    """Relative tolerance of the suite for `dtype`."""
    return 2e-3 if jnp.finfo(dtype).bits <= 32 else 1e-8


def _fail_if(bad: np.ndarray, what: str, err: np.ndarray, M: ManifoldSpec) -> None:
    if np.any(bad):
        i = int(np.argmax(np.where(bad, err, -np.inf)))
        raise AssertionError(f"{what} violated for {M!r}: worst error {float(err.ravel()[i]):.3g}")


def _np(x: jax.Array) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _supports_gyro(M: ManifoldSpec) -> bool:
    if isinstance(M, Product):
        return M.has_mobius_add()
    return hasattr(M, "mobius_add")


def _curv_cap(M: ManifoldSpec) -> float:
    """Largest positive curvature among the components (0 if none): limits tangent sizes."""
    ks = [float(np.max(np.asarray(k))) for k in M.curvatures()]
    return max([0.0] + ks)


def check_exp_log(M: ManifoldSpec, key: jax.Array, shape: tuple[int, int], dtype=jnp.float32,
                  radius: float = 2.0, scale: float = 1.0) -> None:
    """logmap(x, expmap(x, v)) == v, measured as |diff|_x <= tol (1 + |v|_x)."""
    kx, kv = jax.random.split(key)
    x = M.random_point(kx, shape, radius=radius, dtype=dtype)
    kmax = _curv_cap(M)
    if kmax > 0:  # stay well inside the injectivity radius pi R
        scale = min(scale, 0.8 * math.pi / math.sqrt(kmax))
    v = M.random_tangent(kv, x, scale=scale)
    back = M.logmap(x, M.expmap(x, v))
    err = _np(M.norm(x, back - v)) / (1.0 + _np(M.norm(x, v)))
    _fail_if(err > tol(dtype), "logmap(x, expmap(x, v)) == v", err, M)


def check_dist_symmetric(M: ManifoldSpec, key: jax.Array, shape: tuple[int, int], dtype=jnp.float32,
                         radius: float = 2.0) -> None:
    """dist(x, y) == dist(y, x) and dist(x, x) == 0 (up to tol)."""
    kx, ky = jax.random.split(key)
    x = M.random_point(kx, shape, radius=radius, dtype=dtype)
    y = M.random_point(ky, shape, radius=radius, dtype=dtype)
    dxy, dyx = _np(M.dist(x, y)), _np(M.dist(y, x))
    err = np.abs(dxy - dyx) / (1.0 + dxy)
    _fail_if(err > tol(dtype), "dist(x, y) == dist(y, x)", err, M)
    dxx = np.abs(_np(M.dist(x, x)))
    _fail_if(dxx > tol(dtype), "dist(x, x) == 0", dxx, M)
    _fail_if(dxy < 0, "dist >= 0", -dxy, M)


def check_triangle(M: ManifoldSpec, key: jax.Array, shape: tuple[int, int], dtype=jnp.float32,
                   radius: float = 2.0) -> None:
    """dist(x, z) <= dist(x, y) + dist(y, z) (+ tol)."""
    kx, ky, kz = jax.random.split(key, 3)
    x, y, z = (M.random_point(kk, shape, radius=radius, dtype=dtype) for kk in (kx, ky, kz))
    lhs = _np(M.dist(x, z))
    rhs = _np(M.dist(x, y)) + _np(M.dist(y, z))
    err = (lhs - rhs) / (1.0 + rhs)
    _fail_if(err > tol(dtype), "triangle inequality", err, M)


def check_dist_expmap(M: ManifoldSpec, key: jax.Array, shape: tuple[int, int], dtype=jnp.float32,
                      radius: float = 2.0, scale: float = 0.5) -> None:
    """dist(x, expmap(x, v)) == ||v||_x for small v."""
    kx, kv = jax.random.split(key)
    x = M.random_point(kx, shape, radius=radius, dtype=dtype)
    v = M.random_tangent(kv, x, scale=scale)
    d = _np(M.dist(x, M.expmap(x, v)))
    n = _np(M.norm(x, v))
    err = np.abs(d - n) / (1.0 + n)
    _fail_if(err > tol(dtype), "dist(x, expmap(x, v)) == |v|_x", err, M)


def check_ptransp(M: ManifoldSpec, key: jax.Array, shape: tuple[int, int], dtype=jnp.float32,
                  radius: float = 2.0, scale: float = 1.0) -> None:
    """Parallel transport preserves the Riemannian inner product and tangency."""
    kx, ky, ku, kw = jax.random.split(key, 4)
    x = M.random_point(kx, shape, radius=radius, dtype=dtype)
    y = M.random_point(ky, shape, radius=radius, dtype=dtype)
    u = M.random_tangent(ku, x, scale=scale)
    w = M.random_tangent(kw, x, scale=scale)
    pu, pw = M.ptransp(x, y, u), M.ptransp(x, y, w)
    before, after = _np(M.inner(x, u, w)), _np(M.inner(y, pu, pw))
    scale_ref = _np(M.norm(x, u)) * _np(M.norm(x, w))
    err = np.abs(before - after) / (1.0 + scale_ref)
    _fail_if(err > tol(dtype), "<P u, P w>_y == <u, w>_x", err, M)
    off = _np(M.norm(y, M.proj_tangent(y, pu) - pu)) / (1.0 + _np(M.norm(y, pu)))
    _fail_if(off > tol(dtype), "ptransp result tangent at y", off, M)


def check_egrad2rgrad(M: ManifoldSpec, key: jax.Array, shape: tuple[int, int], dtype=jnp.float32,
                      radius: float = 2.0) -> None:
    """<egrad2rgrad(x, g), u>_x == <g, u> (Euclidean) for tangent u: the Riesz representer."""
    kx, kg, ku = jax.random.split(key, 3)
    x = M.random_point(kx, shape, radius=radius, dtype=dtype)
    g = jax.random.normal(kg, shape, dtype)
    u = M.random_tangent(ku, x, scale=1.0)
    lhs = _np(M.inner(x, M.egrad2rgrad(x, g), u))
    rhs = _np(jnp.sum(g * u, axis=-1))
    ref = np.linalg.norm(_np(g), axis=-1) * np.linalg.norm(_np(u), axis=-1)
    err = np.abs(lhs - rhs) / (1.0 + ref)
    _fail_if(err > tol(dtype), "<rgrad, u>_x == <egrad, u>", err, M)


def check_gyro(M: ManifoldSpec, key: jax.Array, shape: tuple[int, int], dtype=jnp.float32,
               radius: float = 2.0) -> None:
    """Left cancellation ⊖x ⊕ (x ⊕ y) == y (skipped silently for models without ⊕)."""
    if not _supports_gyro(M):
        return
    kx, ky = jax.random.split(key)
    x = M.random_point(kx, shape, radius=radius, dtype=dtype)
    y = M.random_point(ky, shape, radius=radius, dtype=dtype)
    back = M.mobius_add(-x, M.mobius_add(x, y))
    err = _np(M.dist(back, y))
    _fail_if(err > tol(dtype) * 10, "left cancellation ⊖x ⊕ (x ⊕ y) == y", err, M)


def check_stays_inside(M: ManifoldSpec, key: jax.Array, shape: tuple[int, int], dtype=jnp.float32) -> None:
    """project() and expmap() with huge tangents (from edge points too) stay on the manifold."""
    kx, kv = jax.random.split(key)
    for x in [M.random_point(kx, shape, radius=3.0, dtype=dtype), *edge_points(M, kx, shape, dtype)]:
        v = M.random_tangent(kv, x, scale=50.0)
        for name, y in (("expmap", M.expmap(x, v)), ("project", M.project(x * 3.0 + 1.0))):
            ok = np.asarray(M.contains(y))
            if not ok.all():
                raise AssertionError(f"{name} left the manifold for {M!r} ({int((~ok).sum())} points)")


def edge_points(M: ManifoldSpec, key: jax.Array, shape: tuple[int, int], dtype=jnp.float32) -> list[jax.Array]:
    """[origin, far points]: far = 1e-5 (relative) from the ball's rim for k<0
    (capped at |x| = 1e6: for |k| < 1e-12 the rim is beyond float32 squares),
    near the antipode of the origin for k>0 (|x| = min(30/sqrt(k), 1e6)),
    distance 12 out for Lorentz, |x| = 10 otherwise."""
    if isinstance(M, Product):
        keys = jax.random.split(key, len(M.components))
        parts = [edge_points(c, kk, (shape[0], d), dtype) for c, d, kk in zip(M.components, M.dims, keys)]
        return [jnp.concatenate([p[i] for p in parts], axis=-1) for i in range(2)]
    origin = M.origin(shape, dtype)
    u = random_unit(key, shape, dtype)
    if isinstance(M, Stereographic):
        k = jnp.asarray(M.k, dtype)
        radius = jnp.where(k < 0, jnp.minimum((1.0 - 1e-5) / jnp.sqrt(jnp.abs(jnp.where(k < 0, k, -1.0))), 1e6),
                           jnp.where(k > 0, jnp.minimum(30.0 / jnp.sqrt(jnp.abs(jnp.where(k > 0, k, 1.0))), 1e6),
                                     10.0))
        return [origin, u * radius]
    if isinstance(M, Lorentz):
        v = jnp.concatenate([jnp.zeros_like(u[..., :1]), u[..., 1:]], axis=-1)
        v = v / jnp.linalg.norm(v, axis=-1, keepdims=True) * 12.0
        return [origin, lo.expmap0(v, k=M.k)]
    return [origin, u * 10.0]


def _probe_loss(M: ManifoldSpec, x: jax.Array, y: jax.Array, v: jax.Array) -> jax.Array:
    """A scalar touching every map (used for gradient finiteness)."""
    total = jnp.sum(M.dist(x, y)) + jnp.sum(M.logmap(x, y) ** 2) + jnp.sum(M.expmap(x, v))
    total = total + jnp.sum(M.inner(x, v, v)) + jnp.sum(M.ptransp(x, y, v)) + jnp.sum(M.egrad2rgrad(x, v))
    total = total + jnp.sum(M.project(x)) + jnp.sum(M.logmap0(x) ** 2) + jnp.sum(M.expmap0(M.logmap0(y)))
    return total + jnp.sum(M.dist(x, x))


@functools.partial(jax.jit, static_argnums=0)
def _probe_grads(skeleton: ManifoldSpec, x, y, v, ks):
    def loss(x_, y_, v_, ks_):
        return _probe_loss(skeleton.with_curvatures(ks_), x_, y_, v_)

    return jax.value_and_grad(loss, argnums=(0, 1, 2, 3))(x, y, v, ks)


def check_finite_grads(M: ManifoldSpec, key: jax.Array, shape: tuple[int, int], dtype=jnp.float32) -> None:
    """Gradients w.r.t. points, tangent and curvatures are finite at origin/edge/coincident points."""
    ks = tuple(jnp.asarray(k, dtype) for k in M.curvatures())
    # A hashable skeleton with placeholder curvatures: one compilation per model
    # structure and shape, the real (traced) curvatures are passed in.
    skeleton = M.with_curvatures(tuple(-1.0 for _ in ks))
    kx, kv = jax.random.split(key)
    cands = [*edge_points(M, kx, shape, dtype), M.random_point(kx, shape, dtype=dtype)]
    for xi, x in enumerate(cands):
        for y in cands:
            v = M.random_tangent(kv, x, scale=0.5)
            val, grads = _probe_grads(skeleton, x, y, v, ks)
            leaves = [val, *jax.tree.leaves(grads)]
            if not all(bool(jnp.all(jnp.isfinite(g))) for g in leaves):
                raise AssertionError(f"non-finite value/gradient for {M!r} at candidate point set {xi}")


def check_stereographic_matches_lorentz(k: float, key: jax.Array, shape: tuple[int, int],
                                        dtype=jnp.float32, radius: float = 2.0) -> None:
    """For k<0: Poincaré and hyperboloid distances agree; to/from_poincare are inverse."""
    ball = Stereographic(k)
    kx, ky = jax.random.split(key)
    p = ball.random_point(kx, shape, radius=radius, dtype=dtype)
    q = ball.random_point(ky, shape, radius=radius, dtype=dtype)
    xp, xq = lo.from_poincare(p, k=k), lo.from_poincare(q, k=k)
    d_ball, d_hyp = _np(st.dist(p, q, k=k)), _np(lo.dist(xp, xq, k=k))
    err = np.abs(d_ball - d_hyp) / (1.0 + d_ball)
    _fail_if(err > tol(dtype), "stereographic dist == Lorentz dist", err, ball)
    back = _np(st.dist(lo.to_poincare(xp, k=k), p, k=k))
    _fail_if(back > tol(dtype), "to_poincare(from_poincare(p)) == p", back, ball)
    # exp/log correspond: the hyperboloid geodesic maps onto the ball geodesic.
    v_ball = st.logmap(p, q, k=k)
    mid_ball = st.expmap(p, 0.5 * v_ball, k=k)
    mid_hyp = lo.to_poincare(lo.expmap(xp, 0.5 * lo.logmap(xp, xq, k=k), k=k), k=k)
    err = _np(st.dist(mid_ball, mid_hyp, k=k)) / (1.0 + d_ball)
    _fail_if(err > tol(dtype), "geodesic midpoints agree (ball vs hyperboloid)", err, ball)


def _sphere_lift(x: jax.Array, k: float) -> jax.Array:
    """Stereographic point -> R^{d+1} point on the sphere of radius 1/sqrt(k)."""
    lam = st.lambda_x(x, k=k)
    return jnp.concatenate([lam * x, (lam - 1.0) / math.sqrt(k)], axis=-1)


def check_sphere_closed_form(k: float, key: jax.Array, shape: tuple[int, int], dtype=jnp.float32) -> None:
    """For k>0: distances equal the great-circle distance 2R arcsin(|P - Q| / 2R) of the
    lifted points; expmap0 walks along the great circle (dist0(expmap0(v)) = 2|v|)."""
    sph = Stereographic(k)
    r = 1.0 / math.sqrt(k)
    kx, ky, kv = jax.random.split(key, 3)
    x = sph.random_point(kx, shape, dtype=dtype, radius=10.0)
    y = sph.random_point(ky, shape, dtype=dtype, radius=10.0)
    px, py = _np(_sphere_lift(x, k)), _np(_sphere_lift(y, k))
    on = np.abs(np.linalg.norm(px, axis=-1) - r) / r
    _fail_if(on > tol(dtype), "lift lies on the sphere", on, sph)
    chord = np.linalg.norm(px - py, axis=-1)
    closed = 2.0 * r * np.arcsin(np.clip(chord / (2.0 * r), 0.0, 1.0))
    d = _np(st.dist(x, y, k=k))
    err = np.abs(d - closed) / (1.0 + closed)
    _fail_if(err > tol(dtype), "sphere dist == great-circle distance", err, sph)
    v = random_unit(kv, shape, dtype) * jnp.asarray(0.45 * math.pi * r, dtype)  # 2|v| < pi R
    d0 = _np(st.dist0(st.expmap0(v, k=k), k=k))
    err = np.abs(d0 - 2.0 * np.linalg.norm(_np(v), axis=-1)) / r
    _fail_if(err > tol(dtype), "dist0(expmap0(v)) == 2|v| on the sphere", err, sph)


def check_taylor_branch(key: jax.Array, shape: tuple[int, int], dtype=jnp.float32) -> None:
    """Values and k-gradients of the stereographic maps are continuous through k = 0
    (k = ±1e-7 vs 0) and across the series switch |k x^2| = 1e-3; in float64 the
    k-gradient also matches a central finite difference at k = 0."""
    kx, ky = jax.random.split(key)
    x = 0.5 * jax.random.normal(kx, shape, dtype) / math.sqrt(shape[-1])
    y = 0.5 * jax.random.normal(ky, shape, dtype) / math.sqrt(shape[-1])

    def f(kk):
        out = st.dist(x, y, k=kk) + jnp.sum(st.expmap0(y, k=kk) + st.logmap0(x, k=kk), axis=-1)
        return jnp.sum(out + st.dist0(x, k=kk) + jnp.sum(st.mobius_add(x, y, k=kk), axis=-1))

    vg = jax.value_and_grad(f)
    f0, g0 = (float(a) for a in vg(jnp.asarray(0.0, dtype)))
    scale = 1.0 + abs(f0) + abs(g0)
    h = 1e-7
    (fp, gp), (fm, gm) = ((float(a) for a in vg(jnp.asarray(kk, dtype))) for kk in (h, -h))
    # First-order continuity of f, second-order (symmetric) continuity of df/dk.
    for fk, kk in ((fp, h), (fm, -h)):
        if abs(fk - f0 - g0 * kk) > tol(dtype) * scale:
            raise AssertionError(f"discontinuity at k={kk}: f {fk} vs {f0} + {g0}·k")
    if abs(0.5 * (gp + gm) - g0) > tol(dtype) * scale or abs(gp - gm) > tol(dtype) * scale + 1e-4:
        raise AssertionError(f"df/dk discontinuous at 0: {gm}, {g0}, {gp} at k = -1e-7, 0, 1e-7")
    # Across the switch for a single scalar: t = k x^2 = ±1e-3 (1 ± 1e-6).
    for sign in (1.0, -1.0):
        xs = jnp.asarray([[0.7]], dtype)
        k_lo = jnp.asarray(sign * 1e-3 / 0.49 * (1 - 1e-6), dtype)
        k_hi = jnp.asarray(sign * 1e-3 / 0.49 * (1 + 1e-6), dtype)

        def h(kk):
            return jnp.sum(st.tan_k(xs, k=kk) + st.artan_k(xs, k=kk))

        a, b = jax.value_and_grad(h)(k_lo), jax.value_and_grad(h)(k_hi)
        # The true change over [k_lo, k_hi] is ~ grad·Δk; a jump would be far larger.
        expected = float(a[1]) * (float(k_hi) - float(k_lo))
        jump = abs(float(b[0]) - float(a[0]) - expected)
        if jump > 20 * float(jnp.finfo(dtype).eps) * abs(float(a[0])) or \
                abs(float(a[1]) - float(b[1])) > tol(dtype) * (1.0 + abs(float(a[1]))):
            raise AssertionError(f"series switch discontinuity at t={sign}1e-3: {a} vs {b}")
    if jnp.finfo(dtype).bits > 32:
        h = 1e-5
        fd = (float(f(jnp.asarray(h, dtype))) - float(f(jnp.asarray(-h, dtype)))) / (2 * h)
        if abs(fd - g0) > 1e-6 * scale:
            raise AssertionError(f"df/dk at 0: autodiff {g0} vs finite difference {fd}")


_GENERIC: tuple[Callable[..., None], ...] = (
    check_exp_log,
    check_dist_symmetric,
    check_triangle,
    check_dist_expmap,
    check_ptransp,
    check_egrad2rgrad,
    check_gyro,
    check_stays_inside,
    check_finite_grads,
)


def run_suite(M: ManifoldSpec, key: jax.Array, shape: tuple[int, int], dtype=jnp.float32) -> None:
    """Run every generic invariant on M, plus the ball/sphere cross-checks for
    Stereographic with |k| >= 1e-3 (below that the Lorentz/sphere coordinates are
    not representable in float32)."""
    keys = jax.random.split(key, len(_GENERIC) + 2)
    for check, kk in zip(_GENERIC, keys):
        check(M, kk, shape, dtype)
    if isinstance(M, Stereographic) and not isinstance(M.k, jax.core.Tracer):
        k = float(M.k)
        if k <= -1e-3:
            check_stereographic_matches_lorentz(k, keys[-2], shape, dtype)
        elif k >= 1e-3:
            check_sphere_closed_form(k, keys[-1], shape, dtype)
