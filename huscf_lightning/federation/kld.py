"""KLD scores: how far each client's server-side D activations sit from the rest of its group.

At the end of a round every client i has A_i, the batch-mean server-side discriminator
activation of its real batch, seen as C channels over L spatial positions. Per channel it
becomes a distribution over positions, P_i,c = softmax(A_i,c). For a group S of clients
(a cluster, or all clients):

    Q_i,c = mean of P_j,c over j in S, j != i
    s_i   = (1/C) * sum_c KL(Q_i,c || P_i,c),   KL(q || p) = sum_l q_l log(q_l / p_l)

This direction and the 1/C are what the method's reference computes. A client alone in its
group has no others to compare with and scores 0. The scores feed the aggregation weights
(`weights.group_weights`): a client far from its group counts less.
"""

from __future__ import annotations

import torch
from torch import Tensor

from huscf_lightning.errors import HuSCFError


class KLDError(HuSCFError, ValueError):
    """Activations, probabilities or groups that cannot be scored; the message names the fix."""


def spatial_softmax(features: Tensor) -> Tensor:
    """Per-channel distribution over spatial positions: (K, C, H, W) or (K, C, L) -> (K, C, L)."""
    return _channels_by_positions(features).softmax(dim=-1)


def spatial_log_softmax(features: Tensor) -> Tensor:
    """Log of `spatial_softmax`, computed directly so no position underflows to log(0)."""
    return _channels_by_positions(features).log_softmax(dim=-1)


def kld_scores(probs: Tensor, groups: Tensor) -> Tensor:
    """Score s_i = (1/C) sum_c KL(Q_i,c || P_i,c) of every client against the others of its group.

    ``probs`` is (K, C, L), each (client, channel) row a distribution over the L positions
    (as `spatial_softmax` returns), strictly positive so log P is finite. ``groups`` is (K,)
    integer: clients with the same id form a group (ids need not be contiguous). All clients
    are scored at once, Q for all of them as one (K, K) x (K, C*L) matrix product. Returns
    (K,) float64; 0 for a client alone in its group.
    """
    _check_probs(probs)
    probs = probs.to(torch.float64)
    return _scores(probs, probs.log(), groups)


def feature_kld_scores(features: Tensor, groups: Tensor) -> Tensor:
    """`kld_scores` straight from activations (K, C, H, W) or (K, C, L), in log space.

    log P comes from log-softmax in float64, so the scores stay finite even where a
    softmax in probability space would underflow to 0 at some position.
    """
    if not torch.is_tensor(features) or not features.is_floating_point():
        raise KLDError(
            "KLD scores need floating-point activations of shape (K, C, H, W) or (K, C, L); "
            f"got {_describe(features)}. Pass the batch-mean server-side D activations as a float tensor."
        )
    log_probs = spatial_log_softmax(features.to(torch.float64))
    return _scores(log_probs.exp(), log_probs, groups)


def _scores(probs: Tensor, log_probs: Tensor, groups: Tensor) -> Tensor:
    """Vectorised scores from float64 P and log P (K, C, L).

    Q for every client is one matrix product: row i of the (K, K) matrix holds 1/(|S_i| - 1)
    for the other members of i's group and 0 elsewhere (itself included), so no subtraction
    of the client's own P is needed and nothing cancels.
    """
    num_clients = probs.shape[0]
    group_ids = _check_groups(groups, num_clients).to(probs.device)
    others = (group_ids.unsqueeze(0) == group_ids.unsqueeze(1)).to(probs.dtype)
    others.fill_diagonal_(0.0)
    others_count = others.sum(dim=1)
    q = ((others / others_count.clamp_min(1.0).unsqueeze(1)) @ probs.flatten(start_dim=1)).view_as(probs)
    kl_per_channel = (torch.xlogy(q, q) - q * log_probs).sum(dim=-1)
    scores = kl_per_channel.mean(dim=-1)
    return torch.where(others_count > 0, scores, torch.zeros_like(scores))


def _channels_by_positions(features: Tensor) -> Tensor:
    """View activations as (K, C, L), flattening the spatial axes."""
    if not torch.is_tensor(features) or features.dim() not in (3, 4):
        raise KLDError(
            "Spatial softmax needs activations of shape (K, C, H, W) or (K, C, L) (clients, channels, "
            f"positions); got {_describe(features)}. Take the batch mean of each client's activation "
            "and stack the clients on the first axis."
        )
    return features.flatten(start_dim=2)


def is_group_ids(groups: object, num_clients: int) -> bool:
    """Whether ``groups`` is a 1-D integer (not bool) tensor holding one group id per client."""
    return (
        torch.is_tensor(groups)
        and groups.shape == (num_clients,)
        and not (groups.is_floating_point() or groups.is_complex() or groups.dtype == torch.bool)
    )


def _check_groups(groups: Tensor, num_clients: int) -> Tensor:
    """Raise unless ``groups`` is a 1-D integer tensor with one id per client; return it."""
    if not is_group_ids(groups, num_clients):
        raise KLDError(
            f"groups must be a 1-D integer tensor with one group id per client ({num_clients} clients); "
            f"got {_describe(groups)}. Pass e.g. the cluster labels, or torch.zeros({num_clients}, "
            "dtype=torch.long) to score against all clients."
        )
    return groups


def _check_probs(probs: Tensor) -> None:
    """Raise unless ``probs`` is (K, C, L) of strictly positive distributions over L."""
    if not torch.is_tensor(probs) or probs.dim() != 3 or not probs.is_floating_point():
        raise KLDError(
            "kld_scores needs probabilities of shape (K, C, L) as spatial_softmax returns; got "
            f"{_describe(probs)}. Call spatial_softmax on the activations first, or use feature_kld_scores."
        )
    if not bool(torch.isfinite(probs).all()) or bool((probs <= 0).any()):
        raise KLDError(
            "kld_scores needs strictly positive, finite probabilities (KL(Q || P) is infinite where P is 0); "
            "some are 0, negative or not finite. If a softmax underflowed, use feature_kld_scores, which "
            "works in log space from the activations."
        )
    row_sums = probs.sum(dim=-1, dtype=torch.float64)
    if not torch.allclose(row_sums, torch.ones_like(row_sums), atol=1e-4, rtol=0.0):
        raise KLDError(
            "kld_scores needs each (client, channel) row to sum to 1 over the positions; the sums range "
            f"from {row_sums.min().item():.6g} to {row_sums.max().item():.6g}. Pass spatial_softmax(features), "
            "not the raw activations."
        )


def _describe(value: object) -> str:
    """Short description of a bad argument for error messages."""
    if torch.is_tensor(value):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"
