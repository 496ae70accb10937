"""FederatedAggregation: average every block across clients at every round end."""

from __future__ import annotations

import lightning.pytorch as pl
import torch

from huscf_lightning.callbacks.clustering import ClusteringRound
from huscf_lightning.config import ConfigError
from huscf_lightning.federation.states import aggregate_network
from huscf_lightning.federation.weights import AggregationWeights, build_weights
from huscf_lightning.tracking import log_json


class FederatedAggregation(pl.Callback):
    """Clients load their cluster's weighted average; the server's shared blocks load the global one.

    ``mode``: ``fedavg``, ``clustered`` or ``kld_clustered`` (needs a `ClusteringRound` before it).
    The first ``warmup_rounds`` rounds always use plain FedAvg.
    """

    def __init__(
        self,
        mode: str = "kld_clustered",
        alpha: float = 1.0,
        warmup_rounds: int = 2,
        clustering: ClusteringRound | None = None,
    ) -> None:
        if mode != "fedavg" and clustering is None:
            raise ConfigError(f"Aggregation mode {mode!r} needs a ClusteringRound callback; pass clustering=... or use mode='fedavg'.")
        self.mode = mode
        self.alpha = alpha
        self.warmup_rounds = warmup_rounds
        self.clustering = clustering
        self.history: list[dict] = []

    def weights_for_round(self, pl_module: pl.LightningModule, round_index: int) -> AggregationWeights:
        sizes = torch.as_tensor(pl_module.client_sizes, dtype=torch.float64)
        clusters = self.clustering.take() if self.clustering is not None else None
        if self.mode == "fedavg" or round_index <= self.warmup_rounds:
            return build_weights("fedavg", sizes)
        return build_weights(self.mode, sizes, features=clusters.features.double(), clusters=clusters.labels, alpha=self.alpha)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not pl_module.is_round_end(trainer):
            return
        r = pl_module.current_round
        weights = self.weights_for_round(pl_module, r)
        aggregate_network(pl_module.G, weights)
        aggregate_network(pl_module.D, weights)
        groups = weights.client_groups.tolist()
        record = {
            "round": r,
            "mode": "fedavg" if r <= self.warmup_rounds else self.mode,
            "groups": groups,
            "client_weights": [float(weights.client_matrix[g, i]) for i, g in enumerate(groups)],
            "server_weights": weights.server_matrix[0].tolist(),
        }
        if weights.cluster_scores is not None:  # kld_clustered: the scores behind the weights, named as in as_dict
            record["cluster_scores"] = weights.cluster_scores.tolist()
            record["global_scores"] = weights.global_scores.tolist()
        self.history.append(record)
        log_json(trainer, record, f"round_{r:03d}.json", "weights")

    def state_dict(self) -> dict:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = list(state_dict["history"])
