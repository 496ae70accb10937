"""Clustering clients by their discriminator activations: k-means on batch-mean features.

Clients whose data come from the same domain produce similar server-side D activations,
so k-means on the batch-mean flattened activation (one row of C*H*W values per client)
recovers the domains without any client revealing its data. k is given, or chosen by the
silhouette score. Labels are renumbered in order of first appearance, so the same
partition always carries the same ids whatever the seed (k-means numbers its centres
arbitrarily).

The feature matrix is small (K rows), so BLAS runs single-threaded during clustering:
threaded BLAS beside torch's own threads over-subscribes the cores and was several times
slower on a 2-core machine.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, silhouette_score
from threadpoolctl import threadpool_limits
from torch import Tensor

from huscf_lightning.errors import HuSCFError

log = logging.getLogger(__name__)

KMEANS_RESTARTS = 10


class ClusteringError(HuSCFError, ValueError):
    """Features or a cluster count that k-means cannot use; the message names the fix."""


@dataclass(frozen=True)
class ClusterResult:
    """Cluster of every client (canonical ids 0..k-1), k, and the silhouette where defined.

    ``silhouette`` is None when it is undefined (k = 1 or k = K). ``silhouette_by_k`` holds
    the score of every k tried when k was chosen automatically, for logging.
    """

    labels: Tensor
    k: int
    silhouette: float | None
    silhouette_by_k: dict[int, float] = field(default_factory=dict)


def cluster_clients(
    features: Tensor,
    k: int | Literal["auto"],
    seed: int,
    k_range: tuple[int, int] = (2, 8),
) -> ClusterResult:
    """K-means (n_init 10, seeded) of the clients' (K, D) batch-mean flattened activations.

    ``k`` is a cluster count in 1..K, or ``"auto"``: every k in ``k_range`` (inclusive,
    clipped to K - 1) is fitted and the one with the highest silhouette score is kept
    (the smallest k on ties). Returns canonical labels: the first client's cluster is 0, the
    next new cluster 1, and so on. If k-means finds fewer distinct clusters than asked (for
    example identical features), ``k`` in the result is the number found, with a warning.
    """
    points = _check_features(features)
    num_clients = points.shape[0]
    if k == "auto":
        return _cluster_auto(points, seed, k_range)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ClusteringError(
            f"k must be a whole number of clusters or 'auto'; got {k!r}. Set k to e.g. the number of "
            "domains, or to 'auto' to choose it by silhouette score."
        )
    if not 1 <= k <= num_clients:
        raise ClusteringError(
            f"Cannot make k = {k} clusters from {num_clients} clients: k must lie in 1..{num_clients}. "
            f"Lower k to at most {num_clients} (e.g. the number of domains), add clients, or use k: auto."
        )
    with threadpool_limits(limits=1, user_api="blas"):
        labels = _kmeans_labels(points, int(k), seed)
        silhouette = _silhouette(points, labels)
    return ClusterResult(labels=labels, k=_found_count(labels, int(k)), silhouette=silhouette)


def canonical_labels(labels: Tensor | Sequence[int] | np.ndarray) -> Tensor:
    """Renumber cluster ids 0, 1, ... in order of first appearance: (K,) long tensor."""
    values = np.asarray(torch.as_tensor(labels).cpu())
    if values.ndim != 1:
        raise ClusteringError(f"labels must be 1-D, one per client; got shape {values.shape}.")
    _, first_index, inverse = np.unique(values, return_index=True, return_inverse=True)
    rank_by_first_appearance = np.argsort(np.argsort(first_index))
    return torch.as_tensor(rank_by_first_appearance[inverse.reshape(-1)], dtype=torch.long)


def adjusted_rand(labels: Tensor | Sequence[int], true_groups: Tensor | Sequence[int]) -> float:
    """Adjusted Rand index of the clusters against the true groups (1.0: the same partition)."""
    found = np.asarray(torch.as_tensor(labels).cpu())
    truth = np.asarray(torch.as_tensor(true_groups).cpu())
    if found.ndim != 1 or found.shape != truth.shape:
        raise ClusteringError(
            f"labels and true_groups must be 1-D with one entry per client each; got shapes {found.shape} "
            f"and {truth.shape}. Pass the cluster of every client and its true domain, in the same order."
        )
    return float(adjusted_rand_score(truth, found))


def _cluster_auto(points: np.ndarray, seed: int, k_range: tuple[int, int]) -> ClusterResult:
    """Fit every k of the range and keep the best silhouette."""
    num_clients = points.shape[0]
    low, high = _check_k_range(k_range)
    candidates = range(low, min(high, num_clients - 1) + 1)
    if len(candidates) == 0:
        raise ClusteringError(
            f"k: auto compares silhouette scores, which need 2 <= k <= K - 1; with {num_clients} clients and "
            f"k_range {k_range} there is no k to try. Give k explicitly, or use at least {low + 1} clients."
        )
    with threadpool_limits(limits=1, user_api="blas"):
        fits = {k: _kmeans_labels(points, k, seed) for k in candidates}
        scores = {k: score for k, labels in fits.items() if (score := _silhouette(points, labels)) is not None}
    if not scores:
        raise ClusteringError(
            f"k: auto found no k in {list(candidates)} giving at least two distinct clusters; the clients' "
            "features are (nearly) identical. Give k explicitly."
        )
    best_k = max(scores, key=lambda k: (scores[k], -k))
    log.info(
        "k: auto chose k = %d (silhouette %.4f) among %s",
        best_k,
        scores[best_k],
        {k: round(s, 4) for k, s in scores.items()},
    )
    return ClusterResult(labels=fits[best_k], k=best_k, silhouette=scores[best_k], silhouette_by_k=scores)


def _kmeans_labels(points: np.ndarray, k: int, seed: int) -> Tensor:
    """Canonical k-means labels of the points."""
    labels = KMeans(n_clusters=k, n_init=KMEANS_RESTARTS, random_state=seed).fit_predict(points)
    return canonical_labels(labels)


def _found_count(labels: Tensor, asked: int) -> int:
    """Number of distinct clusters, warning when k-means found fewer than asked."""
    found = int(labels.max()) + 1
    if found < asked:
        log.warning(
            "k-means found only %d distinct clusters of the %d asked (some clients have identical features).",
            found,
            asked,
        )
    return found


def _silhouette(points: np.ndarray, labels: Tensor) -> float | None:
    """Silhouette score, or None where it is undefined (fewer than 2 or as many clusters as points)."""
    distinct = int(labels.max()) + 1
    if not 2 <= distinct <= points.shape[0] - 1:
        return None
    return float(silhouette_score(points, labels.numpy()))


def _check_k_range(k_range: tuple[int, int]) -> tuple[int, int]:
    """(low, high) with 2 <= low <= high."""
    if (
        len(k_range) != 2
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in k_range)
        or not 2 <= k_range[0] <= k_range[1]
    ):
        raise ClusteringError(
            f"k_range must be two whole numbers (low, high) with 2 <= low <= high; got {k_range!r}. "
            "The default (2, 8) tries 2 to 8 clusters."
        )
    return int(k_range[0]), int(k_range[1])


def _check_features(features: Tensor) -> np.ndarray:
    """Features as a finite float64 (K, D) array."""
    if not torch.is_tensor(features) or features.dim() != 2 or features.shape[0] == 0:
        shape = tuple(features.shape) if torch.is_tensor(features) else type(features).__name__
        raise ClusteringError(
            f"Clustering needs features of shape (K, D): one flattened batch-mean activation per client; "
            f"got {shape}. Flatten each client's activation (features.flatten(1)) and stack the clients."
        )
    points = features.detach().to(device="cpu", dtype=torch.float64).numpy()
    if not np.isfinite(points).all():
        raise ClusteringError(
            "Clustering features contain NaN or infinite values; the discriminator activations diverged. "
            "Check the learning rate or the run's losses before clustering."
        )
    return points
