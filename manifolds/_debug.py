"""`check_finite` debug flag: report the first op that produces a NaN.

Off by default. When on, `jax_debug_nans` is enabled: any primitive (or jitted
function, which is then re-run op by op) producing a NaN raises
FloatingPointError naming that op, instead of NaNs flowing on silently.
The geometry code keeps NaN out of masked branches too (double-where), so the
flag has no false alarms from it.

Switch it on before the code under test first runs: in a long-lived process,
executables JAX compiled and cached earlier may not be re-checked (observed in
the test suite after other modules ran), so the tests check it in a fresh process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import jax

__all__ = ["set_check_finite", "check_finite", "check_finite_enabled"]


def set_check_finite(enabled: bool) -> None:
    """Globally turn NaN reporting on or off (process-wide JAX config)."""
    jax.config.update("jax_debug_nans", bool(enabled))


def check_finite_enabled() -> bool:
    """Whether NaN reporting is currently on."""
    return bool(jax.config.jax_debug_nans)


@contextlib.contextmanager
def check_finite(enabled: bool = True) -> Iterator[None]:
    """Context manager: NaN reporting on (or off) inside, previous setting restored after."""
    previous = check_finite_enabled()
    set_check_finite(enabled)
    try:
        yield
    finally:
        set_check_finite(previous)
