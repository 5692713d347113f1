"""Orbax CheckpointManager wrapper: atomic saves, keeps best + last, resume.

Each step directory holds two items:
  state: the pytree (arrays; e.g. `nnx.state(model).to_pure_dict()` + optimizer)
  meta:  JSON: step, metrics, user metadata (resolved config, seed, ...) and a
         structure fingerprint (path -> shape/dtype) of `state`.

Orbax writes every save into a temporary folder and renames it when complete,
so a process killed mid-save leaves the previous checkpoints loadable (the
half-written folder is ignored and cleaned up on the next open). Restoring
into a target whose structure differs, or from damaged files, raises
`CheckpointError` with the folder, the step and what differs.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocm

from geofm.config import ConfigError, from_dict, to_dict
from geofm.errors import UserError

log = logging.getLogger("geofm.checkpoint")

__all__ = ["CheckpointError", "Checkpointer", "tree_fingerprint", "config_changes", "check_resume", "latest_metadata"]


class CheckpointError(UserError, ValueError):
    """A checkpoint that is missing, damaged, or does not fit the restore target."""


def tree_fingerprint(tree: Any) -> dict[str, str]:
    """{"a/b/c": "float32[10,4]"} for every array leaf of `tree`."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        name = "/".join(_key_str(p) for p in path)
        dtype = leaf.dtype if hasattr(leaf, "dtype") else np.asarray(leaf).dtype
        out[name] = f"{dtype}{list(np.shape(leaf))}"  # str(): also typed PRNG keys (key<fry>, nnx.Dropout streams)
    return out


