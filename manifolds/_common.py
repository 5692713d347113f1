"""Shared helpers for the manifold models: dtype handling, input validation,
zero-safe norms and per-dtype numerical constants.

Nothing here is geometry; the models in `stereographic.py`, `lorentz.py` and
`product.py` build on these.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
ArrayLike = Any

# Distance of the projection boundary from the ball's rim, relative to its radius.
_BALL_EPS = {
    np.dtype(np.float16): 1e-3,
    np.dtype(jnp.bfloat16): 1e-2,
    np.dtype(np.float32): 1e-5,
    np.dtype(np.float64): 1e-9,
}


def as_float(x: ArrayLike, name: str = "x") -> Array:
    """`x` as a JAX floating array (ints/bools become the default float dtype)."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    if x.ndim == 0:
        raise ValueError(f"{name} must have at least one axis (points are [..., d]); got a scalar")
    return x


def as_curvature(k: ArrayLike, dtype: Any, points: tuple[int, ...] | None = None, name: str = "x",
                 what: str = "k") -> Array:
    """`k` as an array of `dtype`: a scalar or an array whose last axis has size 1.

    The trailing 1 makes per-point curvature explicit: for points `[..., n, d]`
    a per-point `k` has shape `[..., n, 1]` (a `[n]`-shaped k would silently
    broadcast against the coordinate axis, so it is rejected). points: the shape of
    the points `name` the curvature applies to; when given, `k` must broadcast
    against `points[:-1] + (1,)` (ValueError naming both shapes otherwise). what: the
    argument's name in messages (the same rule serves other per-point scalars, e.g. the
    factor of `mobius_scalar_mul`).
    """
    if isinstance(k, (str, bytes)):
        raise TypeError(f"{what} must be a number or an array, got the string {k!r}")
    k = jnp.asarray(k, dtype=dtype)
    if k.ndim > 0 and k.shape[-1] != 1:
        raise ValueError(
            f"{what} must be a scalar or have a trailing axis of size 1 (got shape {k.shape}); "
            f"for per-point values of points [..., d] pass {what}[..., None]"
        )
    if points is not None and k.ndim > 0:
        try:
            np.broadcast_shapes(tuple(points[:-1]) + (1,), k.shape)
        except ValueError:
            raise ValueError(
                f"per-point {what} of shape {k.shape} does not broadcast against {name} of shape {tuple(points)} "
                f"({what} needs shape [..., 1] matching {name}[..., :1], here {tuple(points[:-1]) + (1,)})"
            ) from None
    return k


def check_same_dim(a: Array, b: Array, names: str) -> None:
    """ValueError unless `a` and `b` have the same size on the last axis and broadcast."""
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(
            f"{names}: expected the same last-axis size (the manifold dimension), "
            f"got shapes {a.shape} and {b.shape}"
        )
    try:
        np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"{names}: shapes {a.shape} and {b.shape} do not broadcast") from None


def ball_eps(dtype: Any) -> float:
    """Relative margin from the ball's boundary used by `project` for this dtype."""
    return _BALL_EPS.get(np.dtype(dtype), 1e-5)


def artanh_clip(dtype: Any) -> float:
    """Largest artanh argument used (1 - machine eps of `dtype`)."""
    return 1.0 - float(jnp.finfo(dtype).eps)


def sq_norm(x: Array, *, keepdims: bool = True) -> Array:
    """Squared Euclidean norm over the last axis: [..., d] -> [..., 1] (or [...])."""
    return jnp.sum(x * x, axis=-1, keepdims=keepdims)


def safe_sqrt(s: Array) -> Array:
    """sqrt(s) for s >= 0 with gradient 0 (not inf/NaN) at s == 0 (double-where)."""
    pos = s > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, s, 1.0)), 0.0)


def safe_norm(x: ArrayLike, *, keepdims: bool = False) -> Array:
    """Euclidean norm over the last axis, zero-safe: [..., d] -> [...] (or [..., 1]).

    The gradient at x == 0 is 0 instead of NaN (double-where trick).
    """
    x = jnp.asarray(x)
    return safe_sqrt(sq_norm(x, keepdims=keepdims))


def polyval(coeffs: tuple[float, ...], t: Array) -> Array:
    """sum_i coeffs[i] * t**i by Horner's rule (elementwise)."""
    acc = jnp.full_like(t, coeffs[-1])
    for c in coeffs[-2::-1]:
        acc = acc * t + c
    return acc


def is_concrete(k: ArrayLike) -> bool:
    """True when `k` has a value at trace time (Python/NumPy number or non-traced array)."""
    return not isinstance(k, jax.core.Tracer)
