"""K-means of client features: recovers well-separated groups, picks k, canonical ids, errors."""

import logging

import pytest
import torch

from huscf_lightning.federation.clustering import (
    ClusteringError,
    adjusted_rand,
    canonical_labels,
    cluster_clients,
)


def blobs(true_groups: list[int], seed: int, dim: int = 64) -> torch.Tensor:
    """One feature row per client around its group's centre: centres ~ N(0, 25), noise ~ N(0, 1)."""
    generator = torch.Generator().manual_seed(seed)
    num_groups = max(true_groups) + 1
    centres = 5.0 * torch.randn(num_groups, dim, generator=generator)
    noise = torch.randn(len(true_groups), dim, generator=generator)
    return centres[torch.tensor(true_groups)] + noise


TWO_GROUPS = [1, 0, 0, 1, 1, 0, 1, 0]
THREE_GROUPS = [2, 2, 0, 1, 0, 2, 1, 1, 0, 2, 1, 0]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("true_groups", [TWO_GROUPS, THREE_GROUPS], ids=["two", "three"])
def test_recovers_well_separated_groups(true_groups, seed):
    k = max(true_groups) + 1
    result = cluster_clients(blobs(true_groups, seed), k=k, seed=seed)
    assert adjusted_rand(result.labels, true_groups) == 1.0
    # Canonical ids: the same partition gets the ids of its first appearance, whatever the seed.
    assert torch.equal(result.labels, canonical_labels(true_groups))
    assert result.labels.dtype == torch.long
    assert result.k == k
    assert result.silhouette is not None and result.silhouette > 0.5


def test_labels_do_not_depend_on_the_kmeans_seed():
    features = blobs(THREE_GROUPS, seed=3)
    runs = [cluster_clients(features, k=3, seed=seed).labels for seed in (0, 1, 7, 123)]
    assert all(torch.equal(labels, runs[0]) for labels in runs)
    assert runs[0].tolist() == [0, 0, 1, 2, 1, 0, 2, 2, 1, 0, 2, 1]


@pytest.mark.parametrize("seed", range(3))
def test_auto_finds_three_blobs(seed, caplog):
    with caplog.at_level(logging.INFO, logger="huscf_lightning.federation.clustering"):
        result = cluster_clients(blobs(THREE_GROUPS, seed), k="auto", seed=seed)
    assert result.k == 3
    assert adjusted_rand(result.labels, THREE_GROUPS) == 1.0
    assert sorted(result.silhouette_by_k) == [2, 3, 4, 5, 6, 7, 8]
    assert result.silhouette == max(result.silhouette_by_k.values()) == result.silhouette_by_k[3]
    assert "k: auto chose k = 3" in caplog.text


def test_auto_clips_the_range_to_k_minus_one_and_finds_two_blobs():
    result = cluster_clients(blobs(TWO_GROUPS, seed=0)[:5], k="auto", seed=0)
    assert sorted(result.silhouette_by_k) == [2, 3, 4]
    assert result.k == 2
    assert adjusted_rand(result.labels, TWO_GROUPS[:5]) == 1.0


def test_silhouette_undefined_for_one_or_all_clusters():
    features = blobs(TWO_GROUPS, seed=0)
    one = cluster_clients(features, k=1, seed=0)
    assert one.silhouette is None and one.labels.tolist() == [0] * 8
    each_alone = cluster_clients(features, k=8, seed=0)
    assert each_alone.silhouette is None and each_alone.labels.tolist() == list(range(8))


def test_canonical_labels_and_adjusted_rand():
    assert canonical_labels([4, 4, 1, 7, 1, 4]).tolist() == [0, 0, 1, 2, 1, 0]
    assert adjusted_rand([2, 2, 0, 0], [0, 0, 1, 1]) == 1.0
    # Pairs together in both: 0; in each labelling: 2; expected 2 * 2 / C(4, 2) = 2/3;
    # ARI = (0 - 2/3) / ((2 + 2) / 2 - 2/3) = -0.5.
    assert adjusted_rand([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(-0.5)


def test_bad_input_is_a_clear_error():
    features = blobs(THREE_GROUPS, seed=0)
    with pytest.raises(ClusteringError, match=r"k = 13 clusters from 12 clients.*Lower k to at most 12"):
        cluster_clients(features, k=13, seed=0)
    with pytest.raises(ClusteringError, match="1..12"):
        cluster_clients(features, k=0, seed=0)
    for bad_k in ("three", 2.5, True):
        with pytest.raises(ClusteringError, match="'auto'"):
            cluster_clients(features, k=bad_k, seed=0)
    with pytest.raises(ClusteringError, match="Give k explicitly"):
        cluster_clients(features[:2], k="auto", seed=0)
    with pytest.raises(ClusteringError, match="k_range"):
        cluster_clients(features, k="auto", seed=0, k_range=(1, 5))
    with pytest.raises(ClusteringError, match=r"\(K, D\)"):
        cluster_clients(features.reshape(12, 8, 8), k=3, seed=0)
    with pytest.raises(ClusteringError, match="NaN"):
        cluster_clients(torch.full((4, 3), float("nan")), k=2, seed=0)
    with pytest.raises(ClusteringError, match="same order"):
        adjusted_rand([0, 1, 1], [0, 1])
