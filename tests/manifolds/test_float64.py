"""The float64 pass: the manifolds test modules re-run in a subprocess with x64 on.

jax_enable_x64 is process-global, so it is never flipped in this process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
MODULES = ["test_invariants.py", "test_stereographic.py", "test_lorentz.py"]


@pytest.mark.slow
def test_manifolds_suite_in_float64():
    env = dict(os.environ, GEOFM_TEST_X64="1")
    args = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m", "not slow"]
    args += [str(HERE / m) for m in MODULES if (HERE / m).exists()]
    proc = subprocess.run(args, cwd=HERE.parents[1], env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout
