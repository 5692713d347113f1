"""Tests for geofm.checkpoint: best+last retention, resume, clear errors, crash safety."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

from geofm.checkpoint import Checkpointer, CheckpointError


def _state(v: float) -> dict:
    return {"params": {"w": np.full((3, 2), v, np.float32), "b": np.zeros(2, np.float32)}, "step": np.int32(v)}


def test_keeps_best_and_last_and_resumes(tmp_path: Path) -> None:
    mrrs = [0.1, 0.5, 0.3, 0.2]
    with Checkpointer(tmp_path / "ck", metadata={"config": {"seed": 1}}) as ck:
        for step, m in enumerate(mrrs, start=1):
            ck.save(step, _state(step), metrics={"valid_mrr": m})
        assert ck.all_steps() == [2, 4]
        assert ck.best_step() == 2 and ck.latest_step() == 4
    with Checkpointer(tmp_path / "ck") as ck:  # reopen: resume
        state, meta = ck.restore(_state(0))
        assert float(state["params"]["w"][0, 0]) == 4.0 and meta["step"] == 4
        best, meta = ck.restore(_state(0), which="best")
        assert float(best["params"]["w"][0, 0]) == 2.0
        assert meta["metadata"]["config"] == {"seed": 1} and meta["metrics"]["valid_mrr"] == 0.5


def test_incompatible_target_is_a_clear_error(tmp_path: Path) -> None:
    with Checkpointer(tmp_path) as ck:
        ck.save(1, _state(1.0))
        wrong = _state(0.0)
        wrong["params"]["w"] = np.zeros((4, 2), np.float32)
        with pytest.raises(CheckpointError, match=r"params/w: checkpoint float32\[3, 2\] vs target float32\[4, 2\]"):
            ck.restore(wrong)
        with pytest.raises(CheckpointError, match="no checkpoint step 9"):
            ck.restore(_state(0), step=9)
    with Checkpointer(tmp_path / "empty") as ck, pytest.raises(CheckpointError, match="no checkpoint"):
        ck.restore(_state(0))
    with Checkpointer(tmp_path) as ck:
        with pytest.raises(ValueError, match="which must be 'latest' or 'best', got 'bestt'"):
            ck.restore(_state(0), which="bestt")  # type: ignore[arg-type]
        with pytest.raises(CheckpointError, match="already holds step 1; a saved step is never overwritten"):
            ck.save(1, _state(2.0))
        assert float(ck.restore(_state(0))[0]["params"]["w"][0, 0]) == 1.0
    (tmp_path / "afile").write_text("x")
    with pytest.raises(CheckpointError, match="afile is a file, not a folder"):
        Checkpointer(tmp_path / "afile")


def test_damaged_files_are_a_clear_error(tmp_path: Path) -> None:
    with Checkpointer(tmp_path) as ck:
        ck.save(1, _state(1.0))
    state_dir = tmp_path / "1" / "state"
    for f in state_dir.rglob("*"):
        if f.is_file() and f.stat().st_size > 0 and "metadata" not in f.name:
            f.write_bytes(b"garbage")
    shutil.rmtree(next(p for p in state_dir.rglob("*") if p.is_dir()), ignore_errors=True)
    with Checkpointer(tmp_path) as ck, pytest.raises(CheckpointError, match="step 1"):
        ck.restore(_state(0))


def test_kill_during_save_keeps_previous(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A save that dies before its atomic rename must leave step 1 intact and loadable."""
    from orbax.checkpoint._src.path import atomicity

    with Checkpointer(tmp_path) as ck:
        ck.save(1, _state(1.0), metrics={"valid_mrr": 0.2})

    def boom(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-save")

    with Checkpointer(tmp_path) as ck:
        for cls in (atomicity.AtomicRenameTemporaryPath, atomicity.CommitFileTemporaryPath):
            monkeypatch.setattr(cls, "finalize", boom, raising=False)
        with pytest.raises(KeyboardInterrupt, match="killed mid-save"):
            ck.save(2, _state(2.0), metrics={"valid_mrr": 0.9})
    monkeypatch.undo()
    with Checkpointer(tmp_path) as ck:
        assert ck.all_steps() == [1]
        state, _ = ck.restore(_state(0))
        assert float(state["params"]["w"][0, 0]) == 1.0
        ck.save(2, _state(2.0), metrics={"valid_mrr": 0.9})  # and training can continue
        assert ck.latest_step() == 2


@dataclasses.dataclass(frozen=True)
class _Train:
    epochs: int = 4
    lr: float = 0.1
    added_later: str = "x"


@dataclasses.dataclass(frozen=True)
class _Cfg:
    seed: int = 0
    train: _Train = dataclasses.field(default_factory=_Train)
    tags: tuple[str, ...] = ("a",)


def test_config_changes_and_check_resume() -> None:
    from geofm.checkpoint import CheckpointError, check_resume, config_changes
    from geofm.config import to_dict

    Cfg, Train = _Cfg, _Train

    saved = {"seed": 0, "train": {"epochs": 4, "lr": 0.1}, "eval": {"chunk": 8}, "model": {"kwargs": {"dim": 8}}}
    now = {"seed": 0, "train": {"epochs": 9, "lr": 0.2}, "eval": {"chunk": 16}, "model": {"kwargs": {}}}
    assert config_changes(saved, now, allowed=("train.epochs", "eval")) == [
        "model.kwargs.dim: 8 -> '<missing>'", "train.lr: 0.1 -> 0.2"]
    assert config_changes(saved, saved) == []
    old = {"seed": 0, "train": {"epochs": 4, "lr": 0.1}, "tags": ["a"]}  # written before train.added_later existed
    check_resume({"config": old}, config=Cfg(), checksums=None, allowed=(), where="R", hint="H")
    check_resume({"config": old}, config=Cfg(train=Train(epochs=5)), checksums=None, allowed=("train.epochs",),
                 where="R", hint="H")
    with pytest.raises(CheckpointError, match=r"train.added_later: 'x' -> 'y'"):
        check_resume({"config": old}, config=Cfg(train=Train(added_later="y")), checksums=None, allowed=(),
                     where="R", hint="H")
    check_resume({}, config=Cfg(), checksums={"a": "1"}, allowed=(), where="R", hint="H")  # nothing recorded
    meta = {"config": to_dict(Cfg()), "checksums": {"a": "1"}}
    with pytest.raises(CheckpointError, match=r"cannot resume R: the data differ .*\{a: 1\}.*\{a: 2\}.*\. H"):
        check_resume(meta, config=Cfg(), checksums={"a": "2"}, allowed=(), where="R", hint="H")
    check_resume({"config": to_dict(Cfg()), "files": {"a": "1"}}, config=Cfg(), checksums={"a": "1"},
                 checksums_key="files", allowed=(), where="R", hint="H")
    with pytest.raises(CheckpointError, match="the data differ"):
        check_resume({"config": to_dict(Cfg()), "files": {"a": "1"}}, config=Cfg(), checksums={"a": "2"},
                     checksums_key="files", allowed=(), where="R", hint="H")
