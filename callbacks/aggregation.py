"""FederatedAggregation: average every block across clients at every round end, as the strategy says."""

from __future__ import annotations

import lightning.pytorch as pl

from huscf_lightning.callbacks.round import RoundCallback
from huscf_lightning.federation.states import aggregate_network
from huscf_lightning.rounds import RoundState
from huscf_lightning.tracking import log_json


class FederatedAggregation(RoundCallback):
    """Clients load their group's weighted average, the server's shared blocks the global one; the weights
    come from the module's federation strategy (``pl_module.strategy``) and are written into the round."""

    stage = "aggregate"

    def on_round_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, round: RoundState) -> None:
        strategy = pl_module.strategy
        weights = strategy.weights(round)
        aggregate_network(pl_module.G, weights)
        aggregate_network(pl_module.D, weights)
        round.weights = weights
        r = round.index
        groups = weights.client_groups.tolist()
        record = {
            "round": r,
            "mode": strategy.round_mode(r),
            "groups": groups,
            "client_weights": [float(weights.client_matrix[g, i]) for i, g in enumerate(groups)],
            "server_weights": weights.server_matrix[0].tolist(),
        }
        if weights.cluster_scores is not None:  # KLD weights: the scores behind them, named as in as_dict
            record["cluster_scores"] = weights.cluster_scores.tolist()
            record["global_scores"] = weights.global_scores.tolist()
        self.history.append(record)
        log_json(trainer, record, f"round_{r:03d}.json", "weights")
