"""Worker for test_loop.test_two_processes_match_one: loss of one data-parallel step (argv: config addr n pid)."""
import sys, json
import numpy as np
from geofm.distributed import initialize
addr, n, pid = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if n > 1:
    initialize(addr, n, pid)
import jax
from flax import nnx
from geofm.config import load_config
from geofm.pretrain import PretrainConfig, load_domains, Streams, make_model, phase_loss, phase_flags, total_steps, _local_rows, _put_batch
from geofm.distributed import data_mesh
cfg = load_config(sys.argv[1], PretrainConfig, ["train.parallel=2"])
doms = load_domains(cfg)
st = Streams(doms, cfg, total_steps(cfg))
hb = st.batch("local", 1, _local_rows(2))
model = make_model(cfg, len(doms))
mesh, rep, dat = data_mesh(2)
nnx.update(model, jax.tree_util.tree_map(lambda a: jax.device_put(a, rep), nnx.state(model)))
batch = _put_batch(hb, dat, 2)
flags = phase_flags("local", 1, cfg.train)
@nnx.jit
def f(m, b):
    return phase_loss(m, b, jax.random.key(0), flags, cfg.train)[0]
print(json.dumps({"pid": pid, "devices": jax.device_count(), "loss": float(f(model, batch))}), flush=True)
