"""Aggregation weights: who is averaged with whom, and how much each client counts.

A weights matrix is (G, K): row g holds the weights of the K clients when averaging for
group g, zero for clients outside g, each row summing to 1. Within a group,

    w_i = n_i exp(-alpha s_i) / sum_{j in g} n_j exp(-alpha s_j)

with n_i the client's dataset size and s_i its KLD score (`kld.feature_kld_scores`); with
all scores 0 this is plain size weighting. `fedavg_aggregation`, `clustered_aggregation` and
`kld_clustered_aggregation` give the client matrix (each cluster's average) and the server matrix
(the one all-client average that the server's shared blocks load) of one aggregation; the
federation strategies (`federation.strategy`) choose between them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from huscf_lightning.errors import HuSCFError
from huscf_lightning.federation.kld import feature_kld_scores, is_group_ids


class WeightsError(HuSCFError, ValueError):
    """Sizes, scores, groups or a mode that give no valid weights; the message names the fix."""


def group_weights(
    sizes: Tensor,
    scores: Tensor,
    groups: Tensor,
    alpha: float = 1.0,
    num_groups: int | None = None,
) -> Tensor:
    """(G, K) float64 matrix, row g: n_i exp(-alpha s_i) normalised over the members of group g.

    ``groups`` holds each client's group id in 0..G-1 (G = ``num_groups``, default the largest
    id + 1); every group needs at least one member. Computed as a softmax of
    log n_i - alpha s_i over each row's members (log-sum-exp), so large scores or sizes
    neither overflow nor underflow to an all-zero row. A group of one gets weight 1.
    """
    sizes = _check_sizes(sizes)
    num_clients = sizes.numel()
    scores = _check_scores(scores, num_clients).to(sizes.device)
    if not math.isfinite(alpha) or alpha < 0:
        raise WeightsError(
            f"alpha must be a finite number >= 0 (how strongly a KLD score lowers a client's weight); "
            f"got {alpha}. Use the method's default alpha = 1, or 0 for plain size weights."
        )
    groups, row_count = _check_groups(groups, num_clients, num_groups)
    groups = groups.to(sizes.device)
    logits = sizes.log() - alpha * scores
    member = groups.unsqueeze(0) == torch.arange(row_count, device=sizes.device).unsqueeze(1)
    return torch.where(member, logits, torch.full_like(logits, -math.inf)).softmax(dim=1)


def size_weights(sizes: Tensor, groups: Tensor, num_groups: int | None = None) -> Tensor:
    """(G, K) float64 matrix, row g: n_i / sum of n_j over the members of group g (no KLD)."""
    sizes = _check_sizes(sizes)
    return group_weights(sizes, torch.zeros_like(sizes), groups, alpha=0.0, num_groups=num_groups)


def fedavg_weights(sizes: Tensor) -> Tensor:
    """(1, K) float64 matrix of FedAvg weights n_i / sum_j n_j over all clients."""
    sizes = _check_sizes(sizes)
    return (sizes / sizes.sum()).unsqueeze(0)


@dataclass(frozen=True)
class AggregationWeights:
    """The weights of one aggregation: group of every client, per-group and server matrices.

    ``client_groups`` (K,) long: the group whose average client i loads into its own blocks.
    ``client_matrix`` (G, K): row g averages the copies the members of group g use.
    ``server_matrix`` (1, K): averages all clients' copies for the server's shared blocks.
    ``cluster_scores``/``global_scores`` (K,): the KLD scores the weights came from (kld_clustered only),
    kept so a run can log why a client weighed what it did.
    """

    client_groups: Tensor
    client_matrix: Tensor
    server_matrix: Tensor
    cluster_scores: Tensor | None = None
    global_scores: Tensor | None = None

    def __post_init__(self) -> None:
        num_clients = self.client_groups.numel()
        if (
            self.client_groups.dim() != 1
            or self.client_matrix.dim() != 2
            or self.client_matrix.shape[1] != num_clients
            or tuple(self.server_matrix.shape) != (1, num_clients)
        ):
            raise WeightsError(
                "AggregationWeights needs client_groups (K,), client_matrix (G, K) and server_matrix (1, K) "
                f"for the same K; got shapes {tuple(self.client_groups.shape)}, "
                f"{tuple(self.client_matrix.shape)} and {tuple(self.server_matrix.shape)}. "
                "Build it with fedavg_aggregation, clustered_aggregation or kld_clustered_aggregation."
            )
        _check_groups(self.client_groups, num_clients, self.client_matrix.shape[0])

    @property
    def num_clients(self) -> int:
        return self.client_groups.numel()

    @property
    def num_groups(self) -> int:
        return self.client_matrix.shape[0]

    def as_dict(self) -> dict[str, list]:
        """Plain lists, for logging as a JSON artifact (the KLD scores when there are any)."""
        record = {
            "client_groups": self.client_groups.tolist(),
            "client_matrix": self.client_matrix.tolist(),
            "server_matrix": self.server_matrix.tolist(),
        }
        if self.cluster_scores is not None and self.global_scores is not None:
            record["cluster_scores"] = self.cluster_scores.tolist()
            record["global_scores"] = self.global_scores.tolist()
        return record


def fedavg_aggregation(sizes: Tensor) -> AggregationWeights:
    """FedAvg: one group of all clients with size weights; the server's blocks use the same row."""
    sizes = _check_sizes(sizes)
    fedavg = fedavg_weights(sizes)
    everyone = torch.zeros(sizes.numel(), dtype=torch.long, device=sizes.device)
    return AggregationWeights(everyone, fedavg, fedavg.clone())


