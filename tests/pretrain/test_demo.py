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