def config_changes(saved: Mapping[str, Any], current: Mapping[str, Any], *, allowed: Sequence[str] = (),
                   prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two resolved config dicts (nested), as
    "key: saved -> current", skipping keys equal to or under an `allowed` dotted prefix."""
    out = []
    for k in sorted(set(saved) | set(current), key=str):
        key = f"{prefix}{k}"
        if any(key == a or key.startswith(a + ".") for a in allowed):
            continue
        a, b = saved.get(k, "<missing>"), current.get(k, "<missing>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += config_changes(a, b, allowed=allowed, prefix=key + ".")
        elif a != b:
            out.append(f"{key}: {a!r} -> {b!r}")
    return out


def check_resume(metadata: Mapping[str, Any], *, config: Any | None, checksums: Any, allowed: Sequence[str], where: str,
                 hint: str, checksums_key: str = "checksums") -> None:
    """Refuse (CheckpointError, nothing written) to resume a checkpoint whose recorded
    resolved config differs outside the `allowed` keys, or whose recorded data checksums
    differ from this run's (config None / checksums None: that part is not compared).

    config: this run's config dataclass; the recorded one is read back through the same
    schema, so keys added to the schema since the checkpoint was written take their
    defaults instead of counting as changes. metadata: what a Checkpointer stored; parts it
    lacks (older checkpoints) are not compared; checksums are read from metadata[checksums_key].
    hint: what to do instead."""
    problems = []
    saved_cfg = metadata.get("config") if config is not None else None
    if isinstance(saved_cfg, Mapping):
        try:
            saved_cfg = to_dict(from_dict(type(config), saved_cfg))
        except (ConfigError, TypeError, ValueError):
            pass  # keys since removed: compare the raw record
        changes = config_changes(saved_cfg, to_dict(config), allowed=allowed)
        if changes:
            more = f" (and {len(changes) - 6} more)" if len(changes) > 6 else ""
            problems.append("the config differs: " + "; ".join(changes[:6]) + more)
    saved = metadata.get(checksums_key)
    if saved is not None and checksums is not None and saved != checksums:
        problems.append(f"the data differ (checksums {_short(saved)} in the checkpoint, {_short(checksums)} now)")
    if problems:
        raise CheckpointError(f"cannot resume {where}: " + "; ".join(problems) + f". {hint}")


def latest_metadata(directory: str | Path) -> tuple[int, dict[str, Any]] | None:
    """(latest step, the user metadata stored with it) of a checkpoint folder; None when the
    folder is missing (it is not created) or holds no complete checkpoint."""
    if not Path(directory).is_dir():
        return None
    with Checkpointer(directory) as ck:
        step = ck.latest_step()
        return None if step is None else (step, ck.read_meta(step).get("metadata", {}))


def _short(checksums: Any) -> str:
    """Checksums (str, or a name -> str mapping) cut to 12 hex digits for messages."""
    if isinstance(checksums, Mapping):
        return "{" + ", ".join(f"{k}: {str(v)[:12]}" for k, v in checksums.items()) + "}"
    return str(checksums)[:12]


def _key_str(entry: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def _abstract(leaf: Any) -> Any:
    if isinstance(leaf, jax.Array):
        return ocp.utils.to_shape_dtype_struct(leaf)
    arr = np.asarray(leaf)
    return np.zeros(arr.shape, arr.dtype)  # numpy target -> restored as numpy


def _diff(saved: dict[str, str], target: dict[str, str], limit: int = 5) -> str:
    lines = []
    for k in sorted(set(saved) | set(target)):
        a, b = saved.get(k), target.get(k)
        if a != b:
            lines.append(f"  {k}: checkpoint {a or 'missing'} vs target {b or 'missing'}")
    more = f"\n  ... and {len(lines) - limit} more" if len(lines) > limit else ""
    return "\n".join(lines[:limit]) + more


class Checkpointer:
    """Keeps the last `keep_last` checkpoints and the best `keep_best` by `metric`.

    directory: run folder (created). metric: key in the `metrics` dict passed
    to `save`, ranked by `mode` ("max" or "min"). `metadata` (JSON-able, e.g.
    the resolved config) is stored with every step.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        metric: str = "valid_mrr",
        mode: Literal["max", "min"] = "max",
        keep_last: int = 1,
        keep_best: int = 1,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"Checkpointer mode must be 'max' or 'min', got {mode!r}")
        self.directory = Path(directory).resolve()
        if self.directory.exists() and not self.directory.is_dir():
            raise CheckpointError(f"checkpoint folder {self.directory} is a file, not a folder")
        self.metric, self.mode = metric, mode
        self.metadata = dict(metadata or {})
        sign = 1.0 if mode == "max" else -1.0

        def score(metrics: Any) -> float:
            value = float(metrics.get(metric, math.nan)) if isinstance(metrics, dict) else math.nan
            return sign * value if math.isfinite(value) else -math.inf

        policy = ocm.AnyPreservationPolicy(
            [ocm.LatestN(n=keep_last), ocm.BestN(get_metric_fn=score, reverse=False, n=keep_best)]
        )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policy,
            enable_async_checkpointing=False,
            cleanup_tmp_directories=True,
            best_fn=score,
            best_mode="max",
        )
        try:
            self._mgr = ocp.CheckpointManager(
                self.directory, options=options, item_names=("state", "meta")
            )
        except Exception as err:  # noqa: BLE001 - re-raised with context
            raise CheckpointError(f"cannot open checkpoint folder {self.directory}: {err}") from err

    # ------------------------------------------------------------ queries ---
    def all_steps(self) -> list[int]:
        return sorted(self._mgr.all_steps())

    def latest_step(self) -> int | None:
        return self._mgr.latest_step()

    def step_for(self, which: Literal["latest", "best"]) -> int | None:
        """The latest or the best step (None when there is none); ValueError for another ``which``."""
        if which not in ("latest", "best"):
            raise ValueError(f"which must be 'latest' or 'best', got {which!r}")
        return self.latest_step() if which == "latest" else self.best_step()

    def best_step(self) -> int | None:
        steps = self.all_steps()
        scored = [(s, self._score(s)) for s in steps]
        scored = [(s, v) for s, v in scored if v is not None]
        if not scored:
            return None
        return max(scored, key=lambda sv: (sv[1], sv[0]))[0]

    def _score(self, step: int) -> float | None:
        meta = self.read_meta(step)
        value = meta.get("metrics", {}).get(self.metric)
        if value is None or not math.isfinite(float(value)):
            return None
        return float(value) if self.mode == "max" else -float(value)

    def read_meta(self, step: int) -> dict[str, Any]:
        """The JSON metadata of one step (metrics, user metadata, fingerprint)."""
        try:
            out = self._mgr.restore(int(step), args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        except Exception as err:  # noqa: BLE001 - orbax raises many types
            raise CheckpointError(f"checkpoint {self.directory} step {step}: cannot read metadata: {err}") from err
        meta = out["meta"]
        if not isinstance(meta, dict):
            raise CheckpointError(f"checkpoint {self.directory} step {step}: metadata is not a mapping")
        return meta

    # -------------------------------------------------------- save/restore ---
    def save(self, step: int, state: Any, *, metrics: dict[str, float] | None = None, extra: dict | None = None) -> None:
        """Save `state` (pytree of arrays) at `step`; returns when it is on disk.
        CheckpointError when `step` is already saved (a checkpoint is never overwritten)."""
        metrics = {k: float(v) for k, v in (metrics or {}).items()}
        meta = {
            "step": int(step),
            "metrics": metrics,
            "metadata": self.metadata,
            "extra": dict(extra or {}),
            "fingerprint": tree_fingerprint(state),
        }
        try:
            self._mgr.save(
                int(step),
                args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                metrics=metrics,
                force=True,
            )
        except ocp.checkpoint_manager.StepAlreadyExistsError:
            raise CheckpointError(f"checkpoint {self.directory} already holds step {int(step)}; a saved step is "
                                  "never overwritten") from None
        self._mgr.wait_until_finished()

    def restore(
        self, target: Any, *, step: int | None = None, which: Literal["latest", "best"] = "latest"
    ) -> tuple[Any, dict[str, Any]]:
        """Restore into the structure of `target`; returns (state, meta).

        `step` wins over `which`. Raises CheckpointError when there is no
        checkpoint, when shapes/dtypes/keys differ, or when files are damaged.
        """
        if step is None:
            step = self.step_for(which)
        if step is None:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        if step not in self.all_steps():
            raise CheckpointError(f"no checkpoint step {step} in {self.directory}; have {self.all_steps()}")
        meta = self.read_meta(step)
        saved_fp, target_fp = meta.get("fingerprint", {}), tree_fingerprint(target)
        if saved_fp != target_fp:
            raise CheckpointError(
                f"checkpoint {self.directory} step {step} does not match the model/optimizer being "
                f"restored (different config?):\n{_diff(saved_fp, target_fp)}"
            )
        abstract = jax.tree_util.tree_map(_abstract, target)
        try:
            out = self._mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
        except Exception as err:  # noqa: BLE001 - orbax raises many types
            raise CheckpointError(f"cannot read checkpoint {self.directory} step {step}: {err}") from err
        return out["state"], meta

    def close(self) -> None:
        # orbax starts a clean-up of stale temporary folders in a thread when it opens a folder, and
        # its close() does not wait for it: a process that exits right after (an error on a just-opened
        # run) printed that thread's "cannot schedule new futures after interpreter shutdown" traceback
        await_cleanup = getattr(self._mgr, "_maybe_await_cleanup_tmp_directory", None)
        try:
            if callable(await_cleanup):
                await_cleanup()
        except Exception as err:  # noqa: BLE001 - a failed clean-up of stale temporaries loses nothing
            log.warning("clean-up of temporary checkpoint folders in %s failed: %s", self.directory, err)
        finally:
            self._mgr.close()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
