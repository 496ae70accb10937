"""ClusteringRound: k-means over the clients' server-side D activations at every round end."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import lightning.pytorch as pl
import torch
from torch import Tensor

from huscf_lightning.config import ConfigError
from huscf_lightning.federation.clustering import adjusted_rand, cluster_clients
from huscf_lightning.tracking import log_json, log_round_metrics

log = logging.getLogger(__name__)


@dataclass
class RoundClusters:
    """One round's clustering: cluster of each client and the (K, C, L) activations the KLD needs."""

    round: int
    labels: Tensor
    features: Tensor


class ClusteringRound(pl.Callback):
    """Clusters clients by the batch-mean activation of their real batch at the first common server D block.

    ``k``: an int, ``"auto"`` (silhouette over ``k_range``) or None (the number of domains).
    The result waits in ``latest`` until the aggregation callback takes it.
    """

    def __init__(self, k: int | str | None = None, k_range: tuple[int, int] = (2, 8), seed: int = 0) -> None:
        self.k = k
        self.k_range = tuple(k_range)
        self.seed = seed
        self.latest: RoundClusters | None = None
        self.history: list[dict] = []

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if isinstance(self.k, int) and not 1 <= self.k <= pl_module.num_clients:
            raise ConfigError(
                f"federation.k = {self.k} clusters is impossible with {pl_module.num_clients} clients; choose k "
                f"between 1 and {pl_module.num_clients}, 'auto', or null for the number of domains."
            )
        pl_module.request_round_features(True)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not pl_module.is_round_end(trainer):
            return
        features = pl_module.pop_round_features()
        k = len(pl_module.domain_names) if self.k is None else self.k
        result = cluster_clients(features.flatten(1).cpu(), k, seed=self.seed, k_range=self.k_range)
        domain_ids = [pl_module.domain_names.index(d) for d in pl_module.client_domains]
        ari = adjusted_rand(result.labels, torch.as_tensor(domain_ids))
        r = pl_module.current_round
        # KLD needs (K, C, L): channels by positions; a flat (K, D) activation is one channel of D positions.
        per_channel = features.flatten(2) if features.dim() > 2 else features.unsqueeze(1)
        self.latest = RoundClusters(r, result.labels, per_channel)
        record = {"round": r, "k": result.k, "ari": ari, "clusters": result.labels.tolist(), "domains": pl_module.client_domains}
        if result.silhouette is not None:
            record["silhouette"] = result.silhouette
        if result.silhouette_by_k:  # k: auto, the score of every k it tried
            record["silhouette_by_k"] = {str(k): v for k, v in result.silhouette_by_k.items()}
        self.history.append(record)
        log.info("round %d: k=%d clusters %s (ARI %.3f against the domains)", r, result.k, record["clusters"], ari)
        log_round_metrics(trainer, {"cluster/ari": ari, "cluster/k": result.k}, r)
        log_json(trainer, record, f"round_{r:03d}.json", "clusters")

    def take(self) -> RoundClusters:
        """The latest clustering, handed over once (features are not kept past aggregation)."""
        if self.latest is None:
            raise RuntimeError("ClusteringRound has no result for this round; it must run before FederatedAggregation.")
        latest, self.latest = self.latest, None
        return latest

    def state_dict(self) -> dict:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = list(state_dict["history"])
