"""KLD scores against hand computations: the formula, its direction, groups of one, log space."""

from math import log

import pytest
import torch

from huscf_lightning.federation.kld import (
    KLDError,
    feature_kld_scores,
    kld_scores,
    spatial_log_softmax,
    spatial_softmax,
)

# Four clients, C = 2 channels, L = 3 positions. Clients 0, 1, 2 form group 0; client 3 is alone.
PROBS = torch.tensor(
    [
        [[0.50, 0.25, 0.25], [0.2, 0.3, 0.5]],
        [[0.25, 0.50, 0.25], [0.4, 0.4, 0.2]],
        [[0.25, 0.25, 0.50], [0.2, 0.5, 0.3]],
        [[0.10, 0.20, 0.70], [0.6, 0.2, 0.2]],
    ],
    dtype=torch.float64,
)
GROUPS = torch.tensor([0, 0, 0, 1])

# Q_i = mean of the other two members, per channel (worked out by hand):
#   Q_0 = [.25, .375, .375], [.3, .45, .25]
#   Q_1 = [.375, .25, .375], [.2, .4, .4]
#   Q_2 = [.375, .375, .25], [.3, .35, .35]
# s_i = 1/2 * (KL(Q_i,0 || P_i,0) + KL(Q_i,1 || P_i,1))
HAND_SCORES = [
    0.5
    * (
        0.25 * log(0.25 / 0.5) + 0.375 * log(0.375 / 0.25) + 0.375 * log(0.375 / 0.25)
        + 0.3 * log(0.3 / 0.2) + 0.45 * log(0.45 / 0.3) + 0.25 * log(0.25 / 0.5)
    ),
    0.5
    * (
        0.375 * log(0.375 / 0.25) + 0.25 * log(0.25 / 0.5) + 0.375 * log(0.375 / 0.25)
        + 0.2 * log(0.2 / 0.4) + 0.4 * log(0.4 / 0.4) + 0.4 * log(0.4 / 0.2)
    ),
    0.5
    * (
        0.375 * log(0.375 / 0.25) + 0.375 * log(0.375 / 0.25) + 0.25 * log(0.25 / 0.5)
        + 0.3 * log(0.3 / 0.2) + 0.35 * log(0.35 / 0.5) + 0.35 * log(0.35 / 0.3)
    ),
    0.0,
]


def test_scores_equal_hand_computation():
    scores = kld_scores(PROBS, GROUPS)
    assert scores.dtype == torch.float64
    assert scores.tolist() == pytest.approx(HAND_SCORES, abs=1e-12)
    # The same numbers from a calculator, so a wrong hand formula cannot hide.
    assert scores.tolist() == pytest.approx([0.1308120, 0.1347207, 0.0907840, 0.0], abs=1e-7)


def test_direction_is_kl_of_others_against_own():
    # Swapped direction for client 0: 1/2 * (KL(P_0,0 || Q_0,0) + KL(P_0,1 || Q_0,1)).
    swapped = 0.5 * (
        0.5 * log(0.5 / 0.25) + 0.25 * log(0.25 / 0.375) + 0.25 * log(0.25 / 0.375)
        + 0.2 * log(0.2 / 0.3) + 0.3 * log(0.3 / 0.45) + 0.5 * log(0.5 / 0.25)
    )
    assert swapped == pytest.approx(0.1438410, abs=1e-7)
    score = kld_scores(PROBS, GROUPS)[0].item()
    assert score == pytest.approx(HAND_SCORES[0], abs=1e-12)
    assert abs(score - swapped) > 1e-2


def test_client_alone_in_group_scores_zero_and_ids_need_not_be_contiguous():
    assert kld_scores(PROBS, GROUPS)[3].item() == 0.0
    relabelled = kld_scores(PROBS, torch.tensor([5, 5, 5, -2]))
    assert torch.equal(relabelled, kld_scores(PROBS, GROUPS))
    everyone_alone = kld_scores(PROBS, torch.arange(4))
    assert torch.equal(everyone_alone, torch.zeros(4, dtype=torch.float64))


def test_scores_match_a_per_client_reference_loop():
    generator = torch.Generator().manual_seed(0)
    probs = torch.rand(9, 4, 6, generator=generator, dtype=torch.float64).softmax(dim=-1)
    groups = torch.tensor([2, 0, 2, 1, 0, 2, 0, 3, 2])
    expected = []
    for i in range(9):
        others = [j for j in range(9) if groups[j] == groups[i] and j != i]
        if not others:
            expected.append(0.0)
            continue
        q = probs[others].mean(dim=0)
        expected.append((q * (q.log() - probs[i].log())).sum(dim=-1).mean().item())
    assert kld_scores(probs, groups).tolist() == pytest.approx(expected, abs=1e-12)


def test_spatial_softmax_is_per_channel_over_positions():
    features = torch.arange(24, dtype=torch.float64).reshape(2, 3, 2, 2) / 7
    probs = spatial_softmax(features)
    assert probs.shape == (2, 3, 4)
    flat = features.reshape(2, 3, 4)
    expected = flat.exp() / flat.exp().sum(dim=-1, keepdim=True)
    torch.testing.assert_close(probs, expected)
    torch.testing.assert_close(spatial_softmax(flat), expected)
    torch.testing.assert_close(spatial_log_softmax(features).exp(), expected)


def test_feature_scores_equal_probability_scores():
    features = torch.randn(6, 3, 2, 2, generator=torch.Generator().manual_seed(1))
    groups = torch.tensor([0, 1, 0, 1, 1, 0])
    torch.testing.assert_close(
        feature_kld_scores(features, groups), kld_scores(spatial_softmax(features.double()), groups)
    )


def test_feature_scores_stay_finite_where_softmax_underflows():
    # Client 0: logits [0, -1000] -> log P = [0, -1000] while P = [1, 0] in floating point.
    # Client 1: logits [0, 0] -> P = [.5, .5]. One channel, both in one group.
    features = torch.tensor([[[0.0, -1000.0]], [[0.0, 0.0]]], dtype=torch.float64)
    groups = torch.tensor([0, 0])
    # s_0 = KL([.5, .5] || P_0) = .5 (log .5 - 0) + .5 (log .5 + 1000) = 500 - log 2
    # s_1 = KL([1, 0] || [.5, .5]) = log 2
    assert feature_kld_scores(features, groups).tolist() == pytest.approx([500 - log(2), log(2)], abs=1e-9)
    with pytest.raises(KLDError, match="feature_kld_scores"):
        kld_scores(spatial_softmax(features), groups)


def test_bad_input_is_a_clear_error():
    with pytest.raises(KLDError, match="sum to 1"):
        kld_scores(PROBS * 2, GROUPS)
    with pytest.raises(KLDError, match="one group id per client"):
        kld_scores(PROBS, torch.tensor([0, 0, 1]))
    with pytest.raises(KLDError, match="integer"):
        kld_scores(PROBS, GROUPS.float())
    with pytest.raises(KLDError, match=r"\(K, C, L\)"):
        kld_scores(PROBS[0], GROUPS)
    with pytest.raises(KLDError, match=r"\(K, C, H, W\)"):
        spatial_softmax(torch.ones(4, 5))
    with pytest.raises(KLDError, match="floating-point"):
        feature_kld_scores(torch.ones(4, 2, 3, dtype=torch.long), GROUPS)
