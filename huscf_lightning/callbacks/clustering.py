"""ClusteringRound: k-means over the clients' server-side D activations at every round end."""

from __future__ import annotations

import logging

import lightning.pytorch as pl
import torch

from huscf_lightning.callbacks.round import RoundCallback
from huscf_lightning.engine.tracking import log_json, log_round_metrics
from huscf_lightning.federation.clustering import adjusted_rand, cluster_clients
from huscf_lightning.federation.rounds import RoundState

log = logging.getLogger(__name__)


class ClusteringRound(RoundCallback):
    """Clusters clients by the batch-mean activation of their real batch at the first common server D block.

    ``k``: an int, ``"auto"`` (silhouette over ``k_range``) or None (the number of domains). Writes the
    clusters into the round (``round.clusters``) for the aggregation, and logs them with their ARI
    against the domains.
    """

    stage = "cluster"

    def __init__(self, k: int | str | None = None, k_range: tuple[int, int] = (2, 8), seed: int = 0) -> None:
        super().__init__()
        self.k = k
        self.k_range = tuple(k_range)
        self.seed = seed

    def on_round_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, round: RoundState) -> None:
        if round.features is None:
            raise RuntimeError("ClusteringRound needs the round's features; the federation strategy asks for none.")
        k = len(round.domain_names) if self.k is None else self.k
        result = cluster_clients(round.features.flatten(1).cpu(), k, seed=self.seed, k_range=self.k_range)
        domain_ids = [round.domain_names.index(d) for d in round.client_domains]
        ari = adjusted_rand(result.labels, torch.as_tensor(domain_ids))
        round.clusters = result.labels
        r = round.index
        record = {"round": r, "k": result.k, "ari": ari, "clusters": result.labels.tolist(), "domains": round.client_domains}
        if result.silhouette is not None:
            record["silhouette"] = result.silhouette
        if result.silhouette_by_k:  # k: auto, the score of every k it tried
            record["silhouette_by_k"] = {str(k): v for k, v in result.silhouette_by_k.items()}
        self.history.append(record)
        log.info("round %d: k=%d clusters %s (ARI %.3f against the domains)", r, result.k, record["clusters"], ari)
        log_round_metrics(trainer, {"cluster/ari": ari, "cluster/k": result.k}, r)
        log_json(trainer, record, f"round_{r:03d}.json", "clusters")
