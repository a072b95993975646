"""Which unlabelled products to label next (active learning), as plain functions on a pool.

A pool is the unlabelled products' embeddings (unit rows), the labeller's calibrated
probabilities per attribute and whether each attribute applies, plus the embeddings of products
already labelled. Every strategy returns ``budget`` distinct pool rows, best first, and is
seeded. What they pick (Settles 2009 surveys the field):

- ``random``: the baseline every other strategy must beat.
- ``margin``: the least confident products first, by the margin between the two likeliest
  classes, averaged over the attributes that apply (uncertainty sampling).
- ``entropy``: the same with the normalised entropy of the probabilities.
- ``balanced``: margin, taken in turn from each (attribute, predicted class), so that rare classes
  get their share; naive uncertainty on CLIP features can fall below random by piling up on a few
  classes (PCB, Bang et al. 2024).
- ``coreset``: k-center greedy on the embeddings, each pick the product farthest from everything
  labelled or picked (Sener & Savarese 2018).
- ``typiclust``: k-means into as many clusters as labelled + budget, then the most typical product
  (densest neighbourhood) of each of the largest clusters without a label; made for low budgets
  (Hacohen et al. 2022).
- ``badge``: k-means++ seeding on gradient embeddings, (p - onehot(argmax p)) outer x, so that
  picks are both uncertain and diverse (Ash et al. 2020).
- ``weighted``: k-means++ seeding on the embeddings with each product's chance scaled by its
  uncertainty: BADGE's idea without the outer product, cheap on any number of classes.

Near-duplicates count once: the rank-based strategies skip a product whose cosine similarity to
one labelled or already picked reaches ``DUPLICATE_COSINE``; the distance-based ones never pick
one (its distance is about zero).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

DUPLICATE_COSINE = 0.995
TYPICAL_NEIGHBOURS = 20
BADGE_DIMENSIONS = 64  # embeddings reduced by PCA before the outer product: sum(classes) x 64 columns


@dataclass
class Pool:
    """The unlabelled products a strategy chooses from, and those already labelled."""

    embeddings: np.ndarray  # (n, d) unit rows
    proba: dict[str, np.ndarray] = field(default_factory=dict)  # attribute -> (n, k), calibrated
    applies: dict[str, np.ndarray] = field(default_factory=dict)  # attribute -> (n,) bool; missing: all apply
    labelled: np.ndarray | None = None  # (m, d) unit rows of products with labels already

    def __len__(self) -> int:
        return len(self.embeddings)

    def anchors(self) -> np.ndarray:
        d = self.embeddings.shape[1]
        return np.zeros((0, d), dtype=np.float32) if self.labelled is None else np.asarray(self.labelled, np.float32)

    def applying(self, attribute: str) -> np.ndarray:
        return self.applies.get(attribute, np.ones(len(self), dtype=bool))


def margin_uncertainty(proba: np.ndarray) -> np.ndarray:
    """1 - (top-1 - top-2 probability) per row: 1 is a coin toss, 0 a sure label."""
    if proba.shape[1] < 2:
        return np.zeros(len(proba))
    top = -np.sort(-proba, axis=1)[:, :2]
    return 1.0 - (top[:, 0] - top[:, 1])


def entropy_uncertainty(proba: np.ndarray) -> np.ndarray:
    """Entropy divided by its maximum (log k): 1 is uniform."""
    if proba.shape[1] < 2:
        return np.zeros(len(proba))
    p = np.clip(proba, 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=1) / np.log(proba.shape[1])


def product_uncertainty(pool: Pool, measure=margin_uncertainty) -> np.ndarray:
    """Per product, the mean uncertainty over the attributes that apply to it: 0 where none
    applies (nothing to ask), 1 everywhere when nothing is scored yet (with no model, every
    product is as uncertain as any other)."""
    if not pool.proba:
        return np.ones(len(pool))
    total, count = np.zeros(len(pool)), np.zeros(len(pool))
    for attribute, proba in pool.proba.items():
        mask = pool.applying(attribute)
        total[mask] += measure(proba[mask])
        count += mask
    return total / np.maximum(count, 1)


def _check_budget(pool: Pool, budget: int) -> int:
    if budget < 1:
        raise ValueError(f"budget must be at least 1, got {budget}")
    return min(budget, len(pool))


def _ranked(pool: Pool, order: np.ndarray, budget: int) -> np.ndarray:
    """The first ``budget`` rows of ``order`` that are not near-duplicates of a labelled or
    earlier pick (when too few are left, near-duplicates fill the rest)."""
    chosen, kept = [], pool.anchors()
    for row in order:
        if len(chosen) == budget:
            break
        vector = pool.embeddings[row]
        if len(kept) and float((kept @ vector).max()) >= DUPLICATE_COSINE:
            continue
        chosen.append(int(row))
        kept = np.vstack([kept, vector[None]])
    taken = set(chosen)
    rest = [int(r) for r in order if int(r) not in taken]
    return np.asarray(chosen + rest[: budget - len(chosen)], dtype=int)


def _by_score(pool: Pool, scores: np.ndarray, budget: int, rng: np.random.Generator) -> np.ndarray:
    """Highest score first; ties (e.g. no model yet) in random order."""
    shuffled = rng.permutation(len(pool))
    order = shuffled[np.argsort(-scores[shuffled], kind="stable")]
    return _ranked(pool, order, budget)


def select_random(pool: Pool, budget: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(len(pool))[:budget]


def select_margin(pool: Pool, budget: int, rng: np.random.Generator) -> np.ndarray:
    return _by_score(pool, product_uncertainty(pool, margin_uncertainty), budget, rng)


def select_entropy(pool: Pool, budget: int, rng: np.random.Generator) -> np.ndarray:
    return _by_score(pool, product_uncertainty(pool, entropy_uncertainty), budget, rng)


def select_balanced(pool: Pool, budget: int, rng: np.random.Generator) -> np.ndarray:
    """Round robin over (attribute, predicted class) queues, each least confident first."""
    if not pool.proba:
        return select_random(pool, budget, rng)
    queues = []
    for attribute, proba in pool.proba.items():
        uncertainty, predicted = margin_uncertainty(proba), proba.argmax(axis=1)
        for k in range(proba.shape[1]):
            members = np.flatnonzero((predicted == k) & pool.applying(attribute))
            if len(members):
                members = rng.permutation(members)
                queues.append(list(members[np.argsort(-uncertainty[members], kind="stable")]))
    order, seen = [], set()
    for position in range(max(len(q) for q in queues)):
        for queue in rng.permutation(len(queues)):
            if position < len(queues[queue]) and queues[queue][position] not in seen:
                seen.add(queues[queue][position])
                order.append(queues[queue][position])
    order += [r for r in rng.permutation(len(pool)) if r not in seen]
    return _ranked(pool, np.asarray(order, dtype=int), budget)


def _min_sq_distance(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    if len(centres) == 0:
        return np.full(len(points), np.inf)
    d = (points ** 2).sum(1)[:, None] - 2 * points @ centres.T + (centres ** 2).sum(1)[None]
    return np.maximum(d.min(axis=1), 0.0)


def select_coreset(pool: Pool, budget: int, rng: np.random.Generator) -> np.ndarray:
    """k-center greedy: each pick the farthest product from its nearest labelled or picked one."""
    x = pool.embeddings.astype(np.float32)
    distance = _min_sq_distance(x, pool.anchors())
    chosen = []
    for _ in range(budget):
        row = int(rng.integers(len(x))) if not np.isfinite(distance).any() else int(np.argmax(distance))
        chosen.append(row)
        distance = np.minimum(distance, _min_sq_distance(x, x[row : row + 1]))
    return np.asarray(chosen, dtype=int)


def kmeans_pp(x: np.ndarray, weights: np.ndarray, budget: int, rng: np.random.Generator,
              centres: np.ndarray | None = None) -> np.ndarray:
    """k-means++ seeding: each pick drawn with chance proportional to weight x squared distance
    to the nearest centre (the labelled products, then the picks); the first, with no centre,
    proportional to weight."""
    x = x.astype(np.float32)
    distance = _min_sq_distance(x, centres if centres is not None else x[:0])
    chosen = []
    for _ in range(budget):
        chance = weights * (np.ones(len(x)) if not np.isfinite(distance).any() else distance)
        chance[chosen] = 0.0
        if chance.sum() <= 0:  # everything left duplicates a centre: any product not yet chosen
            chance = np.ones(len(x))
            chance[chosen] = 0.0
        row = int(rng.choice(len(x), p=chance / chance.sum()))
        chosen.append(row)
        distance = np.minimum(distance, _min_sq_distance(x, x[row : row + 1]))
    return np.asarray(chosen, dtype=int)


def select_weighted(pool: Pool, budget: int, rng: np.random.Generator) -> np.ndarray:
    weights = product_uncertainty(pool) + 1e-3  # a sure product keeps a small chance: diversity still counts
    return kmeans_pp(pool.embeddings, weights, budget, rng, pool.anchors())


def gradient_embeddings(pool: Pool, x: np.ndarray) -> np.ndarray:
    """BADGE's embedding: per attribute, (p - onehot(argmax p)) outer x (zero where it does not
    apply), the attributes side by side."""
    blocks = []
    for attribute, proba in pool.proba.items():
        g = proba.copy()
        g[np.arange(len(g)), proba.argmax(axis=1)] -= 1.0
        g[~pool.applying(attribute)] = 0.0
        blocks.append((g[:, :, None] * x[:, None, :]).reshape(len(x), -1))
    return np.concatenate(blocks, axis=1) if blocks else x


def select_badge(pool: Pool, budget: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding on gradient embeddings (labelled products are not centres: their
    gradients are unknown without a model of them)."""
    x = pool.embeddings
    dims = min(BADGE_DIMENSIONS, x.shape[1], len(x))
    if dims < x.shape[1]:
        x = PCA(dims, random_state=int(rng.integers(2**31))).fit_transform(x)
    return kmeans_pp(gradient_embeddings(pool, x), np.ones(len(x)), budget, rng)


