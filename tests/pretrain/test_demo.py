"""`geofm demo --quick` runs the whole main job (pretrain -> 5-shot adapt -> table) on synthetic data."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_demo_quick_synthetic_fallback(tmp_path, capsys, monkeypatch):
    from geofm.commands import demo

    empty = tmp_path / "no_data"
    empty.mkdir()
    monkeypatch.setenv("GEOFM_CACHE", str(tmp_path / "cache"))
    assert demo.main(["--quick", "--quiet", "--data-dir", str(empty), "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "synthetic-mixed" in out and "5" in out
    assert (tmp_path / "run" / "pretrain" / "run.json").is_file()
    # a rerun replaces the demo's own run
    assert demo.main(["--quick", "--quiet", "--data-dir", str(empty), "--out", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "pretrain" / "run.json").is_file()


def test_demo_refuses_bad_data_dir_and_foreign_runs(tmp_path, capsys, monkeypatch):
    """A --data-dir (or $GEOFM_DATA) that is no folder is an error, not a silent synthetic run;
    an --out whose pretrain/ the demo did not write is left alone (exit 2, nothing deleted)."""
    from geofm.commands import demo

    monkeypatch.setenv("GEOFM_CACHE", str(tmp_path / "cache"))
    assert demo.main(["--quick", "--quiet", "--data-dir", str(tmp_path / "missing"), "--out", str(tmp_path / "a")]) == 2
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "a").exists()
    monkeypatch.setenv("GEOFM_DATA", str(tmp_path / "missing"))
    assert demo.main(["--quick", "--quiet", "--out", str(tmp_path / "a")]) == 2
    assert "$GEOFM_DATA" in capsys.readouterr().err
    monkeypatch.delenv("GEOFM_DATA")
    theirs = tmp_path / "mine" / "pretrain"
    theirs.mkdir(parents=True)
    (theirs / "run.json").write_text("{}")
    empty = tmp_path / "no_data"
    empty.mkdir()
    assert demo.main(["--quick", "--quiet", "--data-dir", str(empty), "--out", str(tmp_path / "mine")]) == 2
    assert "not written by `geofm demo`" in capsys.readouterr().err
    assert (theirs / "run.json").read_text() == "{}"
