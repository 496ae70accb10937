"""Lightning callbacks of a HuSCF-GAN run, in the order they must act at a round end:
exchange accounting, clustering, aggregation, evaluation, sample grids."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import lightning.pytorch as pl

from huscf_lightning.callbacks.aggregation import FederatedAggregation
from huscf_lightning.callbacks.clustering import ClusteringRound
from huscf_lightning.callbacks.evaluation import GenerationEvaluation, UtilityEvaluation
from huscf_lightning.callbacks.exchange import CutLayerExchange
from huscf_lightning.callbacks.run_record import RunRecord
from huscf_lightning.callbacks.samples import SampleGrids

__all__ = [
    "ClusteringRound",
    "CutLayerExchange",
    "FederatedAggregation",
    "GenerationEvaluation",
    "RunRecord",
    "SampleGrids",
    "UtilityEvaluation",
    "default_callbacks",
]


def default_callbacks(module: pl.LightningModule, existing: Sequence[pl.Callback] = ()) -> list[pl.Callback]:
    """The callbacks a HuSCFGAN installs for its federation and evaluation settings, in round-end order.

    An instance of one of these types that the user already gave the Trainer (``existing``) is used
    in place of the one the settings would build, at its position in this order (Lightning lets
    the module's list replace the trainer's callbacks of the same type, so returning the user's own
    instance keeps it and puts it in the right order).
    """
    fed, ev = module.federation, module.evaluation

    def pick(kind: type[pl.Callback], build: Callable[[], pl.Callback]) -> pl.Callback:
        return next((c for c in existing if isinstance(c, kind)), None) or build()

    callbacks: list[pl.Callback] = [pick(RunRecord, RunRecord), pick(CutLayerExchange, CutLayerExchange)]
    clustering = None
    if fed.mode != "fedavg":
        clustering = pick(ClusteringRound, lambda: ClusteringRound(k=fed.k, k_range=tuple(fed.k_range), seed=module.seed))
        callbacks.append(clustering)
    callbacks.append(
        pick(FederatedAggregation, lambda: FederatedAggregation(fed.mode, fed.alpha, fed.warmup_rounds, clustering))
    )
    for kind, wanted, build in (
        (
            GenerationEvaluation,
            bool(ev.metrics),
            lambda: GenerationEvaluation(
                every_n_rounds=ev.every_n_rounds,
                num_samples=ev.num_samples,
                metrics=ev.metrics,
                cache_dir=ev.classifier_cache,
                inception_weights=ev.inception_weights,
                seed=module.seed,
            ),
        ),
        (SampleGrids, ev.sample_grids, lambda: SampleGrids(seed=module.seed)),
        (
            UtilityEvaluation,
            ev.utility_samples > 0,
            lambda: UtilityEvaluation(num_samples=ev.utility_samples, epochs=ev.utility_epochs, seed=module.seed),
        ),
    ):
        given = any(isinstance(c, kind) for c in existing)
        if wanted or given:
            callbacks.append(pick(kind, build))
    return callbacks
