"""Multi-domain mixtures: batches drawn across several datasets, tagged with their domain.

Every step picks ONE domain i with probability p_i and yields that domain's next
batch (batches never mix domains, so each keeps its own padding buckets, text
and label space). Weights:
- ``proportional``: p_i ∝ n_i (n_i = size of domain i, e.g. its training nodes),
- ``uniform``:      p_i = 1 / K (GraphGlue's sampler draws domains uniformly),
- ``temperature``:  p_i ∝ n_i^(1/τ); τ = 1 is proportional, τ → ∞ uniform,
- or explicit ``weights`` (normalised).

The domain sequence is drawn once from ``seed`` for ``num_batches`` steps and the
k-th visit of domain i reads batch k of domain i (wrapping around a finite domain
dataset). Built on ``grain.MapDataset.select_from_datasets``: step t is a pure
function of (seed, t), so iterators are deterministic and resume exactly from
``it.get_state()`` / ``it.set_state(state)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import grain
import numpy as np

from geofm.data.sampler import SubgraphSampler, loader

STRATEGIES: tuple[str, ...] = ("proportional", "uniform", "temperature")


class DomainBatch(NamedTuple):
    """One mixture step: ``domain`` index into the mixture's domains, its ``name``, the batch."""

    domain: int
    name: str
    batch: Any


def mixture_weights(
    sizes: Sequence[float], *, strategy: str = "temperature", temperature: float = 1.0
) -> np.ndarray:
    """Sampling probabilities [K] float64 summing to 1 (see module docstring).

    sizes: [K] positive domain sizes. ``temperature`` is only used by ``"temperature"``.
    """
    n = np.asarray(sizes, dtype=np.float64)
    if n.ndim != 1 or n.size == 0 or np.any(~np.isfinite(n)) or np.any(n <= 0):
        raise ValueError(f"sizes must be a non-empty list of positive numbers, got {list(np.ravel(n))}")
    if strategy == "proportional":
        w = n
    elif strategy == "uniform":
        w = np.ones_like(n)
    elif strategy == "temperature":
        if not np.isfinite(temperature) or temperature <= 0:
            raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
        w = np.exp((np.log(n) - np.log(n).max()) / temperature)  # n^(1/τ), overflow-safe
    else:
        raise ValueError(f"unknown mixture strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
    return w / w.sum()


class DomainSchedule(grain.transforms.DatasetSelectionMap):
    """Precomputed step -> (domain, local batch index) table (stateless, picklable).

    domain: [T] int32 drawn i.i.d. from ``probs`` with ``seed``; local[t] counts the
    earlier visits of domain[t] (modulo ``lengths[domain]``).
    """

    def __init__(self, probs: np.ndarray, lengths: Sequence[int], *, num_batches: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.domain = rng.choice(len(probs), size=num_batches, p=probs).astype(np.int32)
        order = np.argsort(self.domain, kind="stable")
        counts = np.bincount(self.domain, minlength=len(probs))
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        rank = np.empty(num_batches, dtype=np.int64)
        rank[order] = np.arange(num_batches) - np.repeat(starts, counts)
        self.local = rank % np.asarray(lengths, dtype=np.int64)[self.domain]

    def __len__(self) -> int:
        return int(self.domain.size)

    def __getitem__(self, index: int) -> tuple[int, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"mixture step {index} out of range [0, {len(self)})")
        return int(self.domain[index]), int(self.local[index])


class _Tag(grain.transforms.Map):
    def __init__(self, domain: int, name: str) -> None:
        self.domain, self.name = domain, name

    def map(self, element: Any) -> DomainBatch:
        return DomainBatch(self.domain, self.name, element)


def mixture(
    datasets: Mapping[str, grain.MapDataset],
    *,
    num_batches: int,
    seed: int,
    sizes: Mapping[str, float] | None = None,
    strategy: str = "temperature",
    temperature: float = 1.0,
    weights: Mapping[str, float] | None = None,
) -> grain.MapDataset:
    """A ``grain.MapDataset`` of ``num_batches`` ``DomainBatch`` steps over named batch datasets.

    datasets: {name: MapDataset of batches}; domain ids follow the mapping's order.
    sizes: {name: n_i} for the strategy (default: ``len`` of each dataset, which must
        then be finite). weights: explicit {name: w_i} overriding the strategy.
    """
    names = list(datasets)
    if not names:
        raise ValueError("mixture needs at least one dataset")
    if num_batches < 1:
        raise ValueError(f"num_batches must be >= 1, got {num_batches}")
    lengths = [len(datasets[k]) for k in names]
    if min(lengths) < 1:
        raise ValueError(f"every domain needs at least one batch; lengths {dict(zip(names, lengths))}")
    if weights is not None:
        missing = set(names) ^ set(weights)
        if missing:
            raise ValueError(f"weights must name exactly the datasets {names}; mismatched: {sorted(missing)}")
        probs = mixture_weights([weights[k] for k in names], strategy="proportional")
    else:
        if sizes is None:
            sizes = dict(zip(names, lengths))
        missing = set(names) - set(sizes)
        if missing:
            raise ValueError(f"sizes lacks datasets {sorted(missing)}")
        probs = mixture_weights([sizes[k] for k in names], strategy=strategy, temperature=temperature)
    schedule = DomainSchedule(probs, lengths, num_batches=num_batches, seed=seed)
    tagged = [datasets[k].map(_Tag(i, k)) for i, k in enumerate(names)]
    return grain.MapDataset.select_from_datasets(tagged, schedule)


def subgraph_mixture(
    domains: Mapping[str, tuple[SubgraphSampler, np.ndarray | None]],
    *,
    batch_size: int,
    num_batches: int,
    seed: int,
    strategy: str = "temperature",
    temperature: float = 1.0,
    weights: Mapping[str, float] | None = None,
) -> grain.MapDataset:
    """Mixture of subgraph loaders: {name: (sampler, centre node ids or None = all)}.

    Each domain gets an endless, reshuffled ``loader`` seeded from (seed, domain index);
    domain sizes n_i are the numbers of centre nodes.
    """
    datasets, sizes = {}, {}
    for i, (name, (sampler, nodes)) in enumerate(domains.items()):
        dseed = int(np.random.default_rng([seed, i]).integers(2**31 - 1))
        datasets[name] = loader(sampler, nodes, batch_size=batch_size, seed=dseed, num_epochs=None)
        sizes[name] = sampler.num_nodes if nodes is None else len(nodes)
    return mixture(datasets, num_batches=num_batches, seed=seed, sizes=sizes, strategy=strategy,
                   temperature=temperature, weights=weights)
