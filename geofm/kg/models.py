"""KG embedding models chosen by name: TransE, RotatE, ComplEx, MuRP, AttH/RotH/RefH, text bi-encoder.

Every model follows one protocol (Flax NNX):
  query(h, r, *, key=None) -> Q         h, r: int32 [B]; r in [0, 2R) (reciprocal
                                         relations: r + R is the inverse of r)
  score_shared(Q, cand) -> [B, E]       cand: int32 [E], shared by all queries (1-N)
  score_rows(Q, t) -> [B, K]            t: int32 [B, K], per-query candidates
  regularizer(h, r, t) -> scalar        (N3 for ComplEx; 0 otherwise)
  aux_loss(Q) -> scalar                 (CAT's router entropy; 0 otherwise)
Higher scores are better. `key` (dropout) is ignored by models without dropout.

Parameters all live in Euclidean/tangent space (plain optax). Hyperbolic models
map them to the Poincaré ball of their relation's curvature k = -softplus(raw) < 0
(signed convention: k<0 hyperbolic) with `manifolds.stereographic`.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

from geofm.kg.scoring import (
    euclidean_sqdist_shared,
    gram_sqdist_hyperbolic,
    givens_reflection,
    givens_rotation,
    sqdist_to_tangent_rows,
    sqdist_to_tangent_shared,
)
from geofm.nn.curvature import curvature_to_raw, raw_to_curvature
from manifolds import stereographic as st

__all__ = ["KGModel", "MODELS", "register_model", "model_class", "build_model", "TransE", "RotatE", "ComplEx", "MuRP", "AttH", "RotH", "RefH", "TextKG"]

MODELS: dict[str, type["KGModel"]] = {}


def register_model(name: str) -> Callable[[type], type]:
    """Class decorator adding a model to the registry under `name`."""

    def deco(cls: type) -> type:
        if name in MODELS:
            raise ValueError(f"KG model {name!r} registered twice")
        MODELS[name] = cls
        cls.registry_name = name
        return cls

    return deco


def load_builtin_models() -> dict[str, type["KGModel"]]:
    """Register the built-in models defined outside this module (CAT-KG); returns MODELS."""
    import geofm.kg.cat  # noqa: F401  (registers "cat")

    return MODELS


def model_class(name: str) -> type["KGModel"]:
    """The registered model class called `name` (ValueError listing the known names)."""
    load_builtin_models()
    if name not in MODELS:
        raise ValueError(f"unknown KG model {name!r}; known: {sorted(MODELS)}")
    return MODELS[name]


def build_model(name: str, num_entities: int, num_relations: int, *, seed: int = 0, dtype: Any = jnp.float32, **kwargs: Any) -> "KGModel":
    """Instantiate a registered model; num_relations is R (the model holds 2R with inverses)."""
    cls = model_class(name)
    try:
        return cls(num_entities, num_relations, rngs=nnx.Rngs(seed), dtype=dtype, **kwargs)
    except TypeError as err:
        raise ValueError(f"bad kwargs for KG model {name!r}: {err}") from None


def _normal(rngs: nnx.Rngs, shape: tuple[int, ...], scale: float, dtype: Any) -> nnx.Param:
    return nnx.Param(scale * jax.random.normal(rngs.params(), shape, dtype))


def _uniform(rngs: nnx.Rngs, shape: tuple[int, ...], dtype: Any) -> nnx.Param:
    return nnx.Param(jax.random.uniform(rngs.params(), shape, dtype, -1.0, 1.0))


class KGModel(nnx.Module):
    """Base class: entity table `entity` [N, d] and the scoring protocol."""

    registry_name = "base"
    # True when every read of the entity table goes through `entity_rows`, so the
    # table may be swapped for a module with `rows(idx)` (geofm.kg.init's learned
    # text projection). Subclasses that index `self.entity[...]` directly keep False.
    entity_rows_only = False

    def __init__(self, num_entities: int, num_relations: int, *, dim: int, dtype: Any) -> None:
        if dim < 2:
            raise ValueError(f"dim must be >= 2, got {dim}")
        self.num_entities, self.num_relations, self.dim, self.dtype = num_entities, num_relations, dim, dtype

    def entity_rows(self, idx: jax.Array) -> jax.Array:
        """Entity embeddings [..., d] for int ids `idx` [...]: rows of the `entity` table,
        or `entity.rows(idx)` when the table is a module (geofm.kg.init.ProjectedEntityTable)."""
        table = self.entity
        if isinstance(table, nnx.Module):
            return table.rows(idx)
        return table[...][idx]

    def query(self, h: jax.Array, r: jax.Array, *, key: jax.Array | None = None) -> Any:
        raise NotImplementedError

    def score_shared(self, q: Any, cand: jax.Array) -> jax.Array:
        raise NotImplementedError

    def score_rows(self, q: Any, t: jax.Array) -> jax.Array:
        raise NotImplementedError

    def regularizer(self, h: jax.Array, r: jax.Array, t: jax.Array) -> jax.Array:
        return jnp.zeros((), self.dtype)

    def score_relations(self, h: jax.Array, t: jax.Array) -> jax.Array:
        """Scores [B, 2R] of every relation (reciprocals included) between heads `h` [B] and tails
        `t` [B], equal to scoring (h, r, t) for each r; used by `loss.relation_prediction`."""
        raise NotImplementedError(f"model {self.registry_name!r} has no relation scores (loss.relation_prediction)")

    def aux_loss(self, q: Any) -> jax.Array:
        """Extra training loss computed from a query (e.g. CAT's router entropy); 0 by default."""
        return jnp.zeros((), self.dtype)

    def score_candidates(self, h: jax.Array, r: jax.Array, cand: jax.Array) -> jax.Array:
        """Evaluation scores [B, E] of queries (h, r) against entities `cand` [E]."""
        return self.score_shared(self.query(h, r), cand)


# ------------------------------------------------------------ Euclidean ----


@register_model("transe")
class TransE(KGModel):
    """TransE (Bordes et al. 2013): score = margin - |e_h + r - e_t|_p, p in {1, 2}."""

    entity_rows_only = True

    def __init__(self, num_entities, num_relations, *, rngs, dtype=jnp.float32, dim=32, p=2, margin=0.0, init_size=1e-3):
        super().__init__(num_entities, num_relations, dim=dim, dtype=dtype)
        if p not in (1, 2):
            raise ValueError(f"TransE p must be 1 or 2, got {p}")
        self.p, self.margin = p, margin
        self.entity = _normal(rngs, (num_entities, dim), init_size, dtype)
        self.rel = _normal(rngs, (2 * num_relations, dim), init_size, dtype)

    def query(self, h, r, *, key=None):
        return self.entity_rows(h) + self.rel[...][r]

    def _dist(self, diff: jax.Array) -> jax.Array:
        if self.p == 1:
            return jnp.sum(jnp.abs(diff), -1)
        d2 = jnp.sum(diff * diff, -1)
        return jnp.sqrt(jnp.where(d2 > 0, d2, 1.0)) * (d2 > 0)

    def score_shared(self, q, cand):
        e = self.entity_rows(cand)
        if self.p == 2:
            d2 = euclidean_sqdist_shared(q, e)
            return self.margin - jnp.sqrt(jnp.where(d2 > 0, d2, 1.0)) * (d2 > 0)
        return self.margin - self._dist(q[:, None, :] - e[None, :, :])

    def score_rows(self, q, t):
        return self.margin - self._dist(q[:, None, :] - self.entity_rows(t))


def _complex(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    m = x.shape[-1] // 2
    return x[..., :m], x[..., m:]


@register_model("rotate")
class RotatE(KGModel):
    """RotatE (Sun et al. 2019): score = margin - sum_j |h_j r_j - t_j| with |r_j| = 1 (complex dim = dim/2)."""

    entity_rows_only = True

    def __init__(self, num_entities, num_relations, *, rngs, dtype=jnp.float32, dim=32, margin=6.0, init_size=1e-3):
        super().__init__(num_entities, num_relations, dim=dim, dtype=dtype)
        if dim % 2:
            raise ValueError(f"RotatE dim must be even (complex pairs), got {dim}")
        self.margin = margin
        self.entity = _normal(rngs, (num_entities, dim), init_size, dtype)
        self.phase = nnx.Param(jax.random.uniform(rngs.params(), (2 * num_relations, dim // 2), dtype, -jnp.pi, jnp.pi))

    def query(self, h, r, *, key=None):
        hre, him = _complex(self.entity_rows(h))
        c, s = jnp.cos(self.phase[...][r]), jnp.sin(self.phase[...][r])
        return jnp.concatenate([hre * c - him * s, hre * s + him * c], -1)

    def _score(self, q: jax.Array, t: jax.Array) -> jax.Array:
        qre, qim = _complex(q)
        tre, tim = _complex(t)
        m2 = (qre - tre) ** 2 + (qim - tim) ** 2
        return self.margin - jnp.sum(jnp.sqrt(jnp.where(m2 > 0, m2, 1.0)) * (m2 > 0), -1)

    def score_shared(self, q, cand):
        return self._score(q[:, None, :], self.entity_rows(cand)[None, :, :])

    def score_rows(self, q, t):
        return self._score(q[:, None, :], self.entity_rows(t))


@register_model("complex")
class ComplEx(KGModel):
    """ComplEx (Trouillon et al. 2016) with the N3 regulariser (Lacroix et al. 2018).

    score = Re(<e_h, w_r, conj(e_t)>); regularizer = n3 * mean_b sum(|e_h|^3 + |w_r|^3 + |e_t|^3).
    """

    entity_rows_only = True

    def __init__(self, num_entities, num_relations, *, rngs, dtype=jnp.float32, dim=32, n3=0.0, init_size=1e-3):
        super().__init__(num_entities, num_relations, dim=dim, dtype=dtype)
        if dim % 2:
            raise ValueError(f"ComplEx dim must be even (complex pairs), got {dim}")
        self.n3 = n3
        self.entity = _normal(rngs, (num_entities, dim), init_size, dtype)
        self.rel = _normal(rngs, (2 * num_relations, dim), init_size, dtype)

    def query(self, h, r, *, key=None):
        hre, him = _complex(self.entity_rows(h))
        rre, rim = _complex(self.rel[...][r])
        return jnp.concatenate([hre * rre - him * rim, hre * rim + him * rre], -1)

    def score_shared(self, q, cand):
        return q @ self.entity_rows(cand).T

    def score_rows(self, q, t):
        return jnp.einsum("bd,bkd->bk", q, self.entity_rows(t))

    def score_relations(self, h, t):
        # Re(<h, w, conj(t)>) = <w_re, h_re t_re + h_im t_im> + <w_im, h_re t_im - h_im t_re>
        hre, him = _complex(self.entity_rows(h))
        tre, tim = _complex(self.entity_rows(t))
        return jnp.concatenate([hre * tre + him * tim, hre * tim - him * tre], -1) @ self.rel[...].T

    def regularizer(self, h, r, t):
        def mod3(x):
            re, im = _complex(x)
            return jnp.sum(jnp.sqrt(re**2 + im**2 + 1e-30) ** 3, -1)

        w = self.rel[...]
        return self.n3 * jnp.mean(mod3(self.entity_rows(h)) + mod3(w[r]) + mod3(self.entity_rows(t)))


# ----------------------------------------------------------- hyperbolic ----


class _HypBase(KGModel):
    """Shared parts of the hyperbolic family: tangent entity table, biases, per-relation curvature.

    Entities are tangent vectors at the origin; the candidate point is
    expmap0(e_t, k_r) in the query relation's ball. score = -d_k(q, e_t)^2 + b_h + b_t.
    """

    entity_rows_only = True

    def __init__(self, num_entities, num_relations, *, rngs, dtype, dim, init_size, multi_c, k_init, learn_k=True):
        super().__init__(num_entities, num_relations, dim=dim, dtype=dtype)
        self.entity = _normal(rngs, (num_entities, dim), init_size, dtype)
        self.bh = nnx.Param(jnp.zeros((num_entities,), dtype))
        self.bt = nnx.Param(jnp.zeros((num_entities,), dtype))
        n_c = 2 * num_relations if multi_c else 1
        raw = jnp.full((n_c, 1), curvature_to_raw(k_init, geometry="hyperbolic"), dtype)
        self.k_raw = nnx.Param(raw) if learn_k else nnx.Variable(raw)
        self.multi_c = multi_c

    def curvature(self, r: jax.Array) -> jax.Array:
        """Signed curvature k < 0 per query: [B, 1]."""
        raw = self.k_raw[...]
        raw = raw[r] if self.multi_c else jnp.broadcast_to(raw[0], (r.shape[0], 1))
        return raw_to_curvature(raw, geometry="hyperbolic")

    def _finish(self, x: jax.Array, k: jax.Array, h: jax.Array) -> dict[str, jax.Array]:
        return {"x": st.project(x, k=k), "k": k, "bh": self.bh[...][h]}

    def score_shared(self, q, cand):
        d2 = sqdist_to_tangent_shared(q["x"], self.entity_rows(cand), k=q["k"], hyperbolic=True)
        return -d2 + q["bh"][:, None] + self.bt[...][cand][None, :]

    def score_rows(self, q, t):
        d2 = sqdist_to_tangent_rows(q["x"], self.entity_rows(t), k=q["k"], hyperbolic=True)
        return -d2 + q["bh"][:, None] + self.bt[...][t]


@register_model("murp")
class MuRP(_HypBase):
    """MuRP (Balazevic et al. 2019) with fixed curvature k (default -1).

    score = -d_k(exp0(R log0 e_h), r ⊕ e_t)^2 + b_h + b_t with diagonal R, evaluated as
    -d_k((-r) ⊕ exp0(R log0 e_h), e_t)^2 (left Möbius translation is an isometry).
    ball_params=False: e and r are tangent vectors at 0 (points exp0(.)), plain optax.
    ball_params=True: e and r are points on the ball, as in the paper; optimise them
    with `optim.name: riemannian_adam` (see `manifold_specs`).
    """

    def __init__(self, num_entities, num_relations, *, rngs, dtype=jnp.float32, dim=32, init_size=1e-3, k=-1.0, ball_params=False):
        super().__init__(num_entities, num_relations, rngs=rngs, dtype=dtype, dim=dim, init_size=init_size,
                         multi_c=False, k_init=k, learn_k=False)
        self.k_fixed, self.ball_params = float(k), ball_params
        self.rel_diag = nnx.Param(jnp.ones((2 * num_relations, dim), dtype) + init_size * jax.random.normal(rngs.params(), (2 * num_relations, dim), dtype))
        self.rel = _normal(rngs, (2 * num_relations, dim), init_size, dtype)
        if ball_params:  # small tangent noise mapped onto the ball
            self.entity = nnx.Param(st.expmap0(self.entity[...], k=k))
            self.rel = nnx.Param(st.expmap0(self.rel[...], k=k))

    def manifold_specs(self) -> Any:
        """Spec rule for `manifolds.optim.riemannian_adam`: entity/rel tables on the ball when ball_params."""
        from manifolds.optim import specs_by_path
        from manifolds.spec import Stereographic

        if not self.ball_params:
            return None
        ball = Stereographic(self.k_fixed)
        return specs_by_path(nnx.state(self, nnx.Param), lambda path, _: ball if path.startswith(("['entity']", "['rel']")) else None)

    def _points(self, x: jax.Array, k: jax.Array) -> jax.Array:
        return st.project(x, k=k) if self.ball_params else st.expmap0(x, k=k)

    def query(self, h, r, *, key=None):
        k = self.curvature(r)
        e_h = self.entity_rows(h)
        tangent = st.logmap0(st.project(e_h, k=k), k=k) if self.ball_params else e_h
        head = st.expmap0(self.rel_diag[...][r] * tangent, k=k)
        rel = self._points(self.rel[...][r], k)
        return self._finish(st.mobius_add(-rel, head, k=k), k, h)

    def score_shared(self, q, cand):
        if not self.ball_params:
            return super().score_shared(q, cand)
        e = st.project(self.entity_rows(cand), k=self.k_fixed)
        x = q["x"]
        d2 = gram_sqdist_hyperbolic(*st.gram(x, e), k=q["k"])
        return -d2 + q["bh"][:, None] + self.bt[...][cand][None, :]

    def score_rows(self, q, t):
        if not self.ball_params:
            return super().score_rows(q, t)
        e = st.project(self.entity_rows(t), k=self.k_fixed)
        x = q["x"]
        xy, x2, e2 = st.gram(x[:, None, :], e)  # [B, 1, K], [B, 1, 1], [B, 1, K]
        d2 = gram_sqdist_hyperbolic(xy[:, 0], x2[:, 0], e2[:, 0], k=q["k"])
        return -d2 + q["bh"][:, None] + self.bt[...][t]


@register_model("roth")
class RotH(_HypBase):
    """RotH (Chami et al. 2020): Givens rotation in the ball between two Möbius translations."""

    def __init__(self, num_entities, num_relations, *, rngs, dtype=jnp.float32, dim=32, init_size=1e-3, multi_c=True, k=None):
        super().__init__(num_entities, num_relations, rngs=rngs, dtype=dtype, dim=dim, init_size=init_size,
                         multi_c=multi_c, k_init=-float(jax.nn.softplus(1.0)) if k is None else k)
        self.rel = _normal(rngs, (2 * num_relations, 2 * dim), init_size, dtype)
        self.rel_diag = _uniform(rngs, (2 * num_relations, dim), dtype)

    def query(self, h, r, *, key=None):
        k = self.curvature(r)
        head = st.expmap0(self.entity_rows(h), k=k)
        r1, r2 = jnp.split(self.rel[...][r], 2, axis=-1)
        lhs = st.project(st.mobius_add(head, st.expmap0(r1, k=k), k=k), k=k)
        rot = givens_rotation(self.rel_diag[...][r], lhs)
        return self._finish(st.mobius_add(rot, st.expmap0(r2, k=k), k=k), k, h)


@register_model("refh")
class RefH(_HypBase):
    """RefH (Chami et al. 2020): Givens reflection in the tangent space, then a Möbius translation."""

    def __init__(self, num_entities, num_relations, *, rngs, dtype=jnp.float32, dim=32, init_size=1e-3, multi_c=True, k=None):
        super().__init__(num_entities, num_relations, rngs=rngs, dtype=dtype, dim=dim, init_size=init_size,
                         multi_c=multi_c, k_init=-float(jax.nn.softplus(1.0)) if k is None else k)
        self.rel = _normal(rngs, (2 * num_relations, dim), init_size, dtype)
        self.rel_diag = _uniform(rngs, (2 * num_relations, dim), dtype)

    def query(self, h, r, *, key=None):
        k = self.curvature(r)
        lhs = st.expmap0(givens_reflection(self.rel_diag[...][r], self.entity_rows(h)), k=k)
        return self._finish(st.mobius_add(lhs, st.expmap0(self.rel[...][r], k=k), k=k), k, h)


@register_model("atth")
class AttH(_HypBase):
    """AttH (Chami et al. 2020): attention over a Givens rotation and reflection of e_h, then Möbius translation.

    q = project(exp0(sum_i a_i g_i(e_h)) ⊕ exp0(r)), a = softmax_i(<c_r, g_i(e_h)> / sqrt(d)),
    g in {reflection, rotation}; score = -d_k(q, exp0(e_t))^2 + b_h + b_t.
    """

    def __init__(self, num_entities, num_relations, *, rngs, dtype=jnp.float32, dim=32, init_size=1e-3, multi_c=True, k=None):
        super().__init__(num_entities, num_relations, rngs=rngs, dtype=dtype, dim=dim, init_size=init_size,
                         multi_c=multi_c, k_init=-float(jax.nn.softplus(1.0)) if k is None else k)
        self.rel = _normal(rngs, (2 * num_relations, dim), init_size, dtype)
        self.rel_diag = _uniform(rngs, (2 * num_relations, 2 * dim), dtype)
        self.context = _normal(rngs, (2 * num_relations, dim), init_size, dtype)

    def attention(self, h: jax.Array, r: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(attended tangent query [B, d], weights [B, 2] over (reflection, rotation))."""
        head = self.entity_rows(h)
        rot_p, ref_p = jnp.split(self.rel_diag[...][r], 2, axis=-1)
        ref, rot = givens_reflection(ref_p, head), givens_rotation(rot_p, head)
        ctx = self.context[...][r] / jnp.sqrt(float(self.dim))
        a_ref = jax.nn.sigmoid(jnp.sum(ctx * (ref - rot), -1, keepdims=True))  # = softmax over the two
        return a_ref * ref + (1.0 - a_ref) * rot, jnp.concatenate([a_ref, 1.0 - a_ref], -1)

    def query(self, h, r, *, key=None):
        k = self.curvature(r)
        att_q, _ = self.attention(h, r)
        lhs = st.expmap0(att_q, k=k)
        return self._finish(st.mobius_add(lhs, st.expmap0(self.rel[...][r], k=k), k=k), k, h)


# ----------------------------------------------------------------- text ----


def _unit(x: jax.Array) -> jax.Array:
    """Rows scaled to unit L2 norm; zero rows stay zero (no NaN)."""
    n2 = jnp.sum(x * x, -1, keepdims=True)
    return x * jax.lax.rsqrt(jnp.where(n2 > 0, n2, 1.0)) * (n2 > 0)


@register_model("text")
class TextKG(KGModel):
    """Bi-encoder over frozen entity-text embeddings (Euclidean; no curvature).

    text [N, D] is a fixed `nnx.Variable` filled by `init.kind: text` (or
    `graph`) through `set_text`; it starts at zero and the training loop refuses
    to run without it. With c_t = unit(text_t Wc + res_t) and
    x = text_h Wq + res_h (res only when residual=True, starting at 0):

      q = unit(x + MLP([x; rel_r]))      score(h, r, t) = <q, c_t> / temperature

    init_size: std of the relation embeddings. An entity unseen in training is scored from its text alone, which is what a
    structure-only model cannot do; pair it with one through `geofm kg-ensemble`.
    """

    def __init__(self, num_entities, num_relations, *, rngs, dtype=jnp.float32, dim=256, text_dim=384, hidden=512,
                 temperature=0.05, residual=False, init_size=0.1):
        super().__init__(num_entities, num_relations, dim=dim, dtype=dtype)
        if not temperature > 0:
            raise ValueError(f"text model temperature must be > 0, got {temperature}")
        if text_dim < 1 or hidden < 1:
            raise ValueError(f"text_dim and hidden must be >= 1, got {text_dim}, {hidden}")
        self.temperature, self.text_dim = float(temperature), int(text_dim)
        self.text = nnx.Variable(jnp.zeros((num_entities, text_dim), dtype))
        self.w_cand = _normal(rngs, (text_dim, dim), text_dim**-0.5, dtype)
        self.w_query = _normal(rngs, (text_dim, dim), text_dim**-0.5, dtype)
        self.rel = _normal(rngs, (2 * num_relations, dim), init_size, dtype)  # relation embeddings
        self.w1 = _normal(rngs, (2 * dim, hidden), (2 * dim) ** -0.5, dtype)
        self.b1 = nnx.Param(jnp.zeros((hidden,), dtype))
        self.w2 = _normal(rngs, (hidden, dim), hidden**-0.5, dtype)
        self.res_cand = nnx.Param(jnp.zeros((num_entities, dim), dtype)) if residual else None
        self.res_query = nnx.Param(jnp.zeros((num_entities, dim), dtype)) if residual else None

    def set_text(self, emb: Any) -> None:
        """Install the frozen entity-text table emb [N, text_dim] (rows without text: zeros)."""
        emb = jnp.asarray(emb, self.dtype)
        if emb.shape != (self.num_entities, self.text_dim):
            raise ValueError(f"text model: entity embeddings have shape {tuple(emb.shape)}; expected "
                             f"[{self.num_entities}, {self.text_dim}] (set model.kwargs.text_dim to the width of the "
                             "text encoder, or of the pretrained backbone for init.kind: graph)")
        self.text = nnx.Variable(emb)

    def candidates(self, idx: jax.Array) -> jax.Array:
        """Unit candidate vectors [..., dim] of entities `idx` [...]."""
        c = self.text[...][idx] @ self.w_cand[...]
        if self.res_cand is not None:
            c = c + self.res_cand[...][idx]
        return _unit(c)

    def query(self, h, r, *, key=None):
        x = self.text[...][h] @ self.w_query[...]
        if self.res_query is not None:
            x = x + self.res_query[...][h]
        z = jnp.concatenate([x, self.rel[...][r]], -1)
        return _unit(x + jax.nn.gelu(z @ self.w1[...] + self.b1[...]) @ self.w2[...]) / self.temperature

    def score_shared(self, q, cand):
        return q @ self.candidates(cand).T

    def score_rows(self, q, t):
        return jnp.einsum("bd,bkd->bk", q, self.candidates(t))
