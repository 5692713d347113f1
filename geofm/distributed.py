"""Device mesh + shardings for data parallelism, and multi-host initialisation.

Data parallel: a 1-D mesh over all devices with axis "data"; parameters and optimizer
state are replicated (``PartitionSpec()``), batches are stacked sub-batches
[P, ...] sharded on their leading axis (``PartitionSpec("data")``). XLA averages the
gradients across devices (the loss is a mean over the leading axis).

Multi-host (GPU/TPU pods, or several CPU processes): call ``initialize`` in every
process before anything touches a device; flags ``--coordinator-address HOST:PORT
--num-processes N --process-id I`` (or the env vars GEOFM_COORDINATOR_ADDRESS,
GEOFM_NUM_PROCESSES, GEOFM_PROCESS_ID). On CPU the cross-process collectives use gloo.
"""

from __future__ import annotations

import argparse
import logging
import os

import jax
from jax.sharding import NamedSharding, PartitionSpec

log = logging.getLogger(__name__)

__all__ = ["initialize", "add_distributed_args", "data_mesh"]


def add_distributed_args(p: argparse.ArgumentParser) -> None:
    """Add --coordinator-address / --num-processes / --process-id to a CLI parser."""
    p.add_argument("--coordinator-address", default=os.environ.get("GEOFM_COORDINATOR_ADDRESS"),
                   help="multi-host: HOST:PORT of process 0 (env GEOFM_COORDINATOR_ADDRESS)")
    p.add_argument("--num-processes", type=int, default=_env_int("GEOFM_NUM_PROCESSES"),
                   help="multi-host: total number of processes (env GEOFM_NUM_PROCESSES)")
    p.add_argument("--process-id", type=int, default=_env_int("GEOFM_PROCESS_ID"),
                   help="multi-host: this process's id in [0, num_processes) (env GEOFM_PROCESS_ID)")


def _env_int(name: str) -> int | None:
    v = os.environ.get(name)
    if v is None or v == "":
        return None
    try:
        return int(v)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {v!r}") from None


def initialize(coordinator_address: str | None, num_processes: int | None, process_id: int | None) -> bool:
    """`jax.distributed.initialize` when a coordinator is given; returns True if it ran.

    All three values are required together; on CPU backends gloo collectives are enabled.
    """
    given = [coordinator_address is not None, num_processes is not None, process_id is not None]
    if not any(given):
        return False
    if not all(given):
        raise ValueError("multi-host needs --coordinator-address, --num-processes and --process-id together")
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise ValueError(f"--process-id must be in [0, {num_processes}), got {process_id}")
    if num_processes == 1:
        return False
    if os.environ.get("JAX_PLATFORMS", "cpu").startswith("cpu") or jax.config.jax_platforms in (None, "", "cpu"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id)
    return True


def data_mesh(parallel: int) -> tuple[jax.sharding.Mesh, NamedSharding, NamedSharding]:
    """(mesh, replicated sharding, batch sharding) for ``parallel`` sub-batches per step.

    One process: the mesh spans the largest number of local devices that divides
    ``parallel`` (all of them when it is a multiple of the device count; a warning names
    the devices left idle otherwise). Several processes: every device, so ``parallel``
    must be a multiple of the global device count (ValueError otherwise).
    """
    if parallel < 1:
        raise ValueError(f"train.parallel must be >= 1, got {parallel}")
    n = jax.device_count()
    if jax.process_count() > 1:
        use = n
        if parallel % n:
            raise ValueError(f"train.parallel={parallel} must be a multiple of the {n} devices of the "
                             f"{jax.process_count()} processes")
    else:
        use = max(d for d in range(1, min(parallel, n) + 1) if parallel % d == 0)
        if use < n:
            log.warning("train.parallel=%d shards over %d of the %d devices (%d idle): use a multiple of %d to "
                        "use them all", parallel, use, n, n - use, n)
    devices = jax.devices()[:use]
    mesh = jax.sharding.Mesh(devices, ("data",))
    return mesh, NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec("data"))
