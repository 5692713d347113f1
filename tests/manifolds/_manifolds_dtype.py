"""Test dtype for the manifolds suite: float32, or float64 when GEOFM_TEST_X64=1.

x64 is process-global in JAX, so the float64 pass runs these modules in a
subprocess (see test_float64.py) instead of flipping it for the whole session.
"""

import os

import jax
import jax.numpy as jnp

X64 = os.environ.get("GEOFM_TEST_X64") == "1"
if X64:
    jax.config.update("jax_enable_x64", True)
DTYPE = jnp.float64 if X64 else jnp.float32
