"""Aggregation weights against hand computations, for each mode, with stability and bad input."""

import json
from math import exp, log

import pytest
import torch

from huscf_lightning.federation.weights import (
    AggregationWeights,
    WeightsError,
    clustered_aggregation,
    fedavg_aggregation,
    fedavg_weights,
    group_weights,
    kld_clustered_aggregation,
    size_weights,
)

SIZES = torch.tensor([100, 200, 300, 50])
CLUSTERS = torch.tensor([0, 0, 0, 1])

# Same four clients as tests/test_kld.py: (client, channel, position) distributions.
PROBS = [
    [[0.50, 0.25, 0.25], [0.2, 0.3, 0.5]],
    [[0.25, 0.50, 0.25], [0.4, 0.4, 0.2]],
    [[0.25, 0.25, 0.50], [0.2, 0.5, 0.3]],
    [[0.10, 0.20, 0.70], [0.6, 0.2, 0.2]],
]


def kl(q: list[float], p: list[float]) -> float:
    return sum(a * log(a / b) for a, b in zip(q, p))


def score(q_channels: list[list[float]], client: int) -> float:
    """1/C sum_c KL(Q_c || P_client,c) with Q written out by hand."""
    return sum(kl(q, p) for q, p in zip(q_channels, PROBS[client])) / len(q_channels)


def test_group_weights_equal_hand_computation():
    scores = torch.tensor([0.5, 1.0, 0.0, 2.0])
    weights = group_weights(SIZES, scores, CLUSTERS, alpha=1.0)
    row0 = [100 * exp(-0.5), 200 * exp(-1.0), 300 * exp(0.0)]
    total = sum(row0)
    expected = [[row0[0] / total, row0[1] / total, row0[2] / total, 0.0], [0.0, 0.0, 0.0, 1.0]]
    assert weights.dtype == torch.float64
    torch.testing.assert_close(weights, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)

    sharper = group_weights(SIZES, scores, CLUSTERS, alpha=2.0)
    row0 = [100 * exp(-1.0), 200 * exp(-2.0), 300 * exp(0.0)]
    total = sum(row0)
    assert sharper[0, :3].tolist() == pytest.approx([w / total for w in row0], abs=1e-12)


