"""GraphGlue core: frames, transport/holonomy, prototypes, losses, batches, features."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from geofm import glue
from geofm.data.sampler import SubgraphSampler
from geofm.data.synthetic import make_synthetic
from geofm.features import project_features, random_walk_features, spectral_features, structural_features


def _batch(dim=16, m=4, s_cap=12, parts=2, per=8, seed=0):
    ds = make_synthetic("synthetic-mixed", seed=seed)
    x, _ = project_features(structural_features(ds.edge_index, ds.num_nodes), dim, seed=1)
    smp = SubgraphSampler(ds.edge_index, ds.num_nodes, fanouts=[-1, -1], max_nodes=s_cap, features=x)
    rng = np.random.default_rng(seed)
    subs = [(smp.sample(np.arange(i * per, (i + 1) * per), rng), i) for i in range(parts)]
    return glue.build_glue_batch(subs, num_generators=m, max_nodes=s_cap, labels=[ds.labels] * parts,
                                 num_paths=8), ds


def test_frames_orthonormal_and_aligned():
    V = jax.random.normal(jax.random.key(0), (5, 4, 16))
    Q, s, lg = glue.frames(V)
    np.testing.assert_allclose(np.einsum("bdm,bdn->bmn", Q, Q), np.broadcast_to(np.eye(4), (5, 4, 4)), atol=1e-5)
    # first frame vector is V_0's direction; all lengths are ||V_m||
    np.testing.assert_allclose(Q[:, :, 0], V[:, 0] / np.linalg.norm(V[:, 0], axis=-1, keepdims=True), atol=1e-5)
    np.testing.assert_allclose(s, np.linalg.norm(V, axis=-1), rtol=1e-5)
    np.testing.assert_allclose(lg, 2 * np.log(np.linalg.norm(V, axis=-1)), rtol=1e-5)
    assert np.all(np.einsum("bdm,bmd->bm", Q, V) > 0)


def _out(Q, s):
    return glue.GlueOutput(z=jnp.zeros((Q.shape[0], Q.shape[1])), V=None, Q=Q, s=s, log_g=2 * jnp.log(s), gate=None)


def test_holonomy_zero_for_shared_subspace_positive_otherwise():
    key = jax.random.key(1)
    q0 = jnp.linalg.qr(jax.random.normal(key, (16, 4)))[0]
    s = jnp.abs(jax.random.normal(jax.random.key(2), (3, 4))) + 0.5
    same = jnp.stack([q0, q0, q0])
    paths, mask = jnp.array([[0, 1, 2]]), jnp.array([True])
    terms = glue.glue_loss(_out(same, s), paths, mask)
    assert float(terms["holonomy"]) < 1e-10  # the reference's diagonal case: trivially glued
    diff = jnp.stack([jnp.linalg.qr(jax.random.normal(jax.random.key(i), (16, 4)))[0] for i in range(3)])
    assert float(glue.glue_loss(_out(diff, s), paths, mask)["holonomy"]) > 1e-2
    # curvature: second difference of log g
    lg = 2 * np.log(np.asarray(s))
    np.testing.assert_allclose(float(terms["curvature"]), np.mean((lg[0] - 2 * lg[1] + lg[2]) ** 2), rtol=1e-5)
    # masked paths contribute nothing
    assert float(glue.glue_loss(_out(diff, s), paths, jnp.array([False]))["holonomy"]) == 0.0


def test_transport_identity_on_same_frame():
    q = jnp.linalg.qr(jax.random.normal(jax.random.key(3), (8, 3)))[0]
    s = jnp.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(glue.transport(q, s, q, s), np.eye(3), atol=1e-5)


def test_prototypes_ema_bias_corrected_log_euclidean():
    p = glue.Prototypes(2, 3, 2, decay=0.9)
    z = jnp.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0], [9.0, 9.0, 9.0]])
    lg = jnp.log(jnp.array([[1.0, 4.0], [4.0, 1.0], [2.0, 2.0]]))
    p.update(z, lg, jnp.array([0, 0, 1]), jnp.array([True, True, False]))
    pts, lgs, valid = p.read()
    np.testing.assert_allclose(pts[0], [2.0, 2.0, 2.0], rtol=1e-5)  # first update = the batch mean
    np.testing.assert_allclose(np.exp(lgs[0]), [2.0, 2.0], rtol=1e-5)  # geometric (log-Euclidean) mean
    assert valid.tolist() == [True, False]
    p.update(jnp.zeros((1, 3)), jnp.zeros((1, 2)), jnp.array([0]), jnp.array([True]))
    pts, _, _ = p.read()
    np.testing.assert_allclose(pts[0], 2.0 * 0.9 * 0.1 / (1 - 0.81), rtol=1e-5)


def test_build_batch_masks_and_augmented_graph():
    b, ds = _batch()
    nb, s_cap = b.members.shape
    assert nb == 16 and s_cap == 12 and b.x.shape == (16 * 12, 16) and b.adj.shape == (16, 12, 12)
    assert b.sample_mask.all() and (b.sample_domain[:8] == 0).all() and (b.sample_domain[8:] == 1).all()
    assert (b.label == ds.labels[np.arange(16)]).all()
    np.testing.assert_array_equal(b.members, np.arange(16 * 12).reshape(16, 12))
    # empty slots hold zeros and no edges; edges are symmetric, within real slots, loop-free
    np.testing.assert_array_equal(b.x[~b.member_mask.reshape(-1)], 0.0)
    assert not b.adj[~np.broadcast_to(b.member_mask[:, :, None] & b.member_mask[:, None, :], b.adj.shape)].any()
    np.testing.assert_array_equal(b.adj, np.swapaxes(b.adj, 1, 2))
    assert not np.diagonal(b.adj, axis1=1, axis2=2).any() and b.adj.any()
    # slot (b, s) holds the s-th node of sample b; adj = the input graph's edges among the slots
    x = np.arange(ds.num_nodes, dtype=np.float32)[:, None] + 1.0  # feature = node id + 1
    smp = SubgraphSampler(ds.edge_index, ds.num_nodes, fanouts=[-1, -1], max_nodes=20, features=x)
    sub = smp.sample(np.arange(6), np.random.default_rng(0))
    one = glue.build_glue_batch([(sub, 0)], num_generators=4, max_nodes=12)
    edges = {(int(u), int(v)) for u, v in np.asarray(ds.edge_index).T} | {
        (int(v), int(u)) for u, v in np.asarray(ds.edge_index).T}
    ids = one.x[:, 0].reshape(6, 12).astype(int) - 1  # -1 on empty slots
    assert (ids[:, 0] == np.arange(6)).all() and (one.member_mask == (ids >= 0)).all()
    assert one.member_mask.sum(1).max() == 12  # truncated to max_nodes
    for bi in range(6):
        for i in range(12):
            for j in range(12):
                want = ids[bi, i] >= 0 and ids[bi, j] >= 0 and (ids[bi, j], ids[bi, i]) in edges
                assert bool(one.adj[bi, i, j]) == want, (bi, i, j)
    # one shape for every batch: a batch of different subgraphs has identical shapes
    b2, _ = _batch(seed=3)
    assert jax.tree_util.tree_structure(b) == jax.tree_util.tree_structure(b2)
    assert all(np.shape(u) == np.shape(v) for u, v in zip(jax.tree_util.tree_leaves(b), jax.tree_util.tree_leaves(b2)))
    with pytest.raises(ValueError, match="at least one"):
        glue.build_glue_batch([], num_generators=4, max_nodes=12)


def test_augmented_graph_is_normalised_block_gcn():
    b, _ = _batch()
    mm = jnp.asarray(b.member_mask)
    w = jnp.where(mm[:, None, :], 0.5, 0.0) * jnp.ones((16, 4, 12))
    graph, ew = glue.augmented_graph(jnp.asarray(b.adj), mm, w)
    n = 12 + 4
    a = np.asarray(ew).reshape(16, n, n)
    # dense reference: A + loops, D^-1/2 A D^-1/2
    ref = np.zeros((16, n, n))
    ref[:, :12, :12] = b.adj + np.eye(12)[None] * b.member_mask[:, :, None]
    ref[:, 12:, :12] = np.asarray(w)
    ref[:, :12, 12:] = np.swapaxes(np.asarray(w), 1, 2)
    ref[:, 12:, 12:] = np.eye(4)
    inv = 1 / np.sqrt(np.maximum(ref.sum(-1), 1e-6))
    np.testing.assert_allclose(a, ref * inv[:, :, None] * inv[:, None, :], rtol=1e-5, atol=1e-7)
    assert graph.num_nodes == 16 * n and np.asarray(graph.adj).sum() == (ref > 0).sum()


@pytest.mark.parametrize("backbone", ["gcn", "gated"])
def test_model_losses_finite_and_differentiable(backbone):
    b, _ = _batch()
    cfg = glue.GlueConfig(dim=16, num_generators=4, knn=3, att_dim=8, max_nodes=12,
                          backbone={"name": backbone, "kwargs": {"num_layers": 1}})
    model = glue.GlueModel(cfg, in_dim=16, num_domains=2, rngs=nnx.Rngs(0))
    bj = jax.tree_util.tree_map(jnp.asarray, b)

    def loss(m):
        out = m.encode(bj)
        paths, valid = glue.knn_paths(out.z, bj.sample_mask, bj.sample_domain, jax.random.key(0), knn=4,
                                      num_paths=16, cross_domain=True)
        g = glue.glue_loss(out, paths, valid)
        return glue.locality_loss(out, bj.sample_mask, tau=1.0) + g["holonomy"] + g["curvature"]

    val, grads = nnx.jit(nnx.value_and_grad(loss))(model)  # one compilation, not one per eager op
    assert np.isfinite(float(val))
    leaves = jax.tree_util.tree_leaves(grads)
    assert all(np.all(np.isfinite(np.asarray(x))) for x in leaves)
    assert float(jnp.abs(grads["generators"][...]).sum()) > 0  # generators receive gradient


def test_generators_attach_within_sample_only():
    b, _ = _batch()
    cfg = glue.GlueConfig(dim=16, num_generators=4, knn=3, att_dim=8, max_nodes=12)
    model = glue.GlueModel(cfg, in_dim=16, num_domains=2, rngs=nnx.Rngs(0))
    bj = jax.tree_util.tree_map(jnp.asarray, b)
    h0 = model.project(bj.x, bj.sample_domain)
    g, w = model.attach(h0, bj)
    w = np.asarray(w)
    assert w.shape == (16, 4, 12)
    assert np.all(w[~np.broadcast_to(b.member_mask[:, None], w.shape)] == 0)
    assert np.all((w > 0).sum(-1) == np.minimum(3, b.member_mask.sum(-1))[:, None])
    assert not np.allclose(g[0], g[1])  # per-sample generators (reference quirk fixed)


def test_knn_paths_cross_domain():
    z = jax.random.normal(jax.random.key(0), (10, 4))
    dom = jnp.array([0] * 5 + [1] * 5)
    paths, valid = glue.knn_paths(z, jnp.ones(10, bool), dom, jax.random.key(1), knn=3, num_paths=64,
                                  cross_domain=True)
    p = np.asarray(paths)[np.asarray(valid)]
    assert p.shape[0] > 0
    d = np.asarray(dom)
    assert np.all(d[p[:, 0]] != d[p[:, 1]]) and np.all(d[p[:, 2]] != d[p[:, 1]]) and np.all(p[:, 0] != p[:, 2])


def test_structural_features():
    n = 40
    ring = np.stack([np.arange(n), (np.arange(n) + 1) % n])
    rw = random_walk_features(ring, n, steps=2, probes=4096, seed=0)
    np.testing.assert_allclose(rw[:, 0], 0.0, atol=0.05)  # no return in one step
    np.testing.assert_allclose(rw[:, 1], 0.5, atol=0.06)  # return in two steps: 1/2 on a cycle
    sp = spectral_features(ring, n, dim=4)
    assert sp.shape == (n, 4) and np.all(np.isfinite(sp))
    np.testing.assert_array_equal(structural_features(ring, n), structural_features(ring, n))


def test_fixed_projection_is_deterministic():
    x = np.random.default_rng(0).standard_normal((20, 7))
    a, ma = project_features(x, 5, seed=3)
    b, mb = project_features(x, 5, seed=3)
    c, _ = project_features(x, 5, seed=4)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ma, mb)
    assert not np.allclose(a, c)
    with pytest.raises(ValueError, match="NaN"):
        project_features(np.full((3, 2), np.nan), 4, seed=0)


def test_bf16_gcn_backbone_close_to_f32():
    b, _ = _batch()
    bj = jax.tree_util.tree_map(jnp.asarray, b)
    outs = {}
    for dt in ("float32", "bfloat16"):
        cfg = glue.GlueConfig(dim=16, num_generators=4, knn=3, att_dim=8, max_nodes=12,
                              backbone={"name": "gcn", "kwargs": {"num_layers": 2, "dtype": dt}})
        model = glue.GlueModel(cfg, in_dim=16, num_domains=2, rngs=nnx.Rngs(0))
        outs[dt] = np.asarray(model.encode(bj).z)
    assert outs["bfloat16"].dtype == np.float32 and np.all(np.isfinite(outs["bfloat16"]))
    np.testing.assert_allclose(outs["bfloat16"], outs["float32"], atol=0.1)
    assert not np.array_equal(outs["bfloat16"], outs["float32"])  # really computed in bf16


def test_sample_inputs_center_and_mean():
    x = jnp.arange(2 * 3 * 2, dtype=jnp.float32).reshape(6, 2)  # B=2 samples, S=3 slots, F=2
    mm = jnp.asarray([[True, True, False], [True, False, False]])
    np.testing.assert_allclose(glue.sample_inputs(x, mm, how="center"), [[0, 1], [6, 7]])
    np.testing.assert_allclose(glue.sample_inputs(x, mm, how="mean"), [[1, 2], [6, 7]])
    with pytest.raises(ValueError, match="text-align target"):
        glue.sample_inputs(x, mm, how="max")


def test_text_align_loss_prefers_own_input_and_ignores_masked():
    t = jax.random.normal(jax.random.key(0), (6, 10))
    mask = jnp.asarray([True] * 5 + [False])
    matched = float(glue.text_align_loss(t, t, mask, tau=0.1))
    shuffled = float(glue.text_align_loss(jnp.roll(t, 1, axis=0), t, mask, tau=0.1))
    assert matched < 0.1 < np.log(5) < shuffled  # near 0 when aligned, above chance (log 5) when not
    # the masked sample neither counts nor acts as a negative
    garbage = t.at[5].set(t[0] * 10)
    np.testing.assert_allclose(float(glue.text_align_loss(garbage, t, mask, tau=0.1)), matched, rtol=1e-5)
    g = jax.grad(lambda p: glue.text_align_loss(p, t, mask, tau=0.1))(jnp.roll(t, 1, axis=0))
    assert np.all(np.isfinite(np.asarray(g))) and float(jnp.abs(g[5]).sum()) == 0.0


def test_shared_input_projection_and_residual_gcn():
    b, _ = _batch()
    cfg = glue.GlueConfig(dim=16, num_generators=4, knn=3, att_dim=8, max_nodes=12, input_projection="shared",
                          backbone={"name": "gcn", "kwargs": {"num_layers": 2, "residual": True}})
    model = glue.GlueModel(cfg, in_dim=16, num_domains=3, rngs=nnx.Rngs(0))
    assert model.in_w.shape == (1, 16, 16) and model.protos.point.shape == (3, 16)
    bj = jax.tree_util.tree_map(jnp.asarray, b)
    h0 = model.project(bj.x, bj.sample_domain)
    np.testing.assert_allclose(h0, bj.x @ model.in_w[0] + model.in_b[0], rtol=1e-5, atol=1e-6)
    out = model.encode(bj)
    assert np.all(np.isfinite(np.asarray(out.z)))
    # residual: with zeroed GCN weights the layers add nothing, so each node keeps its LayerNormed input
    bb = glue.GCNBackbone(8, num_layers=2, residual=True, rngs=nnx.Rngs(0))
    for lin in bb.linears:
        lin.kernel[...] = jnp.zeros_like(lin.kernel[...])
    h = jax.random.normal(jax.random.key(1), (4, 8))
    graph = glue.ops.BlockGraph(adj=jnp.ones((1, 4, 4), bool))
    got, _ = bb(h, graph, jnp.full((16,), 0.25))
    ln = (h - h.mean(-1, keepdims=True)) / jnp.sqrt(h.var(-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(got, (ln - ln.mean(-1, keepdims=True)) / jnp.sqrt(ln.var(-1, keepdims=True) + 1e-6),
                               atol=1e-3)
    with pytest.raises(ValueError, match="input_projection"):
        glue.GlueModel(glue.GlueConfig(dim=16, num_generators=4, input_projection="both"), in_dim=16, num_domains=1,
                       rngs=nnx.Rngs(0))