def typicality(x: np.ndarray, neighbours: int = TYPICAL_NEIGHBOURS) -> np.ndarray:
    """1 / mean distance to the ``neighbours`` nearest others (TypiClust's density)."""
    k = min(neighbours, len(x) - 1)
    if k < 1:
        return np.ones(len(x))
    distance, _ = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    return 1.0 / (distance[:, 1:].mean(axis=1) + 1e-8)


def select_typiclust(pool: Pool, budget: int, rng: np.random.Generator) -> np.ndarray:
    """The most typical product of each of the largest clusters holding no labelled product."""
    x, anchors = pool.embeddings.astype(np.float32), pool.anchors()
    clusters = min(len(x), budget + len(anchors))
    kmeans = KMeans(clusters, n_init=1, random_state=int(rng.integers(2**31))).fit(x)
    covered = set(kmeans.predict(anchors).tolist()) if len(anchors) else set()
    sizes = np.bincount(kmeans.labels_, minlength=clusters)
    chosen = []
    for cluster in np.argsort(-sizes, kind="stable"):
        if len(chosen) == budget:
            break
        members = np.flatnonzero(kmeans.labels_ == cluster)
        if cluster in covered or not len(members):
            continue
        chosen.append(int(members[np.argmax(typicality(x[members]))]))
    taken = set(chosen)
    rest = [int(r) for r in rng.permutation(len(x)) if r not in taken]
    return np.asarray(chosen + rest[: budget - len(chosen)], dtype=int)


STRATEGIES = {"random": select_random, "margin": select_margin, "entropy": select_entropy,
              "balanced": select_balanced, "coreset": select_coreset, "typiclust": select_typiclust,
              "badge": select_badge, "weighted": select_weighted}


def select(strategy: str, pool: Pool, budget: int, seed: int = 0) -> np.ndarray:
    """``budget`` distinct pool rows chosen by ``strategy`` (one of :data:`STRATEGIES`), best first."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    budget = _check_budget(pool, budget)
    chosen = STRATEGIES[strategy](pool, budget, np.random.default_rng(seed))
    assert len(set(chosen.tolist())) == len(chosen) == budget, "a strategy picked a product twice"
    return chosen
