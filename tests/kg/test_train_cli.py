"""End-to-end: `geofm kg` on a generated tiny KG (determinism, resume, results file, bad input)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from geofm.commands.kg import main
from geofm.kg.synthetic import write_tiny_kg

REPO = Path(__file__).resolve().parents[2]
TINY = str(REPO / "configs" / "kg" / "tiny.yaml")
FAST = ["--set", "model.name=transe", "--set", "model.kwargs={dim: 8, p: 2, init_size: 0.1}"]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEOFM_CACHE", str(tmp_path / "cache"))  # fresh parse: loader warnings are seen


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_kg(tmp_path_factory.mktemp("kg") / "tiny_kg")


def _run(capsys, *args: str) -> tuple[int, dict | None, str]:
    code = main(list(args))
    out = capsys.readouterr()
    lines = [line for line in out.out.splitlines() if line.startswith("{")]
    return code, (json.loads(lines[-1]) if lines else None), out.err


def test_json_output_determinism_and_results_file(tiny: Path, tmp_path: Path, capsys) -> None:
    args = ["--config", TINY, "--dataset", str(tiny), "--json", "--quiet", *FAST]
    code, first, _ = _run(capsys, *args, "--out", str(tmp_path / "a"))
    assert code == 0 and set(first) == {"mrr", "mr", "hits@1", "hits@3", "hits@10"}
    assert 0 < first["mrr"] <= 1 and first["mr"] >= 1
    code, second, _ = _run(capsys, *args, "--out", str(tmp_path / "b"))
    assert second == first  # same seed, same numbers
    code, other, _ = _run(capsys, *args, "--out", str(tmp_path / "c"), "--set", "seed=1")
    assert other != first
    res = json.loads((tmp_path / "a" / "results.json").read_text())
    assert res["seed"] == 0 and res["config"]["model"]["name"] == "transe"
    assert res["dataset"]["checksums"] and "git_commit" in res
    assert res["test"]["num_queries"] == 2 * res["dataset"]["num_triples"]["test"]
    assert res["dataset"]["num_unseen_entities"]["test"] >= 1 and res["test"]["num_queries_with_unseen_entity"] >= 2
    assert res["test"]["tie_policy"] == "realistic" and "by_relation" in res["test"]
    assert (tmp_path / "a" / "config.yaml").exists() and (tmp_path / "a" / "metrics.jsonl").exists()


def test_resume_continues_exactly(tiny: Path, tmp_path: Path, capsys) -> None:
    base = ["--config", TINY, "--dataset", str(tiny), "--json", "--quiet", *FAST]
    _, straight, _ = _run(capsys, *base, "--out", str(tmp_path / "straight"))
    _run(capsys, *base, "--out", str(tmp_path / "resumed"), "--set", "train.epochs=2")
    _, resumed, _ = _run(capsys, *base, "--out", str(tmp_path / "resumed"))
    assert resumed == straight
    hist = json.loads((tmp_path / "resumed" / "results.json").read_text())["history"]
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]


@pytest.mark.slow
def test_tiny_config_as_shipped(tiny: Path, tmp_path: Path, capsys) -> None:
    code, metrics, _ = _run(capsys, "--config", TINY, "--dataset", str(tiny), "--json", "--quiet", "--out", str(tmp_path / "r"))
    assert code == 0 and 0 < metrics["mrr"] <= 1


def test_bad_inputs(tiny: Path, tmp_path: Path, capsys) -> None:
    code, _, err = _run(capsys, "--config", TINY, "--dataset", str(tiny), "--set", "train.epochz=3")
    assert code == 2 and "train.epochz" in err
    for key, value, low in (("epochs", -1, 0), ("batch_size", 0, 1), ("patience", 0, 1)):  # names the key and value
        code, _, err = _run(capsys, "--config", TINY, "--dataset", str(tiny), "--set", f"train.{key}={value}")
        assert code == 2 and f"train.{key} must be >= {low}, got {value}" in err
    bad = tmp_path / "bad_kg"
    bad.mkdir()
    for split in ("train", "valid", "test"):
        (bad / f"{split}.txt").write_text((tiny / f"{split}.txt").read_text())
    (bad / "valid.txt").write_text((tiny / "valid.txt").read_text() + "e001\t_child_of\n")
    n_valid = len((tiny / "valid.txt").read_text().splitlines())
    code, _, err = _run(capsys, "--config", TINY, "--dataset", str(bad), "--quiet", "--out", str(tmp_path / "x"), *FAST)
    assert code == 2 and f"valid.txt:{n_valid + 1}" in err


def test_duplicates_and_unseen_are_counted(tiny: Path, tmp_path: Path, capsys) -> None:
    dup = tmp_path / "dup_kg"
    dup.mkdir()
    for split in ("valid", "test"):
        (dup / f"{split}.txt").write_text((tiny / f"{split}.txt").read_text())
    train = (tiny / "train.txt").read_text()
    (dup / "train.txt").write_text(train + train.splitlines(keepends=True)[0])
    (dup / "test.txt").write_text((tiny / "test.txt").read_text() + "zzz_new\t_child_of\te000\n")
    with pytest.warns(UserWarning):
        code, _, _ = _run(capsys, "--config", TINY, "--dataset", str(dup), "--quiet", "--out", str(tmp_path / "d"), *FAST)
    assert code == 0
    res = json.loads((tmp_path / "d" / "results.json").read_text())
    assert res["dataset"]["dropped"]["train"]["duplicates_dropped"] == 1
    assert res["dataset"]["num_triples"]["test"] == len((dup / "test.txt").read_text().splitlines())  # kept, not dropped
    assert res["dataset"]["num_unseen_entities"]["test"] >= 2


def test_float64_run_restores_precision_flag(tiny: Path, tmp_path: Path, capsys) -> None:
    import jax

    before = bool(jax.config.jax_enable_x64)
    code, metrics, _ = _run(capsys, "--config", TINY, "--dataset", str(tiny), "--json", "--quiet", "--out", str(tmp_path / "f64"),
                            *FAST, "--set", "train.dtype=float64", "--set", "train.epochs=2")
    assert code == 0 and 0 < metrics["mrr"] <= 1
    assert bool(jax.config.jax_enable_x64) == before


@pytest.mark.slow
def test_cat_router_logging_and_plot(tiny: Path, tmp_path: Path, capsys) -> None:
    code, _, _ = _run(capsys, "--config", TINY, "--dataset", str(tiny), "--quiet", "--out", str(tmp_path / "cat"),
                      "--set", "model.name=cat", "--set", "model.kwargs={dim: 8, heads: 2, blocks: 1}",
                      "--set", "loss.name=1n_ce", "--set", "loss.label_smoothing=0.1", "--set", "train.epochs=2")
    assert code == 0
    res = json.loads((tmp_path / "cat" / "results.json").read_text())
    router = res["router_by_relation"]
    assert set(router) <= {"_child_of", "_parent_of", "_sibling_of"} and router
    for dirs in router.values():
        for v in dirs.values():
            assert abs(sum(v["mean"].values()) - 1.0) < 1e-4 and set(v["mean"]) == {"E", "H", "S"}
            assert abs(sum(v["score"].values()) - 1.0) < 1e-4 and set(v["score"]) == {"E", "H", "S"}
    assert (tmp_path / "cat" / "router_weights.png").stat().st_size > 1000
    assert (tmp_path / "cat" / "score_weights.png").stat().st_size > 1000


def test_sampled_ce_loss_learns(tiny: Path, tmp_path: Path, capsys) -> None:
    """sampled_ce (32 shared negatives, accidental hits masked) learns on the tiny KG."""
    args = ["--config", TINY, "--dataset", str(tiny), "--json", "--quiet", *FAST, "--set", "train.epochs=6"]
    _, sampled, _ = _run(capsys, *args, "--out", str(tmp_path / "s"), "--set", "loss.name=sampled_ce",
                         "--set", "loss.num_negatives=32", "--set", "loss.label_smoothing=0.1")
    _, untrained, _ = _run(capsys, *args, "--out", str(tmp_path / "u"), "--set", "optim.lr=1e-9")
    assert sampled["mrr"] > untrained["mrr"] + 0.05


def test_time_budget_stops_validates_and_resumes(tiny: Path, tmp_path: Path, capsys) -> None:
    base = ["--config", TINY, "--dataset", str(tiny), "--json", "--quiet", *FAST, "--out", str(tmp_path / "r")]
    code, metrics, _ = _run(capsys, *base, "--set", "train.max_seconds=1e-9")
    res = json.loads((tmp_path / "r" / "results.json").read_text())
    assert code == 0 and metrics is not None
    assert res["stopped_by_time"] and res["epochs_run"] == 1 and res["best_epoch"] == 1
    assert "valid_mrr" in res["history"][-1]  # the stopping epoch was validated (off the valid_every grid)
    _, _, _ = _run(capsys, *base)  # resuming without a budget finishes the schedule
    res = json.loads((tmp_path / "r" / "results.json").read_text())
    assert not res["stopped_by_time"] and res["epochs_run"] == res["config"]["train"]["epochs"]
    code, _, err = _run(capsys, *base, "--set", "train.max_seconds=0")
    assert code != 0 and "max_seconds" in err


def test_resume_with_another_model_names_the_changed_parameters(tiny: Path, tmp_path: Path, capsys) -> None:
    base = ["--config", TINY, "--dataset", str(tiny), "--quiet", "--out", str(tmp_path / "run"), "--set", "train.epochs=1"]
    _run(capsys, *base, "--set", "model.name=transe", "--set", "model.kwargs={dim: 8, p: 2, init_size: 0.1}")
    code, _, err = _run(capsys, *base, "--set", "train.epochs=2", "--set", "model.name=rotate", "--set", "model.kwargs={dim: 8}")
    assert code != 0 and "cannot resume" in err
    assert "model.name: 'transe' -> 'rotate'" in err and "model.kwargs.p: 2 -> '<missing>'" in err
    assert "transe" in (tmp_path / "run" / "config.yaml").read_text()  # the refused run left the folder as it was


def test_refused_runs_leave_the_folder_and_resume_keeps_one_row_per_epoch(tiny: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    base = ["--config", TINY, "--dataset", str(tiny), "--quiet", "--out", str(run), *FAST]
    assert _run(capsys, *base, "--set", "train.epochs=2")[0] == 0
    before = {f: (run / f).read_bytes() for f in ("config.yaml", "metrics.jsonl", "results.json")}
    other = write_tiny_kg(tmp_path / "other_kg", seed=1)  # same sizes, other triples
    code, _, err = _run(capsys, "--config", TINY, "--dataset", str(other), "--quiet", "--out", str(run), *FAST,
                        "--set", "train.epochs=2")
    assert code == 2 and "the data differ" in err
    code, _, err = _run(capsys, *base, "--set", "train.epochs=2", "--set", "optim.lr=0.5")
    assert code == 2 and "optim.lr: 0.01 -> 0.5" in err
    code, _, err = _run(capsys, *base, "--set", "train.epochs=2", "--set", "train.resume=false")
    assert code == 2 and "already holds checkpoints" in err
    assert before == {f: (run / f).read_bytes() for f in before}
    with open(run / "metrics.jsonl", "a") as f:  # as if killed after logging epoch 3 but before its checkpoint
        f.write(json.dumps({"epoch": 3, "loss": 1.0}) + "\n")
    assert _run(capsys, *base, "--set", "train.epochs=4")[0] == 0  # budgets may change on resume
    rows = [json.loads(ln)["epoch"] for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows == [1, 2, 3, 4]


def test_out_naming_a_file_and_the_generated_tiny_kg(tmp_path: Path, capsys) -> None:
    from geofm.cli import main as cli

    (tmp_path / "afile").write_text("x")
    code = cli(["kg", "--config", TINY, "--quiet", "--out", str(tmp_path / "afile")])
    assert code == 2 and "exists and is not a folder" in capsys.readouterr().err
    code, first, _ = _run(capsys, "--config", TINY, "--quiet", "--json", "--out", str(tmp_path / "a"))  # data.name tiny_kg
    assert code == 0 and 0 < first["mrr"] <= 1
    assert (tmp_path / "cache" / "generated" / "tiny_kg" / "train.txt").is_file()
    code, _, err = _run(capsys, "--config", TINY, "--quiet", "--out", str(tmp_path / "b"), "--set", "optim.lr=-1")
    assert code == 2 and "optim.lr must be > 0" in err


def test_train_kg_and_load_dataset_name_wrong_argument_types() -> None:
    import dataclasses

    from geofm.config import ConfigError, load_config
    from geofm.data import load_dataset
    from geofm.kg.config import KGConfig
    from geofm.kg.train import train_kg

    with pytest.raises(TypeError, match="train_kg: expected a KGConfig"):
        train_kg("configs/kg/tiny.yaml")  # type: ignore[arg-type]
    cfg = load_config(TINY, KGConfig)
    with pytest.raises(TypeError, match="dataset must be a KGDataset.*got dict"):
        train_kg(cfg, dataset={"train": []})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="train_kg: config key 'train.epochs': expected int"):
        train_kg(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs="5")))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expected a name or a folder path, got int"):
        load_dataset(123)  # type: ignore[arg-type]


def test_non_finite_training_exits_3_without_traceback(capsys, tmp_path: Path, monkeypatch) -> None:
    import geofm.kg.train as kg_train

    def boom(*args, **kwargs):
        raise FloatingPointError("training loss became nan at epoch 2; lower optim.lr")

    monkeypatch.setattr(kg_train, "train_kg", boom)
    code, _, err = _run(capsys, "--config", TINY, "--quiet", "--out", str(tmp_path / "r"))
    assert code == 3 and "geofm kg: training loss became nan" in err and "Traceback" not in err


def test_relation_prediction_term(tiny: Path, tmp_path: Path, capsys) -> None:
    """loss.relation_prediction adds w * CE(true relation | h, t) to the loss; ComplEx learns with it;
    a model without relation scores or a negative weight is refused before training."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from geofm.kg.config import LossConfig
    from geofm.kg.models import build_model
    from geofm.kg.train import make_loss_fn

    m = build_model("complex", 20, 3, seed=0, dim=8, init_size=0.5)
    gd, params, rest = nnx.split(m, nnx.Param, ...)
    batch, w, key = jnp.array([[0, 1, 2], [3, 5, 4], [7, 0, 9]], jnp.int32), jnp.ones(3), jax.random.key(0)
    base = make_loss_fn(LossConfig(name="1n_ce"), gd, 20)(params, rest, batch, w, key)
    with_rp = make_loss_fn(LossConfig(name="1n_ce", relation_prediction=2.0), gd, 20)(params, rest, batch, w, key)
    logp = jax.nn.log_softmax(m.score_relations(batch[:, 0], batch[:, 2]), -1)
    want = -2.0 * jnp.mean(logp[jnp.arange(3), batch[:, 1]])
    np.testing.assert_allclose(with_rp - base, want, rtol=1e-5)

    args = ["--config", TINY, "--dataset", str(tiny), "--json", "--quiet", "--set", "train.epochs=6",
            "--set", "model.name=complex", "--set", "model.kwargs={dim: 16, n3: 0.01, init_size: 0.1}",
            "--set", "loss.name=1n_ce", "--set", "optim.name=adagrad", "--set", "optim.lr=0.1"]
    code, rp, _ = _run(capsys, *args, "--out", str(tmp_path / "rp"), "--set", "loss.relation_prediction=1.0")
    _, untrained, _ = _run(capsys, *args, "--out", str(tmp_path / "u"), "--set", "optim.lr=1e-9")
    assert code == 0 and rp["mrr"] > untrained["mrr"] + 0.05
    code, _, err = _run(capsys, *args, "--out", str(tmp_path / "a"), "--set", "model.name=atth",
                        "--set", "model.kwargs={dim: 8}", "--set", "loss.relation_prediction=1.0")
    assert code == 2 and "relation_prediction" in err and "'atth'" in err and "complex" in err
    assert not (tmp_path / "a" / "checkpoints").exists()
    for bad in ("-1", ".nan"):
        code, _, err = _run(capsys, *args, "--out", str(tmp_path / "n"), "--set", f"loss.relation_prediction={bad}")
        assert code == 2 and "relation_prediction must be a finite weight" in err
    code, _, err = _run(capsys, *args, "--out", str(tmp_path / "n"), "--set", "model.name=nope")
    assert code == 2 and "unknown KG model 'nope'" in err
    assert not (tmp_path / "n").exists()
