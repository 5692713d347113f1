"""The pretraining loop: exact resume after SIGKILL, NaN stop, bad input, data parallel."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from geofm.checkpoint import CheckpointError, Checkpointer
from geofm.config import ConfigError, load_config
from geofm.pretrain import NonFiniteLossError, PretrainConfig, pretrain

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "test" / "tiny.yaml"
pytestmark = pytest.mark.slow


def _final_model(run: Path, step: int) -> dict:
    ck = Checkpointer(run / "checkpoints", metric="loss", mode="min")
    try:
        import orbax.checkpoint as ocp

        raw = ck._mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))  # noqa: SLF001
        return raw["state"]["model"]
    finally:
        ck.close()


def _flat(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = np.asarray(v)
    return out


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("ref")
    cfg = load_config(TINY, PretrainConfig)
    res = pretrain(cfg, run, progress=False)
    assert res["step"] == 16 and np.isfinite(res["loss"])
    return run


def test_run_records(reference_run: Path):
    for name in ("config.yaml", "run.json", "metrics.jsonl", "projections.npz"):
        assert (reference_run / name).is_file(), name
    import json

    rec = json.loads((reference_run / "run.json").read_text())
    assert rec["seed"] == 0 and len(rec["domains"]) == 2 and all(d["checksum"] for d in rec["domains"])
    rows = [json.loads(l) for l in (reference_run / "metrics.jsonl").read_text().splitlines()]
    assert {r["phase"] for r in rows} == {"local", "global", "refine"}
    protos = _flat(_final_model(reference_run, 16))
    assert np.all(protos["protos/count"] > 0)  # EMA prototypes are in the checkpoint


def test_sigkill_then_resume_matches_uninterrupted(reference_run: Path, tmp_path: Path, child_env):
    run = tmp_path / "killed"
    env = child_env()
    proc = subprocess.Popen([sys.executable, "-m", "pretrain", "--config", str(TINY), "--out", str(run), "--quiet"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 400
    try:
        while time.time() < deadline:
            if (run / "checkpoints" / "8").is_dir() or proc.poll() is not None:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    steps = Checkpointer(run / "checkpoints", metric="loss", mode="min").all_steps()
    assert steps and max(steps) < 16
    res = pretrain(load_config(TINY, PretrainConfig), run, progress=False)
    assert res["step"] == 16
    logged = [json.loads(ln)["step"] for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert logged == sorted(set(logged)) and logged[-1] == 16  # rows after the restored step were dropped
    again = pretrain(load_config(TINY, PretrainConfig), run, progress=False)  # finished: nothing to do
    assert again["step"] == 16 and again["loss"] == res["loss"] and again["terms"] == res["terms"]
    a, b = _flat(_final_model(reference_run, 16)), _flat(_final_model(run, 16))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=1e-6, rtol=0, err_msg=k)


def test_nan_loss_stops_and_keeps_checkpoint(tmp_path: Path):
    bad = load_config(TINY, PretrainConfig, ["train.lr=1e30", "train.grad_clip=1e30", "train.warmup_steps=0",
                                             "train.checkpoint_every=1"])
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step \d+ .*terms=") as err:
        pretrain(bad, tmp_path, progress=False)
    ck = Checkpointer(tmp_path / "checkpoints", metric="loss", mode="min")
    last = ck.latest_step()
    assert last is not None and np.isfinite(ck.read_meta(last)["metrics"]["loss"])
    ck.close()
    assert f"the last good checkpoint (step {last})" in str(err.value)
    never = load_config(TINY, PretrainConfig, ["train.lr=1e30", "train.grad_clip=1e30", "train.warmup_steps=0",
                                               "train.checkpoint_every=1000"])
    with pytest.raises(NonFiniteLossError, match="no checkpoint had been written yet"):
        pretrain(never, tmp_path / "never", progress=False)


def test_incompatible_checkpoint_and_bad_config(reference_run: Path, tmp_path: Path, monkeypatch):
    import geofm.pretrain as gp

    def no_data(cfg):
        raise AssertionError("data loaded before the checkpoint folder was checked")

    with monkeypatch.context() as m:  # config refusals come before any dataset is read
        m.setattr(gp, "load_domains", no_data)
        with pytest.raises(CheckpointError, match=r"the config differs: seed: 0 -> 1"):
            pretrain(load_config(TINY, PretrainConfig, ["seed=1"]), reference_run, progress=False)
        with pytest.raises(CheckpointError, match="already holds checkpoints"):
            pretrain(load_config(TINY, PretrainConfig), reference_run, progress=False, resume=False)
    other = load_config(TINY, PretrainConfig, ["model.dim=8", "model.att_dim=8"])
    before = {f: (reference_run / f).read_bytes() for f in ("config.yaml", "run.json", "metrics.jsonl", "projections.npz")}
    with pytest.raises(CheckpointError, match=r"cannot resume .*model.att_dim: 16 -> 8; model.dim: 16 -> 8"):
        pretrain(other, reference_run, progress=False)
    with pytest.raises(CheckpointError, match=r"the config differs: seed: 0 -> 1\. Use another run folder"):
        pretrain(load_config(TINY, PretrainConfig, ["seed=1"]), reference_run, progress=False)
    with pytest.raises(CheckpointError, match="already holds checkpoints"):
        pretrain(load_config(TINY, PretrainConfig), reference_run, progress=False, resume=False)
    assert before == {f: (reference_run / f).read_bytes() for f in before}  # refusals leave the folder as it was
    with pytest.raises(ConfigError, match="model.nope"):
        load_config(TINY, PretrainConfig, ["model.nope=1"])
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(TINY, PretrainConfig, ["train.epochs=many"])
    with pytest.raises(ValueError, match="unknown|not found|known"):
        pretrain(load_config(TINY, PretrainConfig, ["data.datasets=[no-such-dataset]"]), tmp_path, progress=False)
    import dataclasses

    from geofm.pretrain import check_adapt

    cfg = load_config(TINY, PretrainConfig)
    with pytest.raises(ConfigError, match="pretrain: config key 'data.datasets': expected a list, got 'synthetic-tree'"):
        pretrain(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, datasets="synthetic-tree")), tmp_path / "s")
    with pytest.raises(TypeError, match="pretrain: expected a PretrainConfig"):
        pretrain(TINY, tmp_path / "s")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="adapt: config key 'shots': expected a list, got 1"):
        check_adapt(dataclasses.replace(cfg.adapt, shots=1), cfg.data)  # type: ignore[arg-type]
    assert not (tmp_path / "s").exists()


def test_adapt_kshot_runs(reference_run: Path):
    import dataclasses

    from geofm.adapt import adapt_kshot, format_table

    cfg = load_config(TINY, PretrainConfig)
    acfg = dataclasses.replace(cfg.adapt, shots=[1], splits=2, epochs=10)
    res = adapt_kshot(reference_run, acfg)
    assert np.isfinite(res["transferability"]["gtm"])
    assert 0.0 <= res["shots"]["1"]["mean"] <= 100.0 and len(res["shots"]["1"]["accs"]) == 2
    assert "1-shot" in format_table(res)


def test_cli_adapt_json_keeps_stdout_json(reference_run: Path, tmp_path: Path, capsys):
    """`geofm pretrain --adapt --json`: stdout is one JSON object (the k-shot table goes to stderr)."""
    import json
    import shutil

    from geofm.cli import main

    run = tmp_path / "run"
    shutil.copytree(reference_run, run)  # a finished run: resumes at its last step, then adapts
    assert main(["pretrain", "--config", str(TINY), "--out", str(run), "--adapt", "--json", "--quiet",
                 "--set", "adapt.shots=[1]", "--set", "adapt.splits=2", "--set", "adapt.epochs=5"]) == 0
    out = capsys.readouterr()
    assert isinstance(json.loads(out.out), dict)
    assert "1-shot acc" in out.err and (run / "adapt" / "synthetic-mixed-default.json").is_file()


DP_SCRIPT = r"""
import os, sys, json
import jax, jax.numpy as jnp, numpy as np
from flax import nnx
from geofm.config import load_config
from geofm.pretrain import PretrainConfig, load_domains, Streams, make_model, phase_loss, phase_flags, total_steps
from geofm.distributed import data_mesh
cfg = load_config(sys.argv[1], PretrainConfig, ["train.parallel=4"])
doms = load_domains(cfg)
st = Streams(doms, cfg, total_steps(cfg))
hb = st.batch("local", 1, range(4))
model = make_model(cfg, len(doms))
mesh, rep, dat = data_mesh(4)
nnx.update(model, jax.tree_util.tree_map(lambda a: jax.device_put(a, rep), nnx.state(model)))
batch = jax.tree_util.tree_map(lambda a: jax.device_put(np.asarray(a), dat), hb)
flags = phase_flags("local", 1, cfg.train)
@nnx.jit
def f(m, b):
    (l, aux), g = nnx.value_and_grad(lambda m: phase_loss(m, b, jax.random.key(0), flags, cfg.train), has_aux=True)(m)
    return l, g