def clustered_aggregation(sizes: Tensor, clusters: Tensor) -> AggregationWeights:
    """Size weights inside each cluster (``clusters``: (K,) ids 0..G-1); the server uses FedAvg over all."""
    sizes = _check_sizes(sizes)
    clusters = _check_groups(clusters, sizes.numel(), None)[0].to(sizes.device)
    return AggregationWeights(clusters, size_weights(sizes, clusters), fedavg_weights(sizes))


def kld_clustered_aggregation(sizes: Tensor, features: Tensor, clusters: Tensor, alpha: float = 1.0) -> AggregationWeights:
    """KLD weights n exp(-alpha s) inside each cluster, s the KLD scores within the cluster; the server
    uses the same rule with the scores against all clients. ``features``: the batch-mean server-side D
    activations of every client, (K, C, H, W) or (K, C, L), in the order of ``sizes``."""
    sizes = _check_sizes(sizes)
    num_clients = sizes.numel()
    clusters = _check_groups(clusters, num_clients, None)[0].to(sizes.device)
    if not torch.is_tensor(features) or features.dim() == 0 or features.shape[0] != num_clients:
        shape = tuple(features.shape) if torch.is_tensor(features) else type(features).__name__
        raise WeightsError(
            f"features must hold one batch-mean activation per client on its first axis ({num_clients} clients, "
            f"in the order of sizes); got {shape}."
        )
    cluster_scores = feature_kld_scores(features, clusters)
    everyone = torch.zeros_like(clusters)
    global_scores = feature_kld_scores(features, everyone)
    return AggregationWeights(
        clusters,
        group_weights(sizes, cluster_scores, clusters, alpha),
        group_weights(sizes, global_scores, everyone, alpha),
        cluster_scores,
        global_scores,
    )


def _check_sizes(sizes: Tensor) -> Tensor:
    """Client dataset sizes as a positive float64 (K,) tensor."""
    sizes = torch.as_tensor(sizes)
    if sizes.dim() != 1 or sizes.numel() == 0 or sizes.is_complex() or sizes.dtype == torch.bool:
        raise WeightsError(
            f"sizes must be a non-empty 1-D tensor of client dataset sizes; got shape {tuple(sizes.shape)} "
            f"and dtype {sizes.dtype}. Pass one number of training samples per client."
        )
    sizes = sizes.to(torch.float64)
    if not bool(torch.isfinite(sizes).all()) or bool((sizes <= 0).any()):
        raise WeightsError(
            f"Every client dataset size must be a finite number > 0; got {sizes.tolist()}. A client "
            "without data cannot be weighted: leave it out of the federation."
        )
    return sizes


def _check_scores(scores: Tensor, num_clients: int) -> Tensor:
    """KLD scores as a finite float64 (K,) tensor."""
    scores = torch.as_tensor(scores)
    if scores.shape != (num_clients,) or scores.is_complex() or scores.dtype == torch.bool:
        raise WeightsError(
            f"scores must be a 1-D tensor with one score per client ({num_clients} clients); got shape "
            f"{tuple(scores.shape)} and dtype {scores.dtype}. Pass kld scores in the order of sizes."
        )
    scores = scores.to(torch.float64)
    if not bool(torch.isfinite(scores).all()):
        raise WeightsError(
            "Every KLD score must be finite; got non-finite values. Compute them with feature_kld_scores, "
            "which works in log space."
        )
    return scores


def _check_groups(groups: Tensor, num_clients: int, num_groups: int | None) -> tuple[Tensor, int]:
    """Group ids as a long (K,) tensor in 0..G-1 with no empty group, and G."""
    groups = torch.as_tensor(groups)
    if not is_group_ids(groups, num_clients):
        raise WeightsError(
            f"groups must be a 1-D integer tensor with one group id per client ({num_clients} clients); "
            f"got shape {tuple(groups.shape)} and dtype {groups.dtype}. Pass the cluster labels of "
            "cluster_clients."
        )
    groups = groups.to(torch.long)
    row_count = num_groups if num_groups is not None else int(groups.max()) + 1
    if bool((groups < 0).any()) or bool((groups >= row_count).any()):
        raise WeightsError(
            f"group ids must lie in 0..{row_count - 1} ({row_count} groups); got {groups.tolist()}. "
            "Relabel the groups to consecutive ids from 0 (cluster_clients returns them that way) or "
            "raise num_groups."
        )
    empty = (torch.bincount(groups, minlength=row_count) == 0).nonzero().flatten().tolist()
    if empty:
        raise WeightsError(
            f"groups {empty} of 0..{row_count - 1} have no client, so their weights rows would be empty. "
            "Relabel the groups to consecutive ids from 0 (cluster_clients returns them that way) or "
            "lower num_groups."
        )
    return groups, row_count
