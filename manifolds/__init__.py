"""manifolds: pure-JAX Riemannian geometry for mixed-curvature models.

Curvature convention everywhere: `k` is the signed sectional curvature, keyword
only (k<0 hyperbolic, k=0 flat, k>0 spherical).

Modules
  stereographic  κ-stereographic model, one code path for all k (functions)
  lorentz        hyperboloid model, k<0 (functions), exact maps to/from the ball
  product        `Product` of components over last-axis slices
  spec           `Stereographic`, `Lorentz`, `Euclidean`: thin object interface
  optim          `riemannian_sgd`, `riemannian_adam` (optax transformations)
  testing        the invariant suite every manifold must pass
"""

from manifolds import lorentz, stereographic
from manifolds._debug import check_finite, check_finite_enabled, set_check_finite
from manifolds.product import Product
from manifolds.spec import Euclidean, Lorentz, ManifoldSpec, Stereographic

__all__ = [
    "stereographic",
    "lorentz",
    "Stereographic",
    "Lorentz",
    "Euclidean",
    "Product",
    "ManifoldSpec",
    "set_check_finite",
    "check_finite",
    "check_finite_enabled",
]
