"""Lightning callbacks of a HuSCF-GAN run. The round callbacks share one base (`RoundCallback`) and act at
round ends in the order of `ROUND_STAGES`: clustering, aggregation, exchange accounting, evaluation and
sample grids, then anything else (pruning, your own)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import lightning.pytorch as pl

from huscf_lightning.callbacks.aggregation import FederatedAggregation
from huscf_lightning.callbacks.clustering import ClusteringRound
from huscf_lightning.callbacks.evaluation import GenerationEvaluation, UtilityEvaluation
from huscf_lightning.callbacks.exchange import CutLayerExchange
from huscf_lightning.callbacks.round import ROUND_STAGES, RoundCallback, ordered_round_callbacks, run_round_end
from huscf_lightning.callbacks.run_record import RunRecord
from huscf_lightning.callbacks.samples import SampleGrids

__all__ = [
    "ROUND_STAGES",
    "ClusteringRound",
    "CutLayerExchange",
    "FederatedAggregation",
    "GenerationEvaluation",
    "RoundCallback",
    "RunRecord",
    "SampleGrids",
    "UtilityEvaluation",
    "default_callbacks",
    "ordered_round_callbacks",
    "run_round_end",
]


def default_callbacks(module: pl.LightningModule, existing: Sequence[pl.Callback] = ()) -> list[pl.Callback]:
    """The callbacks a HuSCFGAN installs for its federation strategy and evaluation settings.

    An instance of one of these types that the user already gave the Trainer (``existing``) is used in
    place of the one the settings would build (Lightning lets the module's list replace the trainer's
    callbacks of the same type). Their order at a round end is their stage's, whatever the list's order.
    """
    strategy, ev = module.strategy, module.evaluation
    fed = strategy.spec

    def pick(kind: type[pl.Callback], build: Callable[[], pl.Callback]) -> pl.Callback:
        return next((c for c in existing if isinstance(c, kind)), None) or build()

    callbacks: list[pl.Callback] = [pick(RunRecord, RunRecord), pick(CutLayerExchange, CutLayerExchange)]
    if strategy.needs_clusters:
        callbacks.append(
            pick(ClusteringRound, lambda: ClusteringRound(k=fed.k, k_range=tuple(fed.k_range), seed=module.seed))
        )
    callbacks.append(pick(FederatedAggregation, FederatedAggregation))
    for kind, wanted, build in (
        (GenerationEvaluation, bool(ev.metrics), lambda: GenerationEvaluation(ev, seed=module.seed)),
        (SampleGrids, ev.sample_grids, lambda: SampleGrids(seed=module.seed)),
        (UtilityEvaluation, ev.utility_samples > 0, lambda: UtilityEvaluation(ev, seed=module.seed)),
    ):
        given = any(isinstance(c, kind) for c in existing)
        if wanted or given:
            callbacks.append(pick(kind, build))
    return callbacks
