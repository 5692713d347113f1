"""Riemannian SGD and Adam as optax `GradientTransformation`s.

Which parameters live on a manifold is given by a pytree of specs `manifolds`
(a prefix of the params tree): a `ManifoldSpec` leaf (`Stereographic(k)`,
`Lorentz(k)`, `Product(...)`, `Euclidean()`) means every array below it is a
batch of points `[..., n]` on that manifold; a `None` leaf means plain Euclidean
optax behaviour (elementwise, identical to `optax.sgd` / `optax.adam`). A single
spec (or None) applies to the whole tree. `specs_by_path` builds such a tree.

Algorithm per manifold leaf (Becigneul & Ganea, ICLR 2019; geoopt's variant):
    x     = project(param)                       (repair float drift)
    r     = egrad2rgrad(x, g)                    (Riemannian gradient)
    SGD:  m = momentum·m + r;  step = r + momentum·m (nesterov) or m
    Adam: m = b1·m + (1-b1)·r;  v = b2·v + (1-b2)·s(r)   with s(r) = lambda_x^2 r_i^2 per
          coordinate on conformal models or ||r||_x^2 per point (`adaptivity`)
          step = m̂ / (sqrt(v̂) + eps)           (bias-corrected)
    x'    = expmap(x, -lr·step)   (retraction="expmap")  or project(x - lr·step) ("project")
    m     = ptransp(x, x', m)                    (moment transport; v is a scalar, not moved)

Producing the new point: optax transformations return additive updates, so the
update for a manifold leaf is `x' - param`. `optax.apply_updates(params, updates)`
then lands on x' up to one rounding of the addition (the next step re-projects).
`learning_rate` may be a float or an optax schedule (evaluated at the step count).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from manifolds import stereographic as _st
from manifolds.product import Product
from manifolds.spec import Euclidean, ManifoldSpec, Stereographic

__all__ = [
    "RiemannianSGDState",
    "RiemannianAdamState",
    "riemannian_sgd",
    "riemannian_adam",
    "specs_by_path",
]

_RETRACTIONS = ("expmap", "project")
_ADAPTIVITY = ("coordinate", "point")


class RiemannianSGDState(NamedTuple):
    count: jax.Array  # int32 step counter
    momentum: Any  # like params (zeros when momentum == 0 and unused)


class RiemannianAdamState(NamedTuple):
    count: jax.Array  # int32 step counter
    mu: Any  # first moments, like params (tangent vectors at the current points)
    nu: Any  # second moments, like params (see `adaptivity`)


class _Box:
    """Wraps a spec (or None) so it stays a single leaf while broadcasting over params."""

    __slots__ = ("spec",)

    def __init__(self, spec: ManifoldSpec | None):
        self.spec = spec


def _is_spec_leaf(s: Any) -> bool:
    return s is None or isinstance(s, ManifoldSpec)


def _leaf_specs(specs: Any, params: Any) -> list[ManifoldSpec | None]:
    """Specs aligned with `jax.tree.leaves(params)`."""
    try:
        boxed = jax.tree.map(
            lambda s, sub: jax.tree.map(lambda _: _Box(s), sub), specs, params, is_leaf=_is_spec_leaf
        )
    except ValueError as err:
        raise ValueError(
            "manifolds.optim: the tree of manifold specs must be a prefix of the params tree "
            f"(a ManifoldSpec or None at each leaf/subtree): {err}"
        ) from None
    return [b.spec for b in jax.tree.leaves(boxed, is_leaf=lambda b: isinstance(b, _Box))]


def specs_by_path(params: Any, rule: Callable[[str, Any], ManifoldSpec | None]) -> Any:
    """Spec tree from `rule(path_string, leaf)` (e.g. match parameter names)."""
    return jax.tree_util.tree_map_with_path(lambda p, x: rule(jax.tree_util.keystr(p), x), params)


def _second_moment(spec: ManifoldSpec, x: jax.Array, r: jax.Array, adaptivity: str) -> jax.Array:
    """Per-coordinate squared-gradient statistic for Adam, same shape as x.

    "coordinate": lambda_x^2 r_i^2 for the conformal models (Stereographic, Euclidean),
    whose metric is a multiple of the identity; "point": ||r||_x^2 broadcast over the
    point's coordinates. Lorentz (not conformal-diagonal) always uses "point";
    a Product applies the rule per component.
    """
    if isinstance(spec, Product):
        parts = zip(spec.components, spec.split(x), spec.split(r))
        return jnp.concatenate([_second_moment(c, a, b, adaptivity) for c, a, b in parts], axis=-1)
    if adaptivity == "coordinate" and isinstance(spec, Stereographic):
        return _st.lambda_x(x, k=spec.k) ** 2 * r * r
    if adaptivity == "coordinate" and isinstance(spec, Euclidean):
        return r * r
    return jnp.broadcast_to(spec.inner(x, r, r, keepdims=True), x.shape)


def _lr_at(learning_rate: optax.ScalarOrSchedule, count: jax.Array) -> jax.Array:
    return learning_rate(count) if callable(learning_rate) else jnp.asarray(learning_rate)


def _check_retraction(retraction: str) -> None:
    if retraction not in _RETRACTIONS:
        raise ValueError(f"retraction must be one of {_RETRACTIONS}, got {retraction!r}")


def _move(spec: ManifoldSpec, x: jax.Array, step: jax.Array, retraction: str) -> jax.Array:
    return spec.expmap(x, step) if retraction == "expmap" else spec.retract(x, step)


def _need_params(params: Any) -> None:
    if params is None:
        raise ValueError("manifolds.optim: update(grads, state, params) needs params for manifold leaves")


def riemannian_sgd(
    learning_rate: optax.ScalarOrSchedule,
    momentum: float = 0.0,
    *,
    nesterov: bool = False,
    manifolds: Any = None,
    retraction: str = "expmap",
) -> optax.GradientTransformation:
    """Riemannian SGD (with optional heavy-ball / Nesterov momentum, transported).

    `manifolds`: spec tree (prefix of params; None leaves are plain SGD, identical to
    `optax.sgd(learning_rate, momentum or None, nesterov)`). Manifold updates are
    `expmap(x, -lr·step) - param` (see module docstring).
    """
    _check_retraction(retraction)
    if momentum < 0:
        raise ValueError(f"momentum must be >= 0, got {momentum}")

    def init(params):
        return RiemannianSGDState(jnp.zeros([], jnp.int32), jax.tree.map(jnp.zeros_like, params))

    def update(grads, state, params=None):
        specs = _leaf_specs(manifolds, grads)
        treedef = jax.tree.structure(grads)
        g_l, m_l = jax.tree.leaves(grads), treedef.flatten_up_to(state.momentum)
        if any(s is not None for s in specs):
            _need_params(params)
        p_l = treedef.flatten_up_to(params) if params is not None else [None] * len(g_l)
        lr = _lr_at(learning_rate, state.count)
        updates, moms = [], []
        for spec, g, m, p in zip(specs, g_l, m_l, p_l):
            if spec is None:
                r = g
            else:
                x = spec.project(p)
                r = spec.egrad2rgrad(x, g)
            if momentum:
                m = momentum * m + r
                step = r + momentum * m if nesterov else m
            else:
                step = r
            if spec is None:
                updates.append((-lr * step).astype(g.dtype))
            else:
                x_new = _move(spec, x, -lr * step, retraction)
                if momentum:
                    m = spec.ptransp(x, x_new, m)
                updates.append((x_new - p).astype(p.dtype))
            moms.append(m)
        new_state = RiemannianSGDState(optax.safe_int32_increment(state.count), treedef.unflatten(moms))
        return treedef.unflatten(updates), new_state

    return optax.GradientTransformation(init, update)


def riemannian_adam(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    *,
    manifolds: Any = None,
    retraction: str = "expmap",
    adaptivity: str = "coordinate",
) -> optax.GradientTransformation:
    """Riemannian Adam (Becigneul & Ganea 2019) with transported first moments.

    `manifolds`: spec tree (prefix of params); None leaves behave exactly like
    `optax.adam(learning_rate, b1, b2, eps)`. Manifold updates are
    `expmap(x, -lr·m̂/(sqrt(v̂)+eps)) - param` (see module docstring).
    `adaptivity`: "coordinate" (default) keeps per-coordinate second moments
    lambda_x^2 r_i^2 on conformal models (Stereographic/Euclidean, as geoopt does) and
    one ||r||_x^2 per point on Lorentz; "point" uses one scalar per point and product
    component everywhere (the paper's product-manifold form). On the tree-embedding
    test "coordinate" reaches ~2.5x lower distortion in the same budget.
    """
    _check_retraction(retraction)
    if adaptivity not in _ADAPTIVITY:
        raise ValueError(f"adaptivity must be one of {_ADAPTIVITY}, got {adaptivity!r}")

    def init(params):
        specs = _leaf_specs(manifolds, params)
        treedef = jax.tree.structure(params)
        leaves = jax.tree.leaves(params)
        del specs  # validated; every moment has its parameter's shape
        zeros = [jnp.zeros_like(p) for p in leaves]
        return RiemannianAdamState(jnp.zeros([], jnp.int32), treedef.unflatten(zeros), treedef.unflatten(zeros))

    def update(grads, state, params=None):
        specs = _leaf_specs(manifolds, grads)
        treedef = jax.tree.structure(grads)
        g_l = jax.tree.leaves(grads)
        mu_l, nu_l = treedef.flatten_up_to(state.mu), treedef.flatten_up_to(state.nu)
        if any(s is not None for s in specs):
            _need_params(params)
        p_l = treedef.flatten_up_to(params) if params is not None else [None] * len(g_l)
        count = optax.safe_int32_increment(state.count)
        lr = _lr_at(learning_rate, state.count)
        t = count.astype(jnp.float32)
        bc1, bc2 = 1.0 - b1**t, 1.0 - b2**t
        updates, mus, nus = [], [], []
        for spec, g, mu, nu, p in zip(specs, g_l, mu_l, nu_l, p_l):
            if spec is None:
                mu = b1 * mu + (1.0 - b1) * g
                nu = b2 * nu + (1.0 - b2) * g * g
                step = (mu / bc1.astype(mu.dtype)) / (jnp.sqrt(nu / bc2.astype(nu.dtype)) + eps)
                updates.append((-lr * step).astype(g.dtype))
            else:
                x = spec.project(p)
                r = spec.egrad2rgrad(x, g)
                mu = b1 * mu + (1.0 - b1) * r
                nu = b2 * nu + (1.0 - b2) * _second_moment(spec, x, r, adaptivity)
                denom = jnp.sqrt(nu / bc2.astype(nu.dtype)) + eps
                step = (mu / bc1.astype(mu.dtype)) / denom
                x_new = _move(spec, x, -lr * step, retraction)
                mu = spec.ptransp(x, x_new, mu)
                updates.append((x_new - p).astype(p.dtype))
            mus.append(mu)
            nus.append(nu)
        new_state = RiemannianAdamState(count, treedef.unflatten(mus), treedef.unflatten(nus))
        return treedef.unflatten(updates), new_state

    return optax.GradientTransformation(init, update)
