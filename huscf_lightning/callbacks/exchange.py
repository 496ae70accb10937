"""CutLayerExchange: what crossed the cuts each round, in bytes, logged per round."""

from __future__ import annotations

import lightning.pytorch as pl

from huscf_lightning.callbacks.round import RoundCallback
from huscf_lightning.engine.tracking import log_json, log_round_metrics
from huscf_lightning.federation.rounds import RoundState
from huscf_lightning.split.wire import DOWN, UP


class CutLayerExchange(RoundCallback):
    """Logs the wire's byte counts at every round end (totals, per cut and per client), then resets them."""

    stage = "exchange"

    def on_round_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, round: RoundState) -> None:
        wire, r = pl_module.wire, round.index
        wire.sum_over_ranks()  # a sharded run: each rank counted its own clients
        metrics = {f"wire/bytes_{UP}": wire.total(UP), f"wire/bytes_{DOWN}": wire.total(DOWN)}
        for cut in sorted({key[1] for key in wire.bytes}):
            for direction in (UP, DOWN):
                metrics[f"wire/{cut}/{direction}"] = wire.total(direction, cut=cut)
        log_round_metrics(trainer, metrics, r)
        record = {"round": r, **metrics, "clients": wire.per_client(pl_module.num_clients)}  # every client, a non-participant with 0
        self.history.append(record)
        log_json(trainer, record, f"round_{r:03d}.json", "exchange")
        wire.reset()
