"""Lightning callbacks of a HuSCF-GAN run, in the order they must act at a round end:
exchange accounting, clustering, aggregation, evaluation, sample grids."""

from __future__ import annotations

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


def default_callbacks(module: pl.LightningModule) -> list[pl.Callback]:
    """The callbacks a HuSCFGAN installs for its federation and evaluation settings."""
    fed, ev = module.federation, module.evaluation
    clustering = None
    if fed.mode != "fedavg":
        clustering = ClusteringRound(k=fed.k, k_range=tuple(fed.k_range), seed=module.seed)
    callbacks: list[pl.Callback] = [RunRecord(), CutLayerExchange()]
    if clustering is not None:
        callbacks.append(clustering)
    callbacks.append(FederatedAggregation(fed.mode, fed.alpha, fed.warmup_rounds, clustering))
    if ev.metrics:
        callbacks.append(
            GenerationEvaluation(
                every_n_rounds=ev.every_n_rounds,
                num_samples=ev.num_samples,
                metrics=ev.metrics,
                cache_dir=ev.classifier_cache,
                inception_weights=ev.inception_weights,
                seed=module.seed,
            )
        )
    if ev.sample_grids:
        callbacks.append(SampleGrids(seed=module.seed))
    if ev.utility_samples > 0:
        callbacks.append(UtilityEvaluation(num_samples=ev.utility_samples, epochs=ev.utility_epochs, seed=module.seed))
    return callbacks