def test_alpha_zero_and_zero_scores_are_size_weights():
    expected = torch.tensor([[100 / 600, 200 / 600, 300 / 600, 0.0], [0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(size_weights(SIZES, CLUSTERS), expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(
        group_weights(SIZES, torch.tensor([3.0, 1.0, 2.0, 9.0]), CLUSTERS, alpha=0.0), expected, rtol=0, atol=1e-12
    )
    torch.testing.assert_close(
        fedavg_weights(SIZES),
        torch.tensor([[100 / 650, 200 / 650, 300 / 650, 50 / 650]], dtype=torch.float64),
        rtol=0,
        atol=1e-12,
    )


def test_rows_sum_to_one_and_are_zero_outside_the_group():
    generator = torch.Generator().manual_seed(0)
    sizes = torch.randint(1, 1000, (20,), generator=generator)
    scores = torch.rand(20, generator=generator, dtype=torch.float64) * 5
    groups = torch.arange(20) % 4
    weights = group_weights(sizes, scores, groups, alpha=1.5)
    assert weights.shape == (4, 20)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(4, dtype=torch.float64))
    outside = groups.unsqueeze(0) != torch.arange(4).unsqueeze(1)
    assert bool((weights[outside] == 0).all())
    assert bool((weights[~outside] > 0).all())


def test_large_scores_and_sizes_stay_finite():
    # exp(-1000) underflows to 0 in float64, so a naive n exp(-s) / sum would give 0 / 0.
    weights = group_weights(torch.tensor([1.0, 1.0]), torch.tensor([1000.0, 1001.0]), torch.tensor([0, 0]))
    assert weights[0].tolist() == pytest.approx([1 / (1 + exp(-1)), exp(-1) / (1 + exp(-1))], abs=1e-12)
    huge = group_weights(torch.tensor([1e300, 3e300], dtype=torch.float64), torch.zeros(2), torch.tensor([0, 0]))
    assert huge[0].tolist() == pytest.approx([0.25, 0.75], abs=1e-12)


def test_num_groups_fixes_the_row_count():
    weights = group_weights(SIZES, torch.zeros(4), torch.tensor([1, 1, 0, 2]), num_groups=3)
    assert weights.shape == (3, 4)
    assert weights[0].tolist() == [0.0, 0.0, 1.0, 0.0]


def test_build_fedavg():
    bundle = fedavg_aggregation(SIZES)
    fedavg = torch.tensor([[100 / 650, 200 / 650, 300 / 650, 50 / 650]], dtype=torch.float64)
    assert bundle.client_groups.tolist() == [0, 0, 0, 0]
    torch.testing.assert_close(bundle.client_matrix, fedavg, rtol=0, atol=1e-12)
    torch.testing.assert_close(bundle.server_matrix, fedavg, rtol=0, atol=1e-12)
    assert (bundle.num_clients, bundle.num_groups) == (4, 1)


def test_build_clustered():
    bundle = clustered_aggregation(SIZES, CLUSTERS)
    assert bundle.client_groups.tolist() == [0, 0, 0, 1]
    torch.testing.assert_close(
        bundle.client_matrix,
        torch.tensor([[100 / 600, 200 / 600, 300 / 600, 0.0], [0.0, 0.0, 0.0, 1.0]], dtype=torch.float64),
    )
    torch.testing.assert_close(
        bundle.server_matrix,
        torch.tensor([[100 / 650, 200 / 650, 300 / 650, 50 / 650]], dtype=torch.float64),
    )


def test_build_kld_clustered():
    # log P as activations: the spatial softmax gives back P exactly.
    features = torch.tensor(PROBS, dtype=torch.float64).log()
    bundle = kld_clustered_aggregation(SIZES, features, CLUSTERS, alpha=1.0)

    # In-cluster scores (cluster {0, 1, 2}: Q = mean of the other two; client 3 alone scores 0).
    cluster_scores = [
        score([[0.25, 0.375, 0.375], [0.3, 0.45, 0.25]], 0),
        score([[0.375, 0.25, 0.375], [0.2, 0.4, 0.4]], 1),
        score([[0.375, 0.375, 0.25], [0.3, 0.35, 0.35]], 2),
    ]
    row0 = [n * exp(-s) for n, s in zip([100, 200, 300], cluster_scores)]
    expected_clients = [[w / sum(row0) for w in row0] + [0.0], [0.0, 0.0, 0.0, 1.0]]
    torch.testing.assert_close(
        bundle.client_matrix, torch.tensor(expected_clients, dtype=torch.float64), rtol=0, atol=1e-12
    )
    assert bundle.client_matrix[0, :3].tolist() == pytest.approx([0.16354, 0.32580, 0.51066], abs=1e-5)

    # Global scores (all four clients: Q = mean of the other three).
    global_scores = [
        score([[0.6 / 3, 0.95 / 3, 1.45 / 3], [1.2 / 3, 1.1 / 3, 0.7 / 3]], 0),
        score([[0.85 / 3, 0.7 / 3, 1.45 / 3], [1.0 / 3, 1.0 / 3, 1.0 / 3]], 1),
        score([[0.85 / 3, 0.95 / 3, 1.2 / 3], [1.2 / 3, 0.9 / 3, 0.9 / 3]], 2),
        score([[1.0 / 3, 1.0 / 3, 1.0 / 3], [0.8 / 3, 1.2 / 3, 1.0 / 3]], 3),
    ]
    server = [n * exp(-s) for n, s in zip([100, 200, 300, 50], global_scores)]
    torch.testing.assert_close(
        bundle.server_matrix,
        torch.tensor([[w / sum(server) for w in server]], dtype=torch.float64),
        rtol=0,
        atol=1e-12,
    )
    assert bundle.server_matrix[0].tolist() == pytest.approx([0.14280, 0.30912, 0.48258, 0.06551], abs=1e-5)
    record = json.loads(json.dumps(bundle.as_dict()))
    assert record["client_groups"] == [0, 0, 0, 1]
    assert record["cluster_scores"] == pytest.approx([*cluster_scores, 0.0], abs=1e-12)  # the scores behind the weights
    assert record["global_scores"] == pytest.approx(global_scores, abs=1e-12)


def test_bad_input_is_a_clear_error():
    with pytest.raises(WeightsError, match="one group id per client"):
        clustered_aggregation(SIZES, torch.tensor([0, 1]))
    with pytest.raises(WeightsError, match="4 clients, in the order of sizes"):
        kld_clustered_aggregation(SIZES, torch.zeros(3, 2, 3), CLUSTERS)
    with pytest.raises(WeightsError, match="> 0"):
        fedavg_weights(torch.tensor([10, 0, 5]))
    with pytest.raises(WeightsError, match="alpha"):
        group_weights(SIZES, torch.zeros(4), CLUSTERS, alpha=-1.0)
    with pytest.raises(WeightsError, match=r"groups \[1\] of 0..2 have no client"):
        group_weights(SIZES, torch.zeros(4), torch.tensor([0, 0, 2, 2]))
    with pytest.raises(WeightsError, match="one group id per client"):
        group_weights(SIZES, torch.zeros(4), torch.tensor([0, 1]))
    with pytest.raises(WeightsError, match="one score per client"):
        group_weights(SIZES, torch.zeros(3), CLUSTERS)
    with pytest.raises(WeightsError, match="finite"):
        group_weights(SIZES, torch.tensor([0.0, float("nan"), 0.0, 0.0]), CLUSTERS)
    with pytest.raises(WeightsError, match="same K"):
        AggregationWeights(CLUSTERS, torch.ones(2, 3) / 3, torch.ones(1, 4) / 4)