loss, grads = f(model, batch)
leaves = [np.asarray(x).ravel() for x in jax.tree_util.tree_leaves(nnx.to_pure_dict(grads) if hasattr(nnx, "to_pure_dict") else grads)]
print(json.dumps({"devices": jax.device_count(), "shards": len(batch.x.sharding.device_set),
                  "loss": float(loss), "grad": np.concatenate(leaves).tolist()}))
"""


def test_data_parallel_matches_single_device(tmp_path: Path, child_env):
    import json

    script = tmp_path / "dp.py"
    script.write_text(DP_SCRIPT)
    out = {}
    for n in (1, 4):
        env = child_env(XLA_FLAGS=f"--xla_force_host_platform_device_count={n}", JAX_PLATFORMS="cpu")
        r = subprocess.run([sys.executable, str(script), str(TINY)], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        out[n] = json.loads(r.stdout.strip().splitlines()[-1])
    assert out[4]["devices"] == 4 and out[4]["shards"] == 4 and out[1]["shards"] == 1
    np.testing.assert_allclose(out[4]["loss"], out[1]["loss"], rtol=1e-5)
    np.testing.assert_allclose(out[4]["grad"], out[1]["grad"], rtol=1e-4, atol=1e-6)


MESH_SCRIPT = r"""
import json, logging, sys
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
from geofm.distributed import data_mesh
print(json.dumps({p: data_mesh(p)[0].size for p in (1, 2, 3, 4, 6, 8)}))
"""


def test_data_mesh_uses_the_largest_dividing_device_count(tmp_path: Path, child_env):
    """4 devices: parallel 2 -> 2 devices, 3 -> 3, 6 -> 3, 8 -> 4 (not a silent fallback to 1), with a
    warning naming the idle devices."""
    import json

    env = child_env(XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, "-c", MESH_SCRIPT], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {"1": 1, "2": 2, "3": 3, "4": 4, "6": 3, "8": 4}
    assert "train.parallel=6 shards over 3 of the 4 devices (1 idle)" in r.stderr


def test_plots(reference_run: Path, tmp_path: Path):
    from geofm.plot import plot_run, poincare_2d

    paths = plot_run(reference_run, tmp_path, embeddings=False)
    assert [p.name for p in paths] == ["loss_curves.png"] and paths[0].stat().st_size > 1000
    xy = poincare_2d(np.random.default_rng(0).standard_normal((50, 8)) * 30)
    assert xy.shape == (50, 2) and np.all(np.linalg.norm(xy, axis=1) < 1.0)
    with pytest.raises(ValueError, match="metrics.jsonl: not found"):
        plot_run(tmp_path / "no-such-run")
    assert not (tmp_path / "no-such-run").exists()  # nothing created for a typo
    (tmp_path / "a.png").write_text("")
    with pytest.raises(ValueError, match="a.png: exists and is not a folder"):
        plot_run(reference_run, tmp_path / "a.png", embeddings=False)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one(child_env):
    """jax.distributed on 127.0.0.1: 2 processes x 1 CPU device == 1 process, same global batch."""
    import json

    worker = Path(__file__).with_name("_multihost_worker.py")
    env = child_env(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
    addr = f"127.0.0.1:{_free_port()}"
    procs = [subprocess.Popen([sys.executable, str(worker), str(TINY), addr, "2", str(i)], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = []
    try:
        for p in procs:
            so, se = p.communicate(timeout=600)
            assert p.returncode == 0, se[-3000:]
            outs.append(json.loads(so.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    r = subprocess.run([sys.executable, str(worker), str(TINY), "none", "1", "0"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    single = json.loads(r.stdout.strip().splitlines()[-1])
    assert [o["devices"] for o in outs] == [2, 2] and single["devices"] == 1
    np.testing.assert_allclose([o["loss"] for o in outs], single["loss"], rtol=1e-5)


def test_text_align_term_is_trained_and_logged(tmp_path: Path):
    """align_weight > 0 lowers the input-preservation loss relative to the same run without it
    (the term is logged in every phase either way)."""
    import json

    def last_align(weight: float) -> float:
        cfg = load_config(TINY, PretrainConfig, [f"train.align_weight={weight}", "model.input_projection=shared"])
        run = tmp_path / f"w{weight}"
        pretrain(cfg, run, progress=False)
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        assert all("align" in r for r in rows)
        return float(np.mean([r["align"] for r in rows[-3:]]))

    assert last_align(2.0) < last_align(0.0) - 0.05
