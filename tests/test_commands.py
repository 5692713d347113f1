"""What every `geofm` command shares: user-facing errors become one stderr line and an exit code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from geofm.checkpoint import CheckpointError
from geofm.commands import guarded
from geofm.config import ConfigError
from geofm.data._io import DataFormatError
from geofm.errors import MissingModelError, UserError
from geofm.pretrain import NonFiniteLossError

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("err, code, text", [
    (ConfigError("config key 'x': bad"), 2, "config key 'x': bad"),
    (CheckpointError("no checkpoint in r"), 2, "no checkpoint in r"),
    (DataFormatError("f.tsv", 3, "bad row"), 2, "f.tsv"),
    (MissingModelError("pip install it"), 2, "pip install it"),
    (FileNotFoundError("data dir d does not exist"), 2, "data dir d does not exist"),
    (FileExistsError(17, "File exists", "out.txt"), 2, "out.txt: exists and is not a folder"),
    (NotADirectoryError(20, "Not a directory", "f/x"), 2, "f/x: lies under a file, not a folder"),
    (NonFiniteLossError("non-finite loss at step 3"), 3, "non-finite loss at step 3"),
    (FloatingPointError("NaN scores"), 3, "NaN scores"),
])
def test_guarded_turns_user_errors_into_exit_codes(err, code, text, capsys) -> None:
    @guarded("geofm thing")
    def main(argv=None):
        raise err

    assert main([]) == code
    err_text = capsys.readouterr().err
    assert err_text.startswith("geofm thing: ") and text in err_text and err_text.count("\n") == 1


def test_guarded_lets_bugs_raise_and_passes_results_through() -> None:
    @guarded("geofm thing")
    def broken(argv=None):
        raise KeyError("a bug, not bad input")

    with pytest.raises(KeyError):
        broken([])

    @guarded("geofm thing")
    def fine(argv=None, *, prog="geofm thing"):
        return None

    assert fine([]) == 0 and issubclass(MissingModelError, ImportError) and issubclass(ConfigError, UserError)


def test_python_m_wrapper_reports_like_the_console_script(tmp_path: Path, child_env) -> None:
    """`python -m finetune.kg --out FILE` exits 2 with one line, as `geofm kg` does (the
    wrappers used to skip the console script's error handling and print a traceback)."""
    out = tmp_path / "a_file"
    out.write_text("x")
    env = child_env(GEOFM_CACHE=str(tmp_path / "cache"))
    cmd = [sys.executable, "-m", "finetune.kg", "--config", str(REPO / "configs/kg/tiny.yaml"), "--out", str(out),
           "--quiet", "--set", "train.epochs=1"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and f"{out}: exists and is not a folder" in r.stderr
