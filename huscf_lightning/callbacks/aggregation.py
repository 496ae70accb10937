"""FederatedAggregation: average every block across clients at every round end, as the strategy says."""

from __future__ import annotations

import lightning.pytorch as pl

from huscf_lightning.callbacks.round import RoundCallback
from huscf_lightning.collectives import world_size
from huscf_lightning.engine.tracking import log_json, log_round_metrics
from huscf_lightning.federation.rounds import RoundState
from huscf_lightning.federation.states import aggregate_network
from huscf_lightning.privacy.masking import MASKED_VALUE_BYTES, MaskSession, client_secret
from huscf_lightning.split.wire import DOWN, UP


class FederatedAggregation(RoundCallback):
    """Clients load their group's weighted average, the server's shared blocks the global one.

    The weights of each network come from the module's federation strategy (``pl_module.strategy``;
    None leaves that network as it is) and are written into the round (``round.weights``). Every client
    whose copies are averaged sends them and receives the average: the wire counts those bytes
    (cut ``G.weights`` / ``D.weights``). With partial participation only the round's participants are
    averaged, and the clients' models are then written to the networks' stores (`SplitNetwork.park`). With
    ``model.privacy.masked_aggregation`` the copies are averaged under masks (`privacy.masking`) and each floating
    value crosses as an int64.
    """

    stage = "aggregate"

    def on_round_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, round: RoundState) -> None:
        strategy = pl_module.strategy
        per_network = strategy.round_weights(round)
        # a sharded run: this rank holds a share of the round's clients (`columns` of the weights, which are over
        # all of them); its store learns every client's model
        columns = pl_module.local_positions if world_size() > 1 else None
        masked = pl_module.privacy.masked_aggregation
        for name, net in (("G", pl_module.G), ("D", pl_module.D)):
            weights = per_network.get(name)
            if weights is None:
                if not net.all_resident:
                    net.park(None, None, round.clients)
                continue
            masks = MaskSession(client_secret(pl_module.seed), round.index, name) if masked else None
            group_averages = aggregate_network(net, weights, columns, masks)
            if not net.all_resident:
                net.park(weights.client_groups, group_averages, round.clients)
            sizes = net.client_state_bytes(MASKED_VALUE_BYTES if masked else None)
            for client, nbytes in zip(net.resident, sizes):
                if nbytes:
                    pl_module.wire.account(client, f"{name}.weights", UP, nbytes, "weights")
                    pl_module.wire.account(client, f"{name}.weights", DOWN, nbytes, "weights")
        round.weights = per_network
        r = round.index
        record: dict = {"round": r, "mode": strategy.round_mode(r), "participants": list(round.clients)}
        weights = per_network.get("G") or per_network.get("D")
        if weights is None:
            record["aggregated"] = []
        else:
            groups = weights.client_groups.tolist()
            record["aggregated"] = [name for name, w in per_network.items() if w is not None]
            record["groups"] = groups
            record["client_weights"] = [float(weights.client_matrix[g, i]) for i, g in enumerate(groups)]
            record["server_weights"] = weights.server_matrix[0].tolist()
            if weights.cluster_scores is not None:  # KLD weights: the scores behind them, named as in as_dict
                record["cluster_scores"] = weights.cluster_scores.tolist()
                record["global_scores"] = weights.global_scores.tolist()
        self.history.append(record)
        log_round_metrics(trainer, {"federation/participants": len(round.clients)}, r)
        log_json(trainer, record, f"round_{r:03d}.json", "weights")
