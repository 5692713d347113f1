"""Tests for geofm.config: base inheritance, validation errors, overrides, dump."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import pytest
import yaml

from geofm.config import ConfigError, Spec, dump_config, from_dict, load_config, parse_override


@dataclasses.dataclass(frozen=True)
class Optim:
    name: Literal["adam", "adagrad"] = "adam"
    lr: float = 1e-3


@dataclasses.dataclass(frozen=True)
class Cfg:
    seed: int = 0
    epochs: int = 10
    tags: tuple[str, ...] = ()
    optim: Optim = Optim()
    model: Spec = Spec("transe")
    note: str | None = None


def _write(path: Path, data: dict | str) -> Path:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_base_chain_relative_and_deep_merge(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    _write(tmp_path / "root.yaml", {"seed": 1, "optim": {"name": "adagrad", "lr": 0.5}, "model": {"name": "atth", "kwargs": {"dim": 32}}})
    _write(tmp_path / "sub" / "mid.yaml", {"base": "../root.yaml", "optim": {"lr": 0.1}})
    leaf = _write(tmp_path / "sub" / "leaf.yaml", {"base": ["mid.yaml"], "epochs": 3, "model": {"kwargs": {"c": 1.0}}})
    cfg = load_config(leaf, Cfg)
    assert cfg == Cfg(seed=1, epochs=3, optim=Optim("adagrad", 0.1), model=Spec("atth", {"dim": 32, "c": 1.0}))


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    base = _write(tmp_path / "b.yaml", {"optim": {"lrr": 0.1}})
    leaf = _write(tmp_path / "l.yaml", {"base": "b.yaml", "seed": 2})
    with pytest.raises(ConfigError, match=r"optim\.lrr.*b\.yaml"):
        load_config(leaf, Cfg)
    del base


def test_wrong_type_names_key(tmp_path: Path) -> None:
    leaf = _write(tmp_path / "l.yaml", {"epochs": "many"})
    with pytest.raises(ConfigError, match=r"'epochs'.*l\.yaml.*expected int"):
        load_config(leaf, Cfg)
    leaf = _write(tmp_path / "l2.yaml", {"optim": {"name": "sgd"}})
    with pytest.raises(ConfigError, match=r"optim\.name.*one of"):
        load_config(leaf, Cfg)
    with pytest.raises(ConfigError, match="expected int"):
        from_dict(Cfg, {"epochs": True})


def test_overrides_are_yaml_typed_and_named(tmp_path: Path) -> None:
    leaf = _write(tmp_path / "l.yaml", {"epochs": 3})
    cfg = load_config(leaf, Cfg, ["epochs=7", "optim.lr=1e-2", "tags=[a, b]", "note=null", "model.kwargs.dim=16"])
    assert cfg.epochs == 7 and cfg.optim.lr == pytest.approx(0.01) and cfg.tags == ("a", "b") and cfg.note is None
    assert cfg.model.kwargs == {"dim": 16}
    with pytest.raises(ConfigError, match=r"--set epochs=x"):
        load_config(leaf, Cfg, ["epochs=x"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("epochs")
    with pytest.raises(ConfigError, match="unknown config key 'bogus'"):
        load_config(leaf, Cfg, ["bogus=1"])
    with pytest.raises(ConfigError, match=r"unknown config key 'bogus' \(from --set bogus.deep=1\)"):
        load_config(leaf, Cfg, ["bogus.deep=1"])


def test_dump_roundtrip(tmp_path: Path) -> None:
    cfg = Cfg(seed=3, tags=("x",), optim=Optim("adagrad", 0.2), model=Spec("roth", {"dim": 32}))
    out = _write(tmp_path / "dump.yaml", dump_config(cfg))
    assert load_config(out, Cfg) == cfg


def test_circular_base_and_bad_yaml(tmp_path: Path) -> None:
    _write(tmp_path / "a.yaml", {"base": "b.yaml"})
    _write(tmp_path / "b.yaml", {"base": "a.yaml"})
    with pytest.raises(ConfigError, match="circular"):
        load_config(tmp_path / "a.yaml", Cfg)
    bad = _write(tmp_path / "bad.yaml", "seed: 1\n  epochs: [\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+"):
        load_config(bad, Cfg)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml", Cfg)
    for i, text in enumerate(("", "# only a comment\n")):  # would have run every default silently
        empty = tmp_path / f"empty{i}.yaml"
        empty.write_text(text)
        with pytest.raises(ConfigError, match=rf"empty{i}\.yaml: the config file is empty"):
            load_config(empty, Cfg)


def test_check_config_and_check_sequence_catch_python_built_mistakes(tmp_path: Path) -> None:
    from geofm.config import check_config, check_sequence

    check_config(Cfg(tags=("a",)), Cfg, "fn")  # a valid config passes
    with pytest.raises(TypeError, match="fn: expected a Cfg .*got str"):
        check_config("cfg.yaml", Cfg, "fn")
    with pytest.raises(ConfigError, match="fn: config key 'tags': expected a list, got 'abc'"):
        check_config(Cfg(tags="abc"), Cfg, "fn")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="config key 'optim.lr': expected float"):
        check_config(Cfg(optim=Optim(lr="fast")), Cfg, "fn")  # type: ignore[arg-type]
    import numpy as np

    check_config(Cfg(epochs=np.int64(3), optim=Optim(lr=np.float32(0.1)), note=tmp_path), Cfg, "fn")  # type: ignore[arg-type]
    assert check_sequence((1, 2), "k", int) == [1, 2]
    with pytest.raises(TypeError, match="the single string 'abc': wrap it in a list"):
        check_sequence("abc", "names")
    with pytest.raises(TypeError, match=r"k\[1\] must be int, got bool"):
        check_sequence([1, True], "k", int)
    with pytest.raises(TypeError, match="must be a list, got int"):
        check_sequence(5, "k", int)
    with pytest.raises(TypeError, match="overrides must be a list, got the single string"):
        load_config(_write(tmp_path / "c.yaml", {"seed": 1}), Cfg, "seed=2")  # type: ignore[arg-type]
